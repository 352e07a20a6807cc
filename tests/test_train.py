import json

import torch

import difflab as dl


def _den(seed=0):
    torch.manual_seed(seed)
    net = dl.UNet(in_channels=1, channels=(8, 16), layers_per_block=1, attention_levels=(1,), groups=4)
    return dl.Denoiser(net, dl.get_schedule("cosine", T=1000), "v", clip_x0=1.0)


def test_bf16_autocast_runs_the_network_in_bf16_and_trains(tmp_path):
    """With bf16 the network's convolutions compute in bfloat16 (a forward hook sees bf16 outputs, float32
    without it); the loss then agrees with the float32 loss of the same weights and batch to bf16 precision
    (8 mantissa bits: 2%), and 60 steps lower it as float32 training does."""
    from difflab.losses import denoising_loss
    data = dl.load_dataset("digits", index_range="0:256")
    dtypes = []
    den = _den()
    den.net.stem.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    g = torch.Generator().manual_seed(0)
    x0, t, eps = data.x[:32], den.schedule.sample_t(32, generator=g), torch.randn(32, 1, 8, 8, generator=g)
    with torch.no_grad():
        full = denoising_loss(den, x0, t, eps).mean()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            half = denoising_loss(den, x0, t, eps).mean()
    assert dtypes == [torch.float32, torch.bfloat16]
    assert abs(float(half) - float(full)) < 0.02 * float(full), (float(half), float(full))
    logs, seen = {}, {}
    for bf16 in (False, True):
        trained = _den()
        seen[bf16] = set()
        trained.net.stem.register_forward_hook(lambda m, i, o, bf16=bf16: seen[bf16].add(o.dtype) if m.training else None)
        dl.train(trained, data, tmp_path / str(bf16), steps=60, batch_size=16, bf16=bf16, progress=False,
                 sample_every=0, sample_n=2, sample_steps=2, log_every=20)
        logs[bf16] = [json.loads(line)["loss"] for line in (tmp_path / str(bf16) / "log.jsonl").read_text().splitlines()]
    assert seen == {False: {torch.float32}, True: {torch.bfloat16}}   # the trainer's steps ran in bf16
    assert logs[True][-1] < 0.8 * logs[True][0] and logs[False][-1] < 0.8 * logs[False][0], logs
    assert abs(logs[True][-1] - logs[False][-1]) < 0.15 * logs[False][-1], logs


def test_minutes_budget_and_log_and_grids(tmp_path):
    data = dl.load_dataset("digits", index_range="0:64")
    run = dl.train(_den(), data, tmp_path / "r", minutes=0.03, batch_size=8, progress=False, sample_every=1,
                   sample_n=4, sample_steps=2, log_every=1)
    assert 1.8 - 1e-6 <= run.seconds <= 60 and run.step >= 1   # the budget (1.8 s) is checked between steps
    rec = json.loads((tmp_path / "r" / "log.jsonl").read_text().splitlines()[0])
    assert {"step", "loss", "lr", "it_s", "grad_norm"} <= set(rec)
    grids = sorted(p.name for p in (tmp_path / "r" / "samples").iterdir())
    assert "step_0000001.png" in grids and f"step_{run.step:07d}.png" in grids


def test_loss_decreases_on_real_digits(tmp_path):
    """200 steps on the 8x8 digits must bring the v-prediction loss well below its start."""
    data = dl.load_dataset("digits")
    dl.train(_den(), data, tmp_path / "r", steps=200, batch_size=32, progress=False, sample_every=0, sample_n=2,
             sample_steps=2, log_every=20)
    losses = [json.loads(l)["loss"] for l in (tmp_path / "r" / "log.jsonl").read_text().splitlines()]
    assert losses[-1] < 0.6 * losses[0], losses


