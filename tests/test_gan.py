"""The GAN baseline: losses against hand computation, R1 against independent gradients, networks per data
shape, the failure detectors on constructed inputs, the trainer (log, grids, milestones, exact resume,
refused checkpoints), its Generator, Stacked MNIST and the mode counter."""
import json
import math

import pytest
import torch

import difflab as dl
from difflab.baselines import (Discriminator, FailureMonitor, GANGenerator, GANGeneratorNet, d_loss, diversity_ratio,
                               g_loss, load_gan_checkpoint, r1_penalty, train_gan)
from difflab.baselines.monitor import Streak
from difflab.baselines.networks import doublings
from difflab.errors import DifflabError
from difflab.generators import Generator, load_generator
from difflab.metrics.modes import StackedClassifier, mode_coverage, mode_labels

L_REAL, L_FAKE = [0.0, 2.0, -1.0], [-1.0, 3.0, 0.5]


def _softplus(v: float) -> float:
    return math.log(1.0 + math.exp(v))


def test_losses_match_a_hand_computed_batch():
    """Non-saturating: L_D = mean log(1 + e^-l_real) + mean log(1 + e^l_fake), L_G = mean log(1 + e^-l_fake);
    hinge: L_D = mean max(0, 1 - l_real) + mean max(0, 1 + l_fake) = (1 + 0 + 2)/3 + (0 + 4 + 1.5)/3,
    L_G = -mean l_fake = -2.5/3.  Float64, so agreement to 1e-12."""
    lr, lf = torch.tensor(L_REAL, dtype=torch.float64), torch.tensor(L_FAKE, dtype=torch.float64)
    ns_d = sum(_softplus(-v) for v in L_REAL) / 3 + sum(_softplus(v) for v in L_FAKE) / 3
    ns_g = sum(_softplus(-v) for v in L_FAKE) / 3
    assert float(d_loss("nonsaturating", lr, lf)) == pytest.approx(ns_d, abs=1e-12)
    assert float(g_loss("nonsaturating", lf)) == pytest.approx(ns_g, abs=1e-12)
    assert float(d_loss("hinge", lr, lf)) == pytest.approx(3 / 3 + 5.5 / 3, abs=1e-12)
    assert float(g_loss("hinge", lf)) == pytest.approx(-2.5 / 3, abs=1e-12)
    # the non-saturating D loss is the binary cross-entropy -log sigma(l_real) - log(1 - sigma(l_fake))
    bce = -(torch.sigmoid(lr).log().mean() + (1 - torch.sigmoid(lf)).log().mean())
    assert float(d_loss("nonsaturating", lr, lf)) == pytest.approx(float(bce), abs=1e-12)
    with pytest.raises(DifflabError, match="unknown GAN loss 'wgan'"):
        d_loss("wgan", lr, lf)


def test_r1_of_a_linear_discriminator_is_its_squared_weight_norm():
    """D(x) = w . x + b has grad_x D = w for every x, so E||grad||^2 = ||w||^2 exactly."""
    torch.manual_seed(0)
    lin = torch.nn.Linear(12, 1).double()
    x = torch.randn(5, 3, 2, 2, dtype=torch.float64, requires_grad=True)
    r1 = r1_penalty(lin(x.flatten(1)).squeeze(1), x)
    assert float(r1.detach()) == pytest.approx(float(lin.weight.detach().pow(2).sum()), rel=1e-12)


def test_r1_against_finite_differences_on_a_nonlinear_discriminator():
    """A conv + tanh + linear D in float64: central differences (h = 1e-6, error O(h^2) ~ 1e-12 relative)
    of D at each input pixel give the input gradients independently of autograd."""
    torch.manual_seed(1)
    D = Discriminator((1, 4, 4), width=3).double()
    x = torch.randn(3, 1, 4, 4, dtype=torch.float64)
    xr = x.clone().requires_grad_(True)
    r1 = float(r1_penalty(D(xr), xr).detach())
    h, fd = 1e-6, torch.zeros_like(x)
    with torch.no_grad():
        for j in range(16):
            e = torch.zeros(16, dtype=torch.float64)
            e[j] = h
            e = e.view(1, 1, 4, 4)
            fd.view(3, 16)[:, j] = (D(x + e) - D(x - e)) / (2 * h)
    assert r1 == pytest.approx(float(fd.pow(2).flatten(1).sum(1).mean()), rel=1e-7)


