"""Diffusion in an autoencoder's latent space, end to end through the CLI: train-autoencoder -> train
--latent -> sample (decoded) -> eval (decoded) -> export refused -> latent-figures; the checkpoint's
record of its autoencoder (missing or different: refused by name; moved together: found); old
checkpoints stay in data space; slerp and PCA against closed forms and scikit-learn."""
import json
import math
import shutil

import numpy as np
import pytest
import torch

import difflab as dl
from difflab.cli import main
from difflab.encoders.attached import decode_samples
from difflab.errors import DifflabError
from difflab.generators import load_generator
from difflab.latent_figures import pca, slerp
from difflab.train import load_checkpoint
from difflab.train.autoencoder import load_autoencoder

FIXED = __import__("pathlib").Path(__file__).parent / "data" / "fixed_checkpoint"
DATA = ["--data", "digits", "--index-range", "0:128"]


def _err(capsys, *args):
    code = main([str(a) for a in args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("difflab: error: "), err
    return err[0]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A classifier (3 steps), an autoencoder with its feature loss (f = 2, 8 steps) and a latent diffusion
    model (4 steps) on 128 8x8 digits, by the CLI."""
    from difflab.metrics import save_classifier, train_classifier
    root = tmp_path_factory.mktemp("latent")
    data = dl.load_dataset("digits", index_range="0:128")
    torch.manual_seed(0)
    save_classifier(train_classifier(data.x, data.labels, steps=3, batch_size=16, progress=False), root / "clf")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DIFFLAB_CACHE", str(root / "cache"))
        assert main(["train-autoencoder", *DATA, "--factor", "2", "--channels", "8,16", "--steps", "8",
                     "--feature-loss", str(root / "clf"), "--feature-weight", "0.5",
                     "--batch-size", "8", "--heldout-range", "128:160", "--sample-every", "0", "--no-progress",
                     "--out", str(root / "ae")]) == 0
        assert main(["train", *DATA, "--latent", str(root / "ae"), "--steps", "4", "--batch-size", "8",
                     "--channels", "8,16", "--sample-every", "0", "--no-progress", "--out", str(root / "ldm")]) == 0
    return root


def test_latent_checkpoint_records_its_autoencoder_and_samples_decode(runs, tmp_path, capsys):
    ae, ldm = runs / "ae", runs / "ldm"
    report = json.loads((ae / "report.json").read_text())
    assert report["n"] == 32 and math.isfinite(report["psnr"]) and 0 <= report["accuracy"] <= 1
    assert math.isfinite(report["fd_reconstructions"]) and report["classifier"] == str(runs / "clf")
    training = json.loads((ae / "run.json").read_text())["training"]
    assert training["feature_weight"] == 0.5 and training["features"]["classifier"] == str(runs / "clf")
    cfg = json.loads((load_checkpoint(ldm).path / "config.json").read_text())
    enc = load_autoencoder(ae)
    assert cfg["data_kind"] == "latents" and cfg["data_shape"] == [1, 4, 4] and cfg["clip_x0"] is None
    assert cfg["encoder"]["digest"] == enc.digest() and cfg["encoder"]["config"]["scale"] == enc.scale
    den = dl.load(ldm)
    assert den.encoder.digest() == enc.digest()
    z = dl.sample(den, n=6, sampler="ddim", steps=3, seed=2, progress=False).x
    assert z.shape == (6, 1, 4, 4)
    x = decode_samples(den, z)
    assert x.shape == (6, 1, 8, 8) and torch.equal(x, enc.decode(z))
    gen = load_generator(ldm, sampler="ddim", steps=3)          # what difflab compare loads
    assert gen.data_kind == "images" and gen.data_shape == (1, 8, 8)
    assert torch.equal(gen.sample(6, seed=2), x)
    assert main(["sample", str(ldm), "--steps", "3", "--n", "6", "--seed", "2", "--out", str(tmp_path / "s"),
                 "--trajectory", "--trajectory-points", "2", "--no-progress"]) == 0
    arr = np.load(tmp_path / "s" / "ddim_3_seed2.npz")["samples"]
    assert arr.shape == (6, 1, 8, 8) and arr.dtype == np.uint8
    assert np.array_equal(arr, dl.data.to_uint8(x))
    assert (tmp_path / "s" / "ddim_3_seed2_trajectory.png").exists()


def test_eval_scores_decoded_samples_and_export_refuses(runs, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DIFFLAB_CACHE", str(tmp_path / "cache"))
    assert main(["eval", "--checkpoint", str(runs / "ldm"), *DATA[:2], "--train-range", "0:128", "--ref-range",
                 "128:160", "--classifier", str(runs / "clf"), "--n", "20", "--steps", "2", "--min-samples", "10",
                 "--out", str(tmp_path / "ev.json"), "--no-progress"]) == 0
    ev = json.loads((tmp_path / "ev.json").read_text())
    assert ev["n"] == 20 and math.isfinite(ev["fd_samples"])
    err = _err(capsys, "export", runs / "ldm", "--diffusers", tmp_path / "dx")
    assert "latent space" in err and "cannot be exported" in err


def test_missing_or_different_autoencoder_is_refused_by_name_and_moved_runs_are_found(runs, tmp_path, capsys):
    shutil.copytree(runs / "ae", tmp_path / "ae")
    shutil.copytree(runs / "ldm", tmp_path / "ldm")
    ck = load_checkpoint(tmp_path / "ldm")
    cfg_path = ck.path / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["encoder"]["path"] = str(tmp_path / "elsewhere" / "ae")   # a moved pair: found through relpath
    cfg_path.write_text(json.dumps(cfg))
    assert dl.load(tmp_path / "ldm").encoder.folder == (tmp_path / "ldm" / cfg["encoder"]["relpath"])
    ae_ck = load_autoencoder(tmp_path / "ae").folder
    ae_cfg = json.loads((ae_ck / "config.json").read_text())
    (ae_ck / "config.json").write_text(json.dumps({**ae_cfg, "scale": ae_cfg["scale"] * 1.01}))   # a wrong scale
    with pytest.raises(DifflabError, match=r"the autoencoder at .*ae.* is not the one this model was trained with"):
        dl.load(tmp_path / "ldm")
    err = _err(capsys, "sample", tmp_path / "ldm", "--steps", "2", "--n", "2", "--out", tmp_path / "s", "--no-progress")
    assert "is not the one this model was trained with" in err
    shutil.rmtree(tmp_path / "ae")
    with pytest.raises(DifflabError, match=r"needs the autoencoder it was trained with, which is missing: .*elsewhere"):
        load_checkpoint(tmp_path / "ldm").denoiser()


def test_resuming_a_latent_run_with_another_autoencoder_is_refused(runs, tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFLAB_CACHE", str(tmp_path / "cache"))
    shutil.copytree(runs / "ldm", tmp_path / "ldm")
    data = dl.load_dataset("digits", index_range="0:128")
    den = load_checkpoint(tmp_path / "ldm").denoiser("model")
    with pytest.raises(DifflabError, match="was trained with encoder .* now given is in no encoder"):
        dl.train(den, data.__class__(torch.zeros(8, 1, 4, 4), name="pixels"), tmp_path / "ldm", steps=8,
                 resume=True, progress=False)


def test_old_checkpoints_have_no_encoder_and_stay_in_data_space():
    den = dl.load(FIXED)
    assert getattr(den, "encoder", None) is None and load_checkpoint(FIXED).encoder() is None
    z = torch.randn(2, 1, 8, 8)
    assert decode_samples(den, z) is z


def test_latent_figures_command_writes_its_figures(runs, tmp_path):
    assert main(["latent-figures", str(runs / "ae"), *DATA[:2], "--heldout-range", "128:160", "--diffusion",
                 str(runs / "ldm"), "--steps", "2", "--times", "0,0.5,1", "--out", str(tmp_path)]) == 0
    for name in ("interpolate_noise", "interpolate_images", "latent_pca", "forward_pixel_latent"):
        assert (tmp_path / f"{name}.png").stat().st_size > 5000, name


def test_slerp_keeps_the_norm_on_a_circle_and_meets_its_ends():
    """For orthonormal z0, z1 slerp is the rotation cos(lambda pi/2) z0 + sin(lambda pi/2) z1 (closed form);
    the linear path's midpoint has norm 1/sqrt(2)."""
    z0, z1 = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0])
    lam = torch.linspace(0, 1, 5)
    ref = torch.stack([torch.cos(lam * math.pi / 2), torch.sin(lam * math.pi / 2), torch.zeros(5)], 1)
    assert torch.allclose(slerp(z0, z1, lam), ref, atol=1e-6)
    a, b = torch.randn(2, 3, 3, generator=torch.Generator().manual_seed(0)).unbind(0)
    path = slerp(a, b, lam)
    assert path.shape == (5, 3, 3) and torch.allclose(path[0], a) and torch.allclose(path[-1], b, atol=1e-6)
    assert torch.allclose(slerp(a, a, lam), a.expand(5, 3, 3))


