"""Samples of a fixed checkpoint for every sampler, against recorded ones: the guard of refactorings.

``tests/data/fixed_checkpoint`` is a tiny UNet (44,969 parameters, cosine table, v-prediction, x0 clipped
to [-1, 1]) trained for 60 steps on scikit-learn's digits and frozen.  Every sampler draws 3 samples from it
(seed 0) on the default grid and on its recommended setting for 10 NFE, and runs on the exact denoiser of
a 2-D Gaussian mixture in float64 from a fixed x_T.  The outputs and the counted NFE are recorded in
``tests/data/fixed_samples.npz``.

They were first recorded as SHA-256 hashes (bit for bit), which held on one machine but not across CPUs: the
network's float32 convolutions round differently with each oneDNN kernel (AVX2, AVX-512), and the float64
linear algebra of some samplers (unipc, the adaptive ODE) differs in the last bits.  So the samples are now
compared with tolerances far below any change of a sampler's arithmetic, noise stream, grid or options (which
moves samples by 1e-2 or more): the network's samples to ``ATOL_NET``, the oracle's float64 ones to
``ATOL_ORACLE``; the NFE exactly.  If a change is meant to alter samples, say so in its commit and record
them again with ``python tests/test_fixed_samples.py --record``.
"""
import sys
from pathlib import Path

import numpy as np

import pytest
import torch

import difflab as dl
from difflab.denoisers import GaussianMixtureDenoiser
from difflab.sampling import SAMPLERS, nfe_settings, time_grid

FIXED = Path(__file__).parent / "data" / "fixed_checkpoint"
STEPS = {"ddpm": 20, "ald": 2, "pc": 5, "heun": 6}   # and repaint: 8 steps x 10 passes (71 NFE)   # default: 8 steps

RECORDED = Path(__file__).parent / "data" / "fixed_samples.npz"
# float32 network; samples in [-1, 1].  Measured with ONEDNN_MAX_CPU_ISA=AVX2 against AVX-512 on one machine:
# at most 1.7e-6 apart for the fixed-step samplers, 1.6e-3 for the adaptive ODE solver's 116-NFE run (its step
# sizes follow the error estimate, which amplifies the rounding)
ATOL_NET = 1e-4
ATOL_ODE = 1e-2
ATOL_ORACLE = 1e-9      # float64 throughout


def _mixture():
    sch = dl.get_schedule("cosine", T=1000)
    means = torch.tensor([[-1.0, 0.0], [1.0, 0.5], [0.0, -1.0]], dtype=torch.float64)
    covs = torch.stack([torch.diag(torch.tensor(v, dtype=torch.float64)) for v in ([0.05, 0.1], [0.1, 0.02], [0.03, 0.03])])
    return GaussianMixtureDenoiser(sch, means, covs, torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64))


def run_all(name: str):
    den = dl.load(FIXED)
    a = dl.sample(den, n=3, sampler=name, steps=STEPS.get(name, 8), seed=0, progress=False)
    steps, opts = nfe_settings(name, 10)
    if name == "ode":   # one "step" of the default (leading) grid would start at t = 1/T
        opts = {"grid": "uniform", **opts}
    b = dl.sample(den, n=3, sampler=name, steps=steps, seed=0, progress=False, **opts)
    oracle = _mixture()
    g = torch.Generator().manual_seed(5)
    x_T = torch.randn(16, 2, generator=g, dtype=torch.float64)
    steps_o, opts_o = nfe_settings(name, 10)
    grid = opts_o.pop("grid", "trailing")
    ts = time_grid(oracle.schedule, steps_o, grid, sigma_max=opts_o.pop("sigma_max", None))
    c = SAMPLERS[name].fn(oracle, x_T, ts, generator=g, **opts_o)
    return {"default": a.x, "nfe10": b.x, "oracle": c}, {"default": a.nfe, "nfe10": b.nfe}


def _recorded() -> dict:
    with np.load(RECORDED) as f:
        return {k: f[k] for k in f.files}


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_samples_match_the_recorded_ones(name):
    rec = _recorded()
    assert f"{name}/oracle" in rec, f"no recorded samples for sampler {name!r}: run python {__file__} --record"
    out, nfe = run_all(name)
    for kind, x in out.items():
        atol = ATOL_ORACLE if kind == "oracle" else ATOL_ODE if name == "ode" else ATOL_NET
        np.testing.assert_allclose(x.detach().numpy(), rec[f"{name}/{kind}"], rtol=0, atol=atol,
                                   err_msg=f"{name}, {kind}")
    assert nfe == {k: int(rec[f"{name}/nfe_{k}"]) for k in nfe}


if __name__ == "__main__":
    import os
    torch.set_num_threads(min(2, os.cpu_count() or 1))   # as tests/conftest.py
    arrays = {}
    for n in sorted(SAMPLERS):
        out, nfe = run_all(n)
        arrays.update({f"{n}/{k}": v.detach().numpy() for k, v in out.items()})
        arrays.update({f"{n}/nfe_{k}": np.array(v) for k, v in nfe.items()})
        print(n, nfe)
    # --record: overwrite the recorded samples; --out PATH: write them elsewhere (to compare machines)
    target = RECORDED if "--record" in sys.argv else Path(sys.argv[sys.argv.index("--out") + 1]) if "--out" in sys.argv else None
    if target is not None:
        np.savez_compressed(target, **arrays)
        print(f"wrote {target}")