def test_r1_gradient_reaches_the_weights_through_a_double_backward():
    """D(x) = 1/2 x^T A x: grad_x D = B x with B = (A + A^T)/2, R1 = mean ||B x||^2 and
    dR1/dA = (G + G^T)/2 with G = mean 2 (B x) x^T; autograd through r1_penalty must give it."""
    torch.manual_seed(2)
    A = torch.randn(4, 4, dtype=torch.float64, requires_grad=True)
    x = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    r1 = r1_penalty(0.5 * torch.einsum("bi,ij,bj->b", x, A, x), x)
    r1.backward()
    with torch.no_grad():
        B = (A + A.T) / 2
        Bx = x @ B.T
        G = 2 * torch.einsum("bi,bj->ij", Bx, x) / x.shape[0]
        assert float(r1) == pytest.approx(float(Bx.pow(2).sum(1).mean()), rel=1e-12)
        assert torch.allclose(A.grad, (G + G.T) / 2, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape,k", [((1, 8, 8), 1), ((1, 28, 28), 2), ((3, 32, 32), 3), ((3, 28, 28), 2),
                                     ((1, 7, 7), 0)])
def test_networks_fit_the_data_shape(shape, k):
    assert doublings(*shape[1:])[0] == k
    G, D = GANGeneratorNet(shape, latent_dim=8, width=4), Discriminator(shape, width=4)
    x = G(torch.randn(3, 8))
    assert x.shape == (3, *shape) and x.abs().max() <= 1
    assert D(x).shape == (3,)
    with pytest.raises(DifflabError, match="positive size"):
        doublings(0, 4)


def test_discriminator_win_detector_on_constructed_loss_sequences():
    """Fires once when D's loss has stayed below 0.1 for 5 log records, not before, not again while it
    stays there, and again after a recovery; a healthy game (loss ~ 2 log 2) never fires."""
    mon = FailureMonitor(d_win_loss=0.1, min_diversity=0.3, patience=5)
    seq = [1.3, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05, 1.2] + [0.02] * 5
    fired = [i for i, v in enumerate(seq) for w in mon.check(v, 1.0) if w["kind"] == "discriminator_wins"]
    assert fired == [5, 13]
    healthy = FailureMonitor()
    assert all(not healthy.check(2 * math.log(2) + 0.05 * math.sin(i), 0.9) for i in range(50))
    s = Streak(2)
    assert [s.update(c) for c in (True, False, True, True, True)] == [False, False, False, True, False]


