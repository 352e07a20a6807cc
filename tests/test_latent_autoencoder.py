"""The KL autoencoder: its maths (KL closed form, losses, PSNR), shapes and padding, the latent scale,
the cached encodings, the exact resume of its trainer, and the VAE generator."""
import json

import pytest
import torch

import difflab as dl
from difflab.data import LatentData, encode_dataset
from difflab.data import latents as latents_mod
from difflab.errors import DifflabError
from difflab.generators import load_generator
from difflab.losses.autoencoder import autoencoder_loss, reconstruction_loss
from difflab.metrics.reconstruction import psnr
from difflab.nn import build_network, default_network
from difflab.nn.autoencoder import DiagonalGaussian, KLAutoencoder, default_autoencoder
from difflab.train.autoencoder import (AutoencoderTrainConfig, autoencoder_checkpoint, kl_weight_at, load_autoencoder,
                                       train_autoencoder)

TINY = dict(channels=(8, 16), latent_channels=2, groups=4)
KW = dict(batch_size=16, progress=False, sample_every=0, log_every=1)


@pytest.fixture(scope="module")
def ae_run(tmp_path_factory):
    """A tiny autoencoder trained for 20 steps on 256 8x8 digits (f = 2, latent 2x4x4)."""
    out = tmp_path_factory.mktemp("ae") / "run"
    torch.manual_seed(0)
    data = dl.load_dataset("digits", index_range="0:256")
    train_autoencoder(KLAutoencoder(data.shape, **TINY), data, out, steps=20, **KW)
    return out, data


def test_kl_of_diagonal_gaussian_against_torch_distributions():
    """KL(N(mu, sigma^2) || N(0, 1)) summed over the latent, against torch.distributions' closed form
    (an independent implementation) in float64; tolerance: float64 rounding."""
    g = torch.Generator().manual_seed(0)
    mean = torch.randn(5, 2, 3, 3, generator=g, dtype=torch.float64) * 2
    logvar = torch.randn(5, 2, 3, 3, generator=g, dtype=torch.float64) * 3
    q = DiagonalGaussian(mean, logvar)
    ref = torch.distributions.kl_divergence(torch.distributions.Normal(mean, (0.5 * logvar).exp()),
                                            torch.distributions.Normal(0.0, 1.0)).flatten(1).sum(1)
    assert torch.allclose(q.kl(), ref, rtol=1e-12, atol=1e-12)
    assert torch.allclose(DiagonalGaussian(torch.zeros(2, 3), torch.zeros(2, 3)).kl(), torch.zeros(2))
    assert torch.equal(q.sample(torch.zeros_like(mean)), mean)


def test_loss_terms_psnr_and_kl_warmup_follow_their_formulas():
    torch.manual_seed(0)
    net = KLAutoencoder((1, 8, 8), **TINY)
    x, eps = torch.rand(4, 1, 8, 8) * 2 - 1, torch.randn(4, *net.latent_shape)
    x_hat, q = net(x, eps)
    flat = lambda y: y.flatten(1)  # noqa: E731  a feature map whose feature loss is the L2 reconstruction loss
    t = autoencoder_loss(net, x, eps, "l1", kl_weight=0.3, features=flat, feature_weight=2.0)
    assert torch.allclose(t["rec"], (x_hat - x).abs().mean((1, 2, 3)), atol=1e-6)
    assert torch.allclose(t["kl"], q.kl() / 64, atol=1e-6)
    assert torch.allclose(t["feat"], reconstruction_loss(x_hat, x, "l2"), atol=1e-6)
    assert torch.allclose(t["loss"], t["rec"] + 0.3 * t["kl"] + 2.0 * t["feat"], atol=1e-6)
    y = torch.zeros(3, 1, 4, 4)   # an error of 0.2 in [-1, 1] is 0.1 on [0, 1]: PSNR = 10 log10(1 / 0.01) = 20 dB
    assert torch.allclose(psnr(y + 0.2, y), torch.full((3,), 20.0, dtype=torch.float64), atol=1e-9)
    cfg = AutoencoderTrainConfig(steps=10, kl_weight=1e-2, kl_warmup=4)
    assert [kl_weight_at(cfg, s) for s in range(5)] == pytest.approx([2.5e-3, 5e-3, 7.5e-3, 1e-2, 1e-2])
    with pytest.raises(DifflabError, match="unknown reconstruction loss 'l3'"):
        reconstruction_loss(x, x, "l3")


@pytest.mark.parametrize("shape, factor, latent", [((1, 28, 28), 2, (1, 14, 14)), ((1, 28, 28), 4, (4, 8, 8)),
                                                   ((1, 8, 8), 2, (1, 4, 4)), ((1, 8, 8), 4, (4, 2, 2))])
