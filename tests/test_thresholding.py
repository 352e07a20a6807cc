"""x0 thresholding at sampling time: Imagen's dynamic thresholding against a float64 NumPy recomputation, static
clipping, the wrapper's place after guidance, and its one-line errors."""
import math

import numpy as np
import pytest
import torch

import difflab as dl
from difflab.cli import main
from difflab.denoisers import GaussianMixtureDenoiser
from difflab.errors import DifflabError
from difflab.guidance import Autoguidance, ThresholdedDenoiser, dynamic_threshold, guided_denoiser


def _reference(x0: np.ndarray, p: float, s_max: float) -> np.ndarray:
    """Saharia et al. 2022, sec. 2.3, written out per sample in float64."""
    out = np.empty_like(x0)
    for i, x in enumerate(x0):
        s = min(max(1.0, np.quantile(np.abs(x), p)), s_max)      # NumPy's default: linear interpolation
        out[i] = np.clip(x, -s, s) / s
    return out


def _batch():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 1, 8, 8, generator=g, dtype=torch.float64)
    x[0] *= 0.2          # inside [-1, 1]: s = 1, left alone
    x[1] *= 3.0          # far outside: clipped at its quantile and rescaled
    return x


@pytest.mark.parametrize("p, s_max", [(0.995, math.inf), (0.9, math.inf), (0.995, 1.5), (0.5, math.inf)])
def test_dynamic_threshold_is_imagens_formula(p, s_max):
    x = _batch()
    got = dynamic_threshold(x, p, s_max)
    # float64 in, float64 out; torch.quantile and np.quantile interpolate alike: agreement to rounding
    np.testing.assert_allclose(got.numpy(), _reference(x.numpy(), p, s_max), rtol=0, atol=1e-12)
    assert got.abs().max() <= 1.0 + 1e-12
    torch.testing.assert_close(got[0], x[0], rtol=0, atol=0)       # already in range: untouched


def test_a_cap_of_one_is_static_clipping():
    x = _batch()
    torch.testing.assert_close(dynamic_threshold(x, 0.995, 1.0), x.clamp(-1, 1), rtol=0, atol=0)


def _denoisers():
    """Two exact denoisers of different Gaussians (same schedule): an autoguided pair whose extrapolation
    leaves [-1, 1] at large w."""
    sch = dl.get_schedule("cosine", T=1000)

    def gaussian(mean, var):
        den = GaussianMixtureDenoiser(sch, torch.full((1, 4), mean, dtype=torch.float64),
                                      (torch.eye(4, dtype=torch.float64) * var)[None], torch.ones(1, dtype=torch.float64))
        den.data_shape = (4,)
        return den
    return gaussian(0.9, 0.05), gaussian(0.2, 0.5)


def test_wrapper_thresholds_the_guided_estimate_and_passes_the_nfe_through():
    strong, weak = _denoisers()
    x = torch.randn(16, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    guided = Autoguidance(strong, weak, 4.0)
    raw = guided(x, 0.5)
    assert raw.abs().max() > 1.5                    # the extrapolation is out of the data range
    clipped = ThresholdedDenoiser(guided, clip=1.0)
    torch.testing.assert_close(clipped(x, 0.5), raw.clamp(-1, 1), rtol=0, atol=0)
    assert clipped.last_nfe == 2                      # the guided call's two evaluations are still counted
    dyn = guided_denoiser(strong, 4.0, autoguide=weak, threshold=0.9)
    assert isinstance(dyn, ThresholdedDenoiser) and isinstance(dyn.inner, Autoguidance)   # outermost
    torch.testing.assert_close(dyn(x, 0.5), dynamic_threshold(raw, 0.9), rtol=0, atol=0)
    out = dl.sample(dyn, n=8, sampler="ddim", steps=10, seed=0, progress=False)
    assert out.nfe == 20 and out.x.abs().max() <= 1.0 + 1e-6


@pytest.mark.parametrize("kw, msg", [({}, "either"), ({"clip": 1.0, "ratio": 0.9}, "either"),
                                     ({"clip": 0.0}, "clip value"), ({"ratio": 0.0}, "quantile"),
                                     ({"ratio": 1.5}, "quantile"), ({"ratio": 0.9, "max_value": 0.5}, "maximum"),
                                     ({"clip": 1.0, "max_value": 2.0}, "needs dynamic thresholding")])
def test_bad_settings_are_refused(kw, msg):
    strong, _ = _denoisers()
    with pytest.raises(DifflabError, match=msg):
        ThresholdedDenoiser(strong, **kw)


def test_cli_sample_thresholds_and_refuses_bad_values(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--data", "digits", "--index-range", "0:64", "--steps", "3", "--batch-size", "4",
                 "--channels", "8,16", "--no-progress", "--sample-every", "0", "--milestones", "none",
                 "--out", str(run)]) == 0
    for extra in (["--x0-threshold", "0.995"], ["--clip-x0", "1"], ["--x0-threshold", "0.9", "--x0-threshold-max", "2"]):
        assert main(["sample", str(run), "--steps", "4", "--n", "4", "--out", str(tmp_path / "s"), "--no-progress",
                     *extra]) == 0
    capsys.readouterr()
    for extra, msg in ((["--x0-threshold", "1.5"], "quantile must be in (0, 1]"),
                       (["--clip-x0", "-1"], "clip value must be > 0"),
                       (["--x0-threshold-max", "2"], "needs dynamic thresholding")):
        code = main(["sample", str(run), "--steps", "4", "--n", "4", "--out", str(tmp_path / "s"), "--no-progress",
                     *extra])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and err[0].startswith("difflab: error: ") and msg in err[0], err