def test_mode_collapse_detector_on_constructed_batches():
    """Diversity ratio: 0 for 64 copies of one image, 1 for the real batch against itself; 64 copies of
    one real digit plus noise of std 0.05 score far below 0.3 and fire after 5 records, while 64 distinct
    real digits never do."""
    real = dl.load_dataset("digits").x
    batch = real[:64]
    assert diversity_ratio(batch[:1].repeat(64, 1, 1, 1), batch) == 0.0
    assert diversity_ratio(batch, batch) == pytest.approx(1.0)
    collapsed = batch[:1] + 0.05 * torch.randn(64, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    r = diversity_ratio(collapsed, batch)
    assert r < 0.3
    mon = FailureMonitor(patience=5)
    kinds = [[w["kind"] for w in mon.check(1.0, r)] for _ in range(6)]
    assert kinds == [[], [], [], [], ["mode_collapse"], []]
    healthy = FailureMonitor(patience=5)
    assert not any(healthy.check(1.0, diversity_ratio(real[64 * i: 64 * (i + 1)], batch)) for i in range(1, 8))


# -- trainer ------------------------------------------------------------------------------------------
KW = dict(batch_size=8, latent_dim=8, width=4, progress=False, sample_n=4, ckpt_every_minutes=100.0)


def test_trainer_writes_log_grids_checkpoints_milestones_and_a_generator(tmp_path):
    data = dl.load_dataset("digits", index_range="0:200")
    res = train_gan(data, tmp_path / "g", steps=8, log_every=2, sample_every=4, milestones=(0.25, 0.5), keep=1, **KW)
    assert res.step == 8 and not res.interrupted
    recs = [json.loads(line) for line in (tmp_path / "g" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs] == [2, 4, 6, 8]
    assert {"loss_d", "loss_g", "r1", "d_real", "d_fake", "diversity", "it_s", "elapsed_s"} <= set(recs[0])
    assert all(0 < r["d_real"] < 1 and 0 < r["d_fake"] < 1 for r in recs)
    assert recs[0]["r1"] > 0                                   # R1 every 4 steps: step 0 is in the first window
    assert {p.name for p in (tmp_path / "g" / "samples").iterdir()} == {"step_0000004.png", "step_0000008.png"}
    assert [p.name for p in (tmp_path / "g" / "checkpoints").glob("step_*")] == ["step_0000008"]   # keep=1
    assert sorted(p.name for p in (tmp_path / "g" / "milestones").iterdir()) == ["step_0000002", "step_0000004"]
    ck = load_gan_checkpoint(tmp_path / "g" / "milestones" / "step_0000002")
    assert ck.step == 2 and ck.config["training_seconds"] > 0 and ck.config["data_shape"] == [1, 8, 8]
    gen = load_generator(tmp_path / "g")
    assert isinstance(gen, Generator) and isinstance(gen, GANGenerator)
    assert gen.nfe == 1 and gen.data_shape == (1, 8, 8) and gen.data_kind == "images"
    a = gen.sample(5, seed=3)
    gen.batch_size = 2
    assert torch.allclose(a[:2], gen.sample(2, seed=3), atol=1e-6)   # sample i depends only on (seed, i)
    assert torch.allclose(a, gen.sample(5, seed=3), atol=1e-6)       # whatever the batch size
    assert not torch.allclose(a, gen.sample(5, seed=4))
    assert torch.equal(res.generator.sample(3, seed=3), load_generator(tmp_path / "g").sample(3, seed=3))


def test_trainer_reports_failures_in_the_log_and_as_warning_lines(tmp_path, capsys):
    """Thresholds no game can meet (D loss below 100, diversity below 10) fire both detectors at the
    second watched record (patience 2): the record carries them and stderr gets one line each."""
    data = dl.load_dataset("digits", index_range="0:64")
    train_gan(data, tmp_path / "g", steps=4, log_every=1, sample_every=0, monitor_from=2, monitor_patience=2,
              d_win_loss=100.0, min_diversity=10.0, **KW)
    recs = [json.loads(line) for line in (tmp_path / "g" / "log.jsonl").read_text().splitlines()]
    assert [[w["kind"] for w in r.get("warnings", [])] for r in recs] == \
        [[], [], ["discriminator_wins", "mode_collapse"], []]
    err = capsys.readouterr().err.splitlines()
    assert [line.split(":")[:2] for line in err if line.startswith("warning")] == [["warning", " step 3"]] * 2


def test_resume_equals_a_straight_run(tmp_path):
    """3 steps, then a resume to 7, give the G, D and EMA weights, both optimizers' moments and the per-step
    log (losses, R1 every 2 steps, D(real), D(fake), diversity) of 7 uninterrupted steps."""
    data = dl.load_dataset("digits", index_range="0:200")
    kw = dict(KW, log_every=1, sample_every=0, r1_every=2, seed=5)
    train_gan(data, tmp_path / "straight", steps=7, **kw)
    train_gan(data, tmp_path / "split", steps=3, **kw)
    res = train_gan(data, tmp_path / "split", steps=7, resume=True, **{**kw, "latent_dim": 99})  # ignored on resume
    assert res.step == 7
    a, b = load_gan_checkpoint(tmp_path / "straight"), load_gan_checkpoint(tmp_path / "split")
    for f in ("generator", "discriminator", "ema", "train_state"):
        ta, tb = a.tensors(f"{f}.safetensors"), b.tensors(f"{f}.safetensors")
        assert ta.keys() == tb.keys()
        for k in ta:
            if k != "rng.global":
                assert torch.allclose(ta[k].double(), tb[k].double(), atol=1e-6), (f, k)
    assert any(k.startswith("d.state.") for k in ta) and any(k.startswith("g.state.") for k in ta)
    log = lambda run: [json.loads(line) for line in (tmp_path / run / "log.jsonl").read_text().splitlines()]  # noqa: E731
    keys = ("step", "loss_d", "loss_g", "r1", "d_real", "d_fake", "diversity")
    straight, split = log("straight"), log("split")
    assert [r["step"] for r in split] == list(range(1, 8))
    assert [r["r1"] is not None for r in split] == [True, False] * 3 + [True]   # R1 at steps 0, 2, 4, 6
    for x, y in zip(straight, split):
        for k in keys:
            assert x[k] == y[k] if x[k] is None else x[k] == pytest.approx(y[k], rel=1e-6), (k, x, y)
    with pytest.raises(DifflabError, match="already at step 7"):
        train_gan(data, tmp_path / "split", steps=7, resume=True, **kw)


def test_ctrl_c_saves_a_checkpoint_that_resumes(tmp_path, monkeypatch):
    """A Ctrl-C (the interrupt flag, checked between steps) after 3 steps saves step 3 and returns
    interrupted; the resume continues to the budget."""
    import difflab.baselines.trainer as trainer
    from difflab.train.loop import _Interrupt

    class _CtrlC(_Interrupt):
        checks = 0

        @property
        def hit(self):
            _CtrlC.checks += 1
            return _CtrlC.checks > 3

        @hit.setter
        def hit(self, value):
            pass

    data = dl.load_dataset("digits", index_range="0:64")
    monkeypatch.setattr(trainer, "_Interrupt", _CtrlC)
    res = train_gan(data, tmp_path / "g", steps=10, sample_every=0, **KW)
    assert res.interrupted and res.step == 3 and res.checkpoint.name == "step_0000003"
    assert not (tmp_path / "g" / "samples").exists()      # no final grid after an interrupt
    monkeypatch.undo()
    assert train_gan(data, tmp_path / "g", steps=10, sample_every=0, resume=True, **KW).step == 10


def test_corrupt_truncated_and_foreign_gan_checkpoints_are_refused(tmp_path):
    data = dl.load_dataset("digits", index_range="0:64")
    res = train_gan(data, tmp_path / "g", steps=1, sample_every=0, **KW)
    f = res.checkpoint / "ema.safetensors"
    good = f.read_bytes()
    f.write_bytes(good[: len(good) // 2])
    with pytest.raises(DifflabError, match="corrupt or truncated"):
        load_generator(tmp_path / "g")
    f.write_bytes(good[:-8] + bytes(8))                     # same length, other bytes: the SHA-256 differs
    with pytest.raises(DifflabError, match="corrupt or truncated"):
        load_generator(tmp_path / "g")
    f.write_bytes(good)
    cfg_path = res.checkpoint / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg_path.write_text(json.dumps({**cfg, "format_version": 7}))
    with pytest.raises(DifflabError, match="format version 7"):
        load_generator(tmp_path / "g")
    cfg_path.write_text(json.dumps({k: v for k, v in cfg.items() if k != "generator"}))
    with pytest.raises(DifflabError, match="lacks the field 'generator'"):
        load_gan_checkpoint(tmp_path / "g")
    cfg_path.write_text(json.dumps({**cfg, "generator": {**cfg["generator"], "width": 5}}))
    with pytest.raises(DifflabError, match="do not fit the network"):
        load_generator(tmp_path / "g")
    cfg_path.write_text(cfg_path.read_text()[:30])
    with pytest.raises(DifflabError, match="is corrupt"):
        load_generator(tmp_path / "g")
    with pytest.raises(DifflabError, match="give a training budget"):
        train_gan(data, tmp_path / "h", **KW)
    with pytest.raises(DifflabError, match="milestones"):
        train_gan(data, tmp_path / "h", steps=2, milestones=(0.5, 0.25), **KW)


# -- Stacked MNIST and the mode counter ---------------------------------------------------------------
def test_stacked_mnist_is_reproducible_with_modes_from_its_three_digits(mnist_dir):
    mnist = dl.load_dataset("mnist", mnist_dir, "0:10000")
    a = dl.load_dataset("stacked_mnist", mnist_dir, n=40, seed=3)
    assert a.x.shape == (40, 3, 28, 28) and a.num_classes == 1000 and a.info["range"] == [0, 8000]
    assert torch.equal(a.x, dl.load_dataset("stacked_mnist", mnist_dir, n=40, seed=3).x)
    assert not torch.equal(a.x, dl.load_dataset("stacked_mnist", mnist_dir, n=40, seed=4).x)
    held = dl.load_dataset("stacked_mnist", mnist_dir, "8000:10000", n=40, seed=3)
    flat = mnist.x.flatten(1)
    for ds, lo, hi in ((a, 0, 8000), (held, 8000, 10000)):
        for x, label in zip(ds.x[:10], ds.labels[:10]):
            digits = []
            for c in range(3):                       # find each channel's source image
                j = int((flat == x[c].flatten()).all(1).nonzero()[0])
                assert lo <= j < hi
                digits.append(int(mnist.labels[j]))
            assert int(label) == 100 * digits[0] + 10 * digits[1] + digits[2]


def test_mode_coverage_of_constructed_label_sets():
    """One mode: 1 covered, KL = log 1000; every mode equally: 1000, KL = 0; 250 modes x 4 samples: 250,
    KL = log(1000/250); min_count counts only modes with enough samples."""
    one = mode_coverage(torch.full((500,), 417))
    assert one["modes"] == 1 and one["kl_uniform"] == pytest.approx(math.log(1000), abs=1e-12)
    every = mode_coverage(torch.arange(1000).repeat(3))
    assert every["modes"] == 1000 and every["kl_uniform"] == pytest.approx(0.0, abs=1e-12)
    subset = mode_coverage(torch.arange(0, 1000, 4).repeat(4))
    assert subset["modes"] == 250 and subset["kl_uniform"] == pytest.approx(math.log(4), abs=1e-12)
    assert subset["histogram"][4] == 4 and subset["histogram"][5] == 0
    skewed = torch.cat([torch.arange(10), torch.full((90,), 3)])
    assert mode_coverage(skewed, min_count=2)["modes"] == 1
    for bad in (torch.tensor([1000]), torch.tensor([-1]), torch.tensor([0.5]), torch.tensor([], dtype=torch.long)):
        with pytest.raises(DifflabError):
            mode_coverage(bad)


class _LevelClassifier(torch.nn.Module):
    """A stand-in MNIST classifier: an image of constant grey level -1 + 2d/9 is digit d."""

    config = {"in_channels": 1, "num_classes": 10, "feature_dim": 2}

    def features(self, x):
        m = x.mean((1, 2, 3))
        return torch.stack([m, m ** 2], 1)

    def probabilities(self, images, batch_size=256):
        levels = torch.linspace(-1, 1, 10, dtype=torch.float64)
        m = dl.data.to_unit(images).double().mean((1, 2, 3))
        return torch.softmax(-200 * (m[:, None] - levels) ** 2, 1)


def test_modes_of_constructed_stacked_images_through_the_classifier():
    """Images whose channels are the levels of digits (d1, d2, d3) get mode 100 d1 + 10 d2 + d3; the
    stacked probabilities are the product of the channels' and sum to 1; features are side by side."""
    triples = torch.tensor([[1, 2, 3], [9, 0, 0], [0, 0, 7], [4, 4, 4]])
    x = (-1 + 2 * triples.float() / 9)[:, :, None, None].expand(-1, -1, 5, 5)
    clf = _LevelClassifier()
    assert mode_labels(x, clf).tolist() == [123, 900, 7, 444]
    sc = StackedClassifier(clf)
    p = sc.probabilities(x)
    assert p.shape == (4, 1000) and torch.allclose(p.sum(1), torch.ones(4, dtype=torch.float64))
    assert sc.extractor()(x).shape == (4, 6)
    assert mode_coverage(mode_labels(x, clf))["modes"] == 4
    with pytest.raises(DifflabError, match="1-channel 10-class"):
        StackedClassifier(dl.metrics.SmallCNN(3, 10))