def test_shapes_padding_and_the_default_unet_fits_the_latent(shape, factor, latent):
    """28 px at f = 4 is padded to 32 (an 8x8 latent, not 7x7), so that the default network of the latent
    shape (a 2-level UNet) takes it; the decoder crops back to the image size."""
    net = KLAutoencoder(**default_autoencoder(shape, factor))
    assert net.factor == factor and net.latent_shape == latent
    x = torch.rand(2, *shape) * 2 - 1
    with torch.no_grad():
        x_hat, q = net(x)
    assert q.mean.shape == (2, *latent) and x_hat.shape == x.shape
    build_network(default_network(latent)).check_input(latent)
    with pytest.raises(DifflabError, match="built for images of shape"):
        net.encode(torch.zeros(1, 1, 9, 9))
    with pytest.raises(DifflabError, match="give a downsampling factor 2, not 4"):
        default_autoencoder(shape, 4, channels=[8, 16])


def test_latent_scale_gives_unit_std_and_decode_inverts_the_scaling(ae_run):
    """The scale in the checkpoint is 1/std of the training set's posterior means, so the encoded
    training set has std 1 (float32 rounding: 1e-4); decode(encode(x)) undoes the scale exactly."""
    run, data = ae_run
    enc = load_autoencoder(run)
    cfg = autoencoder_checkpoint(run).config
    assert cfg["scale"] == enc.scale and abs(enc.scale - 1) > 0.05   # a missing scale would not pass below
    z = encode_dataset(data, enc, use_cache=False).x
    assert z.shape == (256, 2, 4, 4) and abs(float(z.std()) - 1) < 1e-4
    with torch.no_grad():
        assert torch.allclose(enc.decode(enc.encode(data.x[:8])), enc.net(data.x[:8])[0], atol=1e-5)
    bad = run / "checkpoints" / "step_0000020" / "config.json"
    saved = bad.read_text()
    bad.write_text(json.dumps({**json.loads(saved), "scale": None}))
    try:
        with pytest.raises(DifflabError, match="records no latent scale"):
            load_autoencoder(run)
    finally:
        bad.write_text(saved)


def test_cached_latents_equal_fresh_encodings_and_a_changed_autoencoder_misses(ae_run, tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFLAB_CACHE", str(tmp_path / "cache"))
    run, data = ae_run
    enc = load_autoencoder(run)
    calls = []
    real = latents_mod._encode
    monkeypatch.setattr(latents_mod, "_encode", lambda *a: calls.append(1) or real(*a))
    first = encode_dataset(data, enc)
    assert len(calls) == 1 and len(list((tmp_path / "cache" / "latents").glob("*.safetensors"))) == 1
    again = encode_dataset(data, enc)
    assert len(calls) == 1, "the second encoding must come from the cache"
    fresh = encode_dataset(data, enc, use_cache=False)
    assert len(calls) == 2
    assert isinstance(again, LatentData) and again.kind == "latents" and again.encoder is enc
    assert torch.equal(again.x, fresh.x) and torch.equal(first.x, fresh.x) and torch.equal(again.labels, data.labels)
    with torch.no_grad():
        next(enc.net.parameters()).add_(1e-3)   # another autoencoder: another digest
    changed = encode_dataset(data, enc)
    assert len(calls) == 3 and not torch.equal(changed.x, fresh.x)


def test_autoencoder_resume_equals_an_uninterrupted_run(tmp_path):
    """3 steps, then a resume to 6, give the weights and the per-step log of 6 uninterrupted steps."""
    data = dl.load_dataset("digits", index_range="0:128")

    def net():
        torch.manual_seed(1)
        return KLAutoencoder(data.shape, **TINY)
    kw = dict(KW, warmup=3, kl_warmup=4)
    train_autoencoder(net(), data, tmp_path / "straight", steps=6, **kw)
    train_autoencoder(net(), data, tmp_path / "split", steps=3, **kw)
    cfg = autoencoder_checkpoint(tmp_path / "split").config
    res = train_autoencoder(KLAutoencoder(**cfg["autoencoder"]), data, tmp_path / "split", steps=6, resume=True, **kw)
    assert res.step == 6
    a = autoencoder_checkpoint(tmp_path / "straight").tensors("model.safetensors")
    b = autoencoder_checkpoint(tmp_path / "split").tensors("model.safetensors")
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k
    log = lambda r: [json.loads(s) for s in (tmp_path / r / "log.jsonl").read_text().splitlines()]  # noqa: E731
    straight, split = log("straight"), log("split")
    assert [r["step"] for r in split] == [r["step"] for r in straight] == [1, 2, 3, 4, 5, 6]
    for x, y in zip(straight, split):
        assert x["loss"] == pytest.approx(y["loss"], rel=1e-6) and x["kl_weight"] == y["kl_weight"], (x, y)
    assert (tmp_path / "split" / "samples" / "recon_step_0000006.png").exists()


def test_vae_generator_sample_i_depends_only_on_seed_and_i(ae_run):
    run, _ = ae_run
    gen = load_generator(run)
    assert gen.data_kind == "images" and gen.data_shape == (1, 8, 8)
    gen.batch_size = 2
    a = gen.sample(5, seed=3)
    gen.batch_size = 256
    b = gen.sample(3, seed=3)
    assert gen.nfe == 1 and a.shape == (5, 1, 8, 8)
    assert torch.equal(a[:3], b)
    assert not torch.allclose(gen.sample(3, seed=4), b)
