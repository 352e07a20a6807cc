import json

import pytest
import torch

import difflab as dl
from difflab.errors import DifflabError
from difflab.train import load_checkpoint


def _setup(tiny_unet_kwargs, seed=0):
    torch.manual_seed(seed)
    data = dl.load_dataset("digits", index_range="0:256")
    den = dl.Denoiser(dl.UNet(**tiny_unet_kwargs), dl.get_schedule("cosine", T=100), "eps", clip_x0=1.0)
    return data, den


def _weights(path):
    ck = load_checkpoint(path)
    return ck.step, ck.tensors("model.safetensors"), ck.tensors("ema.safetensors")


def test_save_load_gives_identical_samples(tmp_path, tiny_unet_kwargs):
    data, den = _setup(tiny_unet_kwargs)
    run = dl.train(den, data, tmp_path / "run", steps=5, batch_size=8, progress=False, sample_every=0, sample_n=4,
                   sample_steps=3)
    a = dl.sample(run.ema, n=4, sampler="ddpm", steps=10, seed=1, progress=False).x
    for path in [tmp_path / "run", run.checkpoint, run.checkpoint / "ema.safetensors"]:
        b = dl.sample(dl.load(path), n=4, sampler="ddpm", steps=10, seed=1, progress=False).x
        assert torch.equal(a, b)
    cfg = json.loads((run.checkpoint / "config.json").read_text())
    assert cfg["format_version"] == 1 and cfg["step"] == 5 and cfg["data_shape"] == [1, 8, 8]
    assert cfg["schedule"]["name"] == "discrete" and cfg["prediction"] == "eps"


def test_resume_equals_an_uninterrupted_run(tmp_path, tiny_unet_kwargs):
    """3 steps, then a resume to 6, give the weights, EMA and per-step log of 6 uninterrupted steps."""
    kw = dict(batch_size=8, progress=False, sample_every=0, sample_n=4, sample_steps=2, warmup=3, log_every=1)
    data, den = _setup(tiny_unet_kwargs)
    dl.train(den, data, tmp_path / "straight", steps=6, **kw)
    data, den = _setup(tiny_unet_kwargs)
    dl.train(den, data, tmp_path / "split", steps=3, **kw)
    den2 = load_checkpoint(tmp_path / "split").denoiser("model").train()
    res = dl.train(den2, data, tmp_path / "split", steps=6, resume=True, **kw)
    assert res.step == 6
    s1, m1, e1 = _weights(tmp_path / "straight")
    s2, m2, e2 = _weights(tmp_path / "split")
    assert s1 == s2 == 6
    for k in m1:
        assert torch.allclose(m1[k], m2[k], atol=1e-6), k
        assert torch.allclose(e1[k], e2[k], atol=1e-6), k
    log = lambda run: [json.loads(line) for line in (tmp_path / run / "log.jsonl").read_text().splitlines()]  # noqa: E731
    straight, split = log("straight"), log("split")
    assert [r["step"] for r in split] == [r["step"] for r in straight] == [1, 2, 3, 4, 5, 6]
    for a, b in zip(straight, split):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-6) and a["lr"] == b["lr"], (a, b)


def test_truncated_and_foreign_checkpoints_are_refused(tmp_path, tiny_unet_kwargs):
    data, den = _setup(tiny_unet_kwargs)
    run = dl.train(den, data, tmp_path / "run", steps=2, batch_size=4, progress=False, sample_every=0, sample_n=2,
                   sample_steps=2)
    f = run.checkpoint / "ema.safetensors"
    raw = f.read_bytes()
    f.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DifflabError, match="corrupt or truncated"):
        dl.load(tmp_path / "run")
    cfg_path = run.checkpoint / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg_path.write_text(json.dumps({**cfg, "format_version": 99}))
    with pytest.raises(DifflabError, match="format version 99; this difflab reads version 1"):
        dl.load(tmp_path / "run")
    cfg_path.write_text(cfg_path.read_text()[:40])
    with pytest.raises(DifflabError, match="config .* is corrupt"):
        dl.load(tmp_path / "run")
    with pytest.raises(DifflabError, match="checkpoint not found"):
        dl.load(tmp_path / "nope")


def test_a_crash_mid_write_keeps_the_previous_checkpoint(tmp_path, tiny_unet_kwargs, monkeypatch):
    data, den = _setup(tiny_unet_kwargs)
    run = dl.train(den, data, tmp_path / "run", steps=2, batch_size=4, progress=False, sample_every=0,
                   sample_n=2, sample_steps=2)
    from difflab.train import checkpoint as C

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr("safetensors.torch.save_file", boom)
    with pytest.raises(OSError):
        C.save_checkpoint(tmp_path / "run", run.ema, (1, 8, 8), step=3)
    ck = load_checkpoint(tmp_path / "run")
    assert ck.step == 2 and ck.path == run.checkpoint
    dl.load(tmp_path / "run")  # still loads and verifies