def test_pca_against_scikit_learn():
    sk = pytest.importorskip("sklearn.decomposition")
    x = torch.randn(200, 6, generator=torch.Generator().manual_seed(0)) * torch.tensor([5.0, 3, 1, 1, 0.5, 0.1])
    p, frac = pca(x)
    ref = sk.PCA(2).fit(x.double().numpy())
    assert np.allclose(frac.numpy(), ref.explained_variance_ratio_, rtol=1e-9)
    assert np.allclose(np.abs(p.numpy()), np.abs(ref.transform(x.double().numpy())), atol=1e-9)


def test_benchmark_runs_end_to_end_in_quick_mode(tmp_path, monkeypatch, capsys):
    """benchmarks/latent.py --quick: every phase (classifier, pixel and latent training at equal wall clock,
    reconstruction floor, timed sampling, evaluation) on 8x8 digits, and its summary."""
    from bench_support import load_script
    monkeypatch.setenv("DIFFLAB_CACHE", str(tmp_path / "cache"))
    bench = load_script("benchmarks/latent.py")
    assert bench.main(["--quick", "--factors", "4", "--work", str(tmp_path / "w"), "--no-progress"]) == 0
    s = json.loads((tmp_path / "w" / "summary.json").read_text())
    lat = s["phases"]["latent:4"]
    # the latent side's clock counts the autoencoder and the encoding (no upper bound: timing depends on load)
    assert lat["total_seconds"] == pytest.approx(lat["encode_and_ae_seconds"] + lat["seconds"])
    assert lat["encode_and_ae_seconds"] >= lat["ae_seconds"] and lat["total_seconds"] >= 60 * 0.15
    assert lat["ae_steps"] >= 1 and lat["steps"] >= 1
    assert s["phases"]["sample:latent_f4"]["nfe"] == 2 and set(s["targets"]) == {"4"}
    assert "FD of reconstructions (floor)" in capsys.readouterr().out
    assert s["figure"] == str(tmp_path / "w" / "samples.png") and (tmp_path / "w" / "samples.png").stat().st_size > 5000


