"""The magnitude-preserving UNet (EDM2): each layer's magnitude property checked on Gaussian inputs, the network
end to end (shapes, conditioning, unit-RMS activations at every block), and training, saving and resuming it."""
import json

import pytest
import torch

import difflab as dl
from difflab.errors import DifflabError
from difflab.nn import MPUNet, build_network
from difflab.nn.mp import MPConv, mp_cat, mp_silu, mp_sum, normalize
from difflab.train import load_checkpoint

N = 400_000   # samples per moment: the RMS estimates below have a standard error of about 0.1 %


def _rms(x):
    return float(x.detach().pow(2).mean().sqrt())


def test_layer_functions_keep_unit_variance():
    """For independent N(0, 1) inputs each function returns unit second moment (to 1 %, 10 standard errors);
    mp_cat gives ``b`` the fraction t of the magnitude: |b part|^2 / |a part|^2 = t^2 / (1 - t)^2."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(N, generator=g, dtype=torch.float64), torch.randn(N, generator=g, dtype=torch.float64)
    assert _rms(mp_silu(a)) == pytest.approx(1, abs=0.01)
    for t in (0.1, 0.3, 0.5, 0.9):
        assert _rms(mp_sum(a, b, t)) == pytest.approx(1, abs=0.01)
    assert torch.equal(mp_sum(a, b, 0.0), a)
    a2 = a.reshape(-1, 8, 1)
    b2 = torch.randn(a2.shape[0], 24, 1, generator=g, dtype=torch.float64)
    for t in (0.3, 0.5):
        c = mp_cat(a2, b2, dim=1, t=t)
        assert c.shape[1] == 32 and _rms(c) == pytest.approx(1, abs=0.01)
        ratio = c[:, 8:].pow(2).sum() / c[:, :8].pow(2).sum()
        assert float(ratio) == pytest.approx(t ** 2 / (1 - t) ** 2, rel=0.02)


def test_normalize_gives_unit_rms_rows():
    x = torch.randn(5, 3, 4, 4) * torch.tensor([0.01, 1.0, 7.0, 100.0, 3.0])[:, None, None, None]
    rms = x.pow(2).mean(dim=(1, 2, 3)).sqrt()
    y = normalize(x)                      # RMS / (1e-4 + RMS): 1 unless a row is near 0 (0.99 at RMS 0.01)
    assert torch.allclose(y.pow(2).mean(dim=(1, 2, 3)).sqrt(), rms / (1e-4 + rms), atol=1e-5)
    assert torch.allclose(y[1:].pow(2).mean(dim=(1, 2, 3)), torch.ones(4), atol=1e-3)
    assert torch.allclose(normalize(x[1:], dim=1).pow(2).mean(dim=1), torch.ones(4, 4, 4), atol=1e-3)
    assert torch.isfinite(normalize(torch.zeros(2, 3))).all()


def test_mpconv_forced_weight_normalisation():
    """The output does not depend on the stored weight's scale; for unit-variance input it has unit variance
    (each output channel is a unit-norm combination); a training forward resets the stored rows to unit RMS,
    an eval forward leaves them alone."""
    torch.manual_seed(0)
    conv, lin = MPConv(16, 32, (3, 3)), MPConv(64, 48)
    x, v = torch.randn(256, 16, 12, 12), torch.randn(20_000, 64)
    conv.eval()
    y = conv(x)
    with torch.no_grad():
        conv.weight.mul_(9.0)
    assert torch.allclose(conv(x), y, rtol=2e-4, atol=1e-5)   # only normalize's epsilon (1e-4) sees the scale
    assert torch.allclose(conv(x, gain=2.5), 2.5 * conv(x), atol=1e-5)
    inner = y[:, :, 1:-1, 1:-1]                          # away from the zero padding
    assert _rms(inner) == pytest.approx(1, abs=0.02)
    assert _rms(lin(v)) == pytest.approx(1, abs=0.02)
    before = conv.weight.detach().clone()
    conv(x)
    assert torch.equal(conv.weight, before)              # eval: the stored weight is untouched
    conv.train()(x)
    assert torch.allclose(conv.weight.pow(2).mean(dim=(1, 2, 3)), torch.ones(32), atol=1e-3)


def test_mpunet_shapes_gradients_batch_independence_and_time():
    torch.manual_seed(0)
    net = MPUNet(in_channels=1, channels=(8, 16, 16), layers_per_block=1, attention_levels=(2,), head_dim=8)
    x, t = torch.randn(3, 1, 12, 12), torch.tensor([0.0, 500.0, 999.0])
    net(x, t).pow(2).mean().backward()
    assert all(p.grad is not None for p in net.parameters())
    net.eval()
    with torch.no_grad():
        net.head_gain.fill_(1.0)
        for m in net.modules():
            if hasattr(m, "emb_gain"):
                m.emb_gain.fill_(0.5)
    full = net(x, t)
    assert full.shape == x.shape
    parts = torch.cat([net(x[i:i + 1], t[i:i + 1]) for i in range(3)])
    assert torch.allclose(full, parts, atol=1e-5)
    assert (net(x, t + 50) - full).abs().max() > 1e-3
    with pytest.raises(DifflabError, match="image size 10x10 does not fit"):
        net(torch.randn(1, 1, 10, 10), t[:1])


def test_mpunet_starts_at_zero_and_keeps_activations_at_unit_rms():
    """At initialisation the output is 0 (its gain starts at 0); with the gains set, every block's output on
    unit-variance input has RMS within [0.5, 2] — the magnitude-preserving property the design is for."""
    torch.manual_seed(1)
    net = MPUNet(in_channels=1, channels=(16, 32, 64), layers_per_block=1, attention_levels=(2,)).eval()
    x, t = torch.randn(32, 1, 28, 28), torch.rand(32) * 999
    assert torch.equal(net(x, t), torch.zeros_like(x))
    rms = []
    for blk in list(net.enc) + list(net.dec):
        blk.register_forward_hook(lambda m, i, o: rms.append(_rms(o)))
    with torch.no_grad():
        for m in net.modules():
            if hasattr(m, "emb_gain"):
                m.emb_gain.fill_(1.0)
        net(x, t)
    assert len(rms) == len(net.enc) + len(net.dec)
    assert all(0.5 < r < 2 for r in rms), rms


def test_mpunet_class_conditioning():
    torch.manual_seed(0)
    net = MPUNet(in_channels=1, channels=(8, 16), attention_levels=(1,), head_dim=8, num_classes=3).eval()
    with torch.no_grad():
        net.head_gain.fill_(1.0)
        for m in net.modules():
            if hasattr(m, "emb_gain"):
                m.emb_gain.fill_(1.0)
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([10.0, 700.0])
    y0, y1 = net(x, t, label=torch.tensor([0, 0])), net(x, t, label=torch.tensor([1, 1]))
    assert (y0 - y1).abs().max() > 1e-3
    assert torch.equal(net(x, t), net(x, t, label=torch.tensor([3, 3])))   # None is the null label
    with pytest.raises(DifflabError, match="class 4 is not one of the model's classes 0..2"):
        net(x, t, label=torch.tensor([0, 4]))
    with pytest.raises(DifflabError, match="unconditional"):
        MPUNet(in_channels=1, channels=(8, 16), attention_levels=(1,), head_dim=8).eval()(x, t, label=torch.tensor([0, 1]))


def _mp_den(seed=0):
    den = dl.create_denoiser((1, 8, 8), {"type": "unet_mp", "channels": [8, 16], "attention_levels": [1],
                                         "head_dim": 8}, "cosine", 1000, "v", seed=seed)
    return den


def test_mpunet_trains_saves_and_resumes_exactly(tmp_path):
    """Through the library's trainer: the loss falls on the 8x8 digits, the checkpoint config names the
    network type and rebuilds it, and 3 + 3 steps with a resume equal 6 straight steps."""
    data = dl.load_dataset("digits", index_range="0:512")
    kw = dict(batch_size=16, progress=False, sample_every=0, sample_n=2, sample_steps=2, log_every=10, lr=1e-2,
              warmup=10)
    run = dl.train(_mp_den(), data, tmp_path / "r", steps=80, **kw)
    losses = [json.loads(line)["loss"] for line in (tmp_path / "r" / "log.jsonl").read_text().splitlines()]
    assert losses[-1] < 0.75 * losses[0], losses   # 0.64 at 80 steps; a network that does not learn: ~1
    cfg = json.loads((run.checkpoint / "config.json").read_text())
    assert cfg["network"]["type"] == "unet_mp"
    rebuilt = dl.load(tmp_path / "r")
    assert isinstance(rebuilt.net, MPUNet)
    a = dl.sample(run.ema, n=3, sampler="ddim", steps=5, seed=2, progress=False).x
    assert torch.equal(a, dl.sample(rebuilt, n=3, sampler="ddim", steps=5, seed=2, progress=False).x)

    kw.update(log_every=1, warmup=3)
    dl.train(_mp_den(), data, tmp_path / "straight", steps=6, **kw)
    dl.train(_mp_den(), data, tmp_path / "split", steps=3, **kw)
    resumed = load_checkpoint(tmp_path / "split").denoiser("model").train()
    dl.train(resumed, data, tmp_path / "split", steps=6, resume=True, **kw)
    for name in ("model.safetensors", "ema.safetensors"):
        m1, m2 = (load_checkpoint(tmp_path / r).tensors(name) for r in ("straight", "split"))
        for k in m1:
            assert torch.allclose(m1[k], m2[k], atol=1e-6), (name, k)


def test_bad_mpunet_configs_are_refused():
    with pytest.raises(DifflabError, match="attention_levels"):
        build_network({"type": "unet_mp", "channels": [8, 16], "attention_levels": [2]})
    with pytest.raises(DifflabError, match="bad network config"):
        build_network({"type": "unet_mp", "groups": 4})
    with pytest.raises(DifflabError, match="only difflab UNet models can be exported"):
        dl.export_diffusers(_mp_den(), "unused")


def test_another_network_type_keeps_the_defaults_it_shares():
    """``{"type": "unet_mp"}`` over the MNIST default (a UNet) keeps the widths, depth and attention levels and
    drops what MPUNet does not take (GroupNorm groups); ``difflab train --network`` passes the type through."""
    den = dl.create_denoiser((1, 28, 28), {"type": "unet_mp"})
    default = dl.create_denoiser((1, 28, 28)).net.config
    assert isinstance(den.net, MPUNet)
    for k in ("in_channels", "channels", "layers_per_block", "attention_levels"):
        assert den.net.config[k] == default[k], k
    assert dl.create_denoiser((1, 28, 28), {"type": "unet_mp", "channels": [8, 16, 16]}).net.config["channels"] == [8, 16, 16]
    with pytest.raises(DifflabError, match="unknown network type 'resnet'; choose from unet, unet_mp"):
        dl.create_denoiser((1, 28, 28), {"type": "resnet"})


def test_cli_trains_the_mp_network_and_samples_it(tmp_path, capsys):
    from difflab.cli import main
    run = tmp_path / "run"
    assert main(["train", "--data", "digits", "--index-range", "0:64", "--steps", "3", "--batch-size", "8",
                 "--network", "unet_mp", "--channels", "8,16", "--lr", "1e-2", "--no-progress", "--sample-every", "0",
                 "--out", str(run)]) == 0
    assert "model: MPUNet [8, 16]" in capsys.readouterr().out
    assert json.loads((run / "checkpoints" / "step_0000003" / "config.json").read_text())["network"]["type"] == "unet_mp"
    assert main(["sample", str(run), "--n", "2", "--steps", "3", "--out", str(tmp_path / "s"), "--no-progress"]) == 0
    assert main(["train", "--data", "digits", "--steps", "1", "--network", "resnet", "--out", str(tmp_path / "x")]) == 2


def test_encoder_blocks_pixel_normalise_their_input():
    """An encoder block normalises each position's channel vector first, so scaling its input (per position)
    changes nothing; a decoder block has no such normalisation."""
    from difflab.nn.mp import MPBlock
    torch.manual_seed(0)
    x, emb = torch.randn(2, 8, 6, 6), torch.randn(2, 16)
    scale = torch.rand(2, 1, 6, 6) * 10 + 0.5
    enc, dec = MPBlock(8, 16, 16, "enc").eval(), MPBlock(8, 16, 16, "dec").eval()
    assert torch.allclose(enc(x * scale, emb), enc(x, emb), atol=1e-3)   # up to normalize's epsilon
    assert (dec(x * scale, emb) - dec(x, emb)).abs().max() > 0.1