def test_cosine_lr_schedule_follows_its_formula_across_a_resume(tmp_path):
    """--lr-schedule cosine: lr_i = lr * min(1, (i+1)/warmup) * (1 + cos(pi i / steps)) / 2 for step i
    (0-based), ending at ~0.  A 5-step run resumed with steps=10 continues at step 5 of the 10-step
    curve (the progress of a step budget is the global step over the total)."""
    import math

    import pytest

    from difflab.errors import DifflabError
    from difflab.train import TrainConfig, lr_at
    data = dl.load_dataset("digits", index_range="0:64")
    kw = dict(batch_size=4, lr=1e-3, warmup=3, lr_schedule="cosine", progress=False, sample_every=0, sample_n=2,
              sample_steps=2, log_every=1, ckpt_every_minutes=100.0)
    dl.train(_den(), data, tmp_path / "r", steps=5, **kw)
    dl.train(_den(), data, tmp_path / "r", steps=10, resume=True, **kw)
    lrs = [json.loads(l)["lr"] for l in (tmp_path / "r" / "log.jsonl").read_text().splitlines()]
    f = lambda i, total: 1e-3 * min(1.0, (i + 1) / 3) * 0.5 * (1 + math.cos(math.pi * i / total))  # noqa: E731
    want = [f(i, 5) for i in range(5)] + [f(i, 10) for i in range(5, 10)]   # the resumed run counts from step 5
    assert lrs == pytest.approx(want, rel=1e-12)
    assert lrs[-1] < 0.03 * 1e-3                                   # (1 + cos 0.9 pi) / 2 = 0.024
    assert lr_at(TrainConfig(steps=10, lr=1e-3, warmup=1), 7, 0.9) == 1e-3  # constant ignores the progress
    with pytest.raises(DifflabError, match="learning-rate schedule"):
        TrainConfig(steps=1, lr_schedule="step").check()


def test_adam_betas_reach_the_optimizer_and_a_resume_uses_the_given_ones(tmp_path):
    """adam_betas go to AdamW: a run with (0.5, 0.9) saves them with its optimizer state and in run.json, and
    its second-moment state after one step is (1 - 0.9) g^2 (Adam's v_1); a resume takes this invocation's
    betas; out-of-range values are refused by name."""
    import pytest

    from difflab.errors import DifflabError
    from difflab.train import TrainConfig, load_checkpoint
    data = dl.load_dataset("digits", index_range="0:64")
    kw = dict(batch_size=4, progress=False, sample_every=0, sample_n=2, sample_steps=2, ckpt_every_minutes=100.0)
    den = _den()
    dl.train(den, data, tmp_path / "r", steps=1, adam_betas=(0.5, 0.9), grad_clip=0.0, **kw)
    ck = load_checkpoint(tmp_path / "r")
    assert ck.config["optimizer_param_groups"][0]["betas"] == [0.5, 0.9]
    assert json.loads((tmp_path / "r" / "run.json").read_text())["training"]["adam_betas"] == [0.5, 0.9]
    state = ck.tensors("train_state.safetensors")
    m1, v1 = state["state.0.exp_avg"], state["state.0.exp_avg_sq"]   # m_1 = (1 - b1) g, v_1 = (1 - b2) g^2
    assert torch.allclose(v1, (1 - 0.9) * (m1 / (1 - 0.5)) ** 2, rtol=1e-5, atol=1e-12) and v1.abs().sum() > 0
    cfg = json.loads((ck.path / "config.json").read_text())
    for g in cfg["optimizer_param_groups"]:
        g["fused"] = None  # as saved before difflab used the fused kernel
    (ck.path / "config.json").write_text(json.dumps(cfg))
    dl.train(_den(), data, tmp_path / "r", steps=2, resume=True, adam_betas=(0.8, 0.95), **kw)
    groups = load_checkpoint(tmp_path / "r").config["optimizer_param_groups"]
    assert groups[0]["betas"] == [0.8, 0.95] and groups[0]["fused"] is True
    for bad in [(0.9, 1.0), (-0.1, 0.9), (0.9,)]:
        with pytest.raises(DifflabError, match="Adam betas"):
            TrainConfig(steps=1, adam_betas=bad).check()


def test_non_finite_training_stops_at_a_log_step_and_writes_no_checkpoint(tmp_path):
    """Data with a NaN make the gradients NaN: no checkpoint of non-finite weights is written (a timed checkpoint
    is due every step here), and training stops at the next log step with the step in the message."""
    import pytest
    import warnings
    data = dl.load_dataset("digits", index_range="0:32")
    data.x[:] = float("nan")
    with warnings.catch_warnings(record=True) as caught, pytest.raises(RuntimeError, match=r"loss became nan \(gradient norm nan\) by step 3"):
        warnings.simplefilter("always")
        dl.train(_den(), data, tmp_path / "r", steps=10, batch_size=4, progress=False, sample_every=0, log_every=3,
                 ckpt_every_minutes=1e-9)
    assert any("not written: the gradient norm is not finite" in str(w.message) for w in caught)
    assert not list((tmp_path / "r").glob("checkpoints/step_*"))