def _summary(work, seed, px_fd, lat_fd, speed, **args):
    work.mkdir(parents=True)
    base = {"minutes": 20.0, "ae_minutes": 4.0, "n": 1000, "sampler": "ddim", "steps": 50, "classifier": "c",
            "data_dir": "d", "quick": False, "seed": seed, **args}
    s = {"args": base, "phases": {"eval:pixels": {"fd_samples": px_fd}, "eval:latent_f4": {"fd_samples": lat_fd}},
         "targets": {"4": {"speedup": speed, "fd_ratio": lat_fd / px_fd, "met": False}}}
    (work / "summary.json").write_text(json.dumps(s))
    return work


def test_pool_compares_mean_fds_over_seeds_and_refuses_runs_that_differ(tmp_path, capsys):
    """--pool: the target on the ratio of the mean FDs and the mean speed-up; runs that differ in anything but
    the seed, repeat a seed or are unfinished are refused by name."""
    from bench_support import load_script
    bench = load_script("benchmarks/latent.py")
    # one seed alone misses (1.30), the pool meets: (26 + 20 + 20) / (20 + 18 + 18) = 66 / 56 = 1.179
    w = [_summary(tmp_path / "s0", 0, 20.0, 26.0, 3.5), _summary(tmp_path / "s1", 1, 18.0, 20.0, 3.7),
         _summary(tmp_path / "s2", 2, 18.0, 20.0, 3.6)]
    assert bench.main(["--pool", ",".join(map(str, w)), "--work", str(tmp_path / "out")]) == 0
    p = json.loads((tmp_path / "out" / "pooled.json").read_text())["factors"]["4"]
    assert p["fd_ratio_of_means"] == pytest.approx(66 / 56) and p["met"]
    assert p["mean_speedup"] == pytest.approx(3.6) and p["pixel_fd"] == [20.0, 18.0, 18.0]
    assert "| 0 | 20.00 | 26.00 | 1.30 | 3.50x |" in capsys.readouterr().out
    assert not bench.pool(w[:1])["factors"]["4"]["met"]
    slow = _summary(tmp_path / "slow", 3, 18.0, 18.0, 2.0)
    assert not bench.pool([w[1], slow])["factors"]["4"]["met"]            # FD fine, mean speed-up 2.85 < 3
    (tmp_path / "link").symlink_to(tmp_path)                               # the same data through a link: one data set
    linked = _summary(tmp_path / "linked", 5, 18.0, 18.0, 3.6, data_dir=str(tmp_path / "link"))
    direct = _summary(tmp_path / "direct", 6, 18.0, 18.0, 3.6, data_dir=str(tmp_path))
    assert bench.pool([direct, linked])["factors"]["4"]["fd_ratio_of_means"] == pytest.approx(1.0)
    other = _summary(tmp_path / "other", 4, 18.0, 18.0, 3.6, ae_minutes=2.0)
    edge = _summary(tmp_path / "edge", 7, 10.0, 12.0, 3.0)                  # exactly on both limits: met
    assert bench.pool([edge])["factors"]["4"]["met"]
    for works, msg in (([w[0], other], "differs from"), ([w[0], w[0]], "repeat"),
                       ([w[0], tmp_path / "nothing"], "has no summary.json"), ([], "no work folders")):
        with pytest.raises(SystemExit, match=msg):
            bench.pool(works)
