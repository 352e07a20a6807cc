import math

import numpy as np
import pytest
import torch

from difflab.errors import DifflabError
from difflab.metrics import (energy_distance, frechet_distance, frechet_distance_from_stats, gaussian_stats, kid,
                             mmd_rbf, precision_recall, sliced_wasserstein)


def _feats(n, d, seed, shift=0.0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(d, d, generator=g, dtype=torch.float64) / math.sqrt(d)
    return (torch.randn(n, d, generator=g, dtype=torch.float64) @ A) * scale + shift


def test_frechet_equals_the_pytorch_fid_formula():
    """pytorch-fid computes tr sqrtm(S1 S2) with scipy.linalg.sqrtm of the non-symmetric product;
    written out here independently in numpy/scipy, relative agreement 1e-6."""
    linalg = pytest.importorskip("scipy.linalg")
    x, y = _feats(500, 64, 0), _feats(400, 64, 1, shift=0.3, scale=1.2)
    ours = frechet_distance(x, y)
    m1, m2 = x.numpy().mean(0), y.numpy().mean(0)
    s1, s2 = np.cov(x.numpy(), rowvar=False), np.cov(y.numpy(), rowvar=False)
    covmean = linalg.sqrtm(s1.dot(s2)).real
    ref = ((m1 - m2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)
    assert abs(ours - ref) <= 1e-6 * abs(ref)


def test_frechet_closed_form_for_diagonal_gaussians():
    mu1, mu2 = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([1.0, 1.0, 0.0])
    a, b = torch.tensor([1.0, 4.0, 0.25]), torch.tensor([4.0, 1.0, 0.25])
    exact = ((mu1 - mu2) ** 2).sum() + ((a.sqrt() - b.sqrt()) ** 2).sum()
    assert frechet_distance_from_stats(mu1, torch.diag(a), mu2, torch.diag(b)) == pytest.approx(float(exact), rel=1e-12)
    m, s = gaussian_stats(_feats(10, 3, 0))
    assert m.shape == (3,) and s.shape == (3, 3)


def _poly_kernel_mean(a, b, d):
    """E[(x.y/d + 1)^3] for independent x ~ N(a, I_d), y ~ N(b, I_d), from the Gaussian moments
    E[x.y] = a.b, E[(x.y)^2] = d + |a|^2 + |b|^2 + (a.b)^2 and
    E[(x.y)^3] = (a.b)^3 + 3 (a.b)(|a|^2 + |b|^2) + (3d + 6)(a.b) (Isserlis' theorem)."""
    ab, na, nb = float(a @ b), float(a @ a), float(b @ b)
    e1, e2 = ab / d, (d + na + nb + ab**2) / d**2
    e3 = (ab**3 + 3 * ab * (na + nb) + (3 * d + 6) * ab) / d**3
    return 1 + 3 * e1 + 3 * e2 + e3


def test_kid_is_unbiased_and_matches_a_direct_computation():
    """KID of N(0, I) against N(b, I) in 16-D (2000 samples each, 50 subsets of 1000) equals the population
    MMD^2 of the cubic kernel in closed form, 1.0293; over 20 seeds the estimate scattered with std 0.047,
    tolerance 5 std (a degree-2 kernel would give 0.5625).  Equal distributions give 0 within noise, and the
    unbiased estimator equals a direct double loop."""
    d = 16
    zero, b = torch.zeros(d, dtype=torch.float64), torch.full((d,), 0.5, dtype=torch.float64)
    population = _poly_kernel_mean(zero, zero, d) + _poly_kernel_mean(b, b, d) - 2 * _poly_kernel_mean(zero, b, d)
    assert population == pytest.approx(1.029296875)
    g = torch.Generator().manual_seed(100)
    x, y = torch.randn(2000, d, generator=g, dtype=torch.float64), torch.randn(2000, d, generator=g, dtype=torch.float64) + b
    assert abs(kid(x, y, subsets=50, subset_size=1000, seed=0)[0] - population) < 5 * 0.047
    # direct O(n^2) loops on a small subset, kernel (x.y/d + 1)^3
    xs, ys = x[:20], y[:20]
    k = lambda p, q: (p @ q / d + 1) ** 3  # noqa: E731
    m = 20
    kxx = sum(k(xs[i], xs[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    kyy = sum(k(ys[i], ys[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    kxy = sum(k(xs[i], ys[j]) for i in range(m) for j in range(m)) / (m * m)
    from difflab.metrics.distances import _poly_mmd2_unbiased
    assert float(_poly_mmd2_unbiased(xs, ys)) == pytest.approx(float(kxx + kyy - 2 * kxy), rel=1e-10)
    # same distribution: the mean over subsets is within a few standard errors of 0
    f = _feats(4000, 16, 5)
    mean, std = kid(f[:2000], f[2000:], subsets=50, subset_size=200)
    assert abs(mean) < 3 * std / math.sqrt(50) + 1e-3, (mean, std)


def test_precision_recall_cases():
    real = _feats(300, 8, 0)
    p, r = precision_recall(real, real.clone())
    assert p == 1.0 and r == 1.0
    p, r = precision_recall(real, real + 100.0)
    assert p == 0.0 and r == 0.0
    # a generator that drops one of two equal modes: precise, recall about one half
    g = torch.Generator().manual_seed(1)
    draw = lambda: torch.randn(300, 8, generator=g, dtype=torch.float64)  # noqa: E731
    two_modes = torch.cat([draw(), draw() + 50.0])
    p, r = precision_recall(two_modes, draw())
    # (k=3 k-NN balls in 8-D cover about 87% of a fresh sample of the same distribution)
    assert p > 0.8 and 0.35 < r < 0.6, (p, r)
    with pytest.raises(DifflabError, match="needs more than 3"):
        precision_recall(real[:3], real)


def test_low_dimensional_distances():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2000, 2, generator=g, dtype=torch.float64)
    y = torch.randn(2000, 2, generator=g, dtype=torch.float64)
    shifted = x + torch.tensor([0.5, 0.0], dtype=torch.float64)
    # a pure shift c moves every projection by c.theta: SW1 = |c| E|cos phi| = 2|c|/pi in 2-D
    assert sliced_wasserstein(x, shifted, projections=4096) == pytest.approx(2 * 0.5 / math.pi, rel=0.03)
    assert sliced_wasserstein(x, y) < 0.1
    assert abs(mmd_rbf(x[:500], y[:500])) < 0.01 < mmd_rbf(x[:500], shifted[:500])
    assert energy_distance(x, y) < 0.02 < energy_distance(x, shifted)
    with pytest.raises(DifflabError, match="2-D array"):
        energy_distance(x[0], y)


def test_likelihood_of_gaussian_data_is_exact():
    """With the exact denoiser of N(mu, Sigma), the PF-ODE log-likelihood equals the analytic
    log N(x; mu, Sigma + sigma_min^2 I) (sigma_min = sigma/alpha at t_min).  The prior at t = 1 of the
    continuous cosine schedule has sigma/alpha = 3.2e4; using N(0, 1 + sigma_max^2) instead of
    N(mu, Sigma + sigma_max^2) costs O(|mu|/sigma_max) ~ 1e-4 nats; tolerance 2e-3 nats (with
    sigma_max = 80 the same prior error is 0.07 nats, so it is left at t = 1)."""
    from oracle_net import random_gaussian

    from difflab.metrics.likelihood import log_likelihood
    from difflab.process import get_schedule
    sch = get_schedule("cosine")
    den, mean, cov = random_gaussian(sch)
    x0 = torch.randn(16, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64) * 0.5 + mean
    t_min = 1e-3
    a, s = sch.alpha_sigma(torch.tensor(t_min, dtype=torch.float64))
    ref = torch.distributions.MultivariateNormal(mean, cov + (s / a) ** 2 * torch.eye(3, dtype=torch.float64))
    st = {}
    ours = log_likelihood(den, x0, t_min=t_min, stats=st)
    assert torch.allclose(ours, ref.log_prob(x0), atol=2e-3), (ours, ref.log_prob(x0))
    assert st["nfe"] > 0
    # Hutchinson: unbiased; the mean over 64 probe draws is within 5 standard errors
    est = torch.stack([log_likelihood(den, x0[:4], t_min=t_min, exact_trace=False, seed=k, rtol=1e-4, atol=1e-4)
                       for k in range(64)])
    se = est.std(0) / 8
    assert torch.all((est.mean(0) - ref.log_prob(x0[:4])).abs() < 5 * se + 2e-3)


def test_bits_per_dim_bound():
    """Uniform dequantisation bounds the discrete NLL (Theis et al. 2016): for 8-bit data of a 2-D Gaussian
    with the exact denoiser, bits_per_dim is, on average over 200 images, at or above -log2 P(bin)/d with
    P the exact probability of each pixel bin [k/128 - 1, (k+1)/128 - 1) under the model density
    N(mu, Sigma + sigma_min^2) (a product of normal CDF differences), and the gap is small for a density this
    smooth on the bin scale (measured: 0.0014 +- 0.0006 bits; a 255-level bin would add 0.006)."""
    from scipy.stats import norm

    from difflab.denoisers import GaussianDenoiser
    from difflab.metrics.likelihood import bits_per_dim
    from difflab.process import get_schedule
    sch = get_schedule("cosine")
    mu, sd = torch.tensor([0.1, -0.2], dtype=torch.float64), torch.tensor([0.15, 0.1], dtype=torch.float64)
    den = GaussianDenoiser(sch, mu, torch.diag(sd**2))
    x = mu + sd * torch.randn(200, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x8 = ((x + 1) * 128).floor().clamp(0, 255).to(torch.uint8)
    est = bits_per_dim(den, x8, samples=4, seed=1)
    a, s = sch.alpha_sigma(torch.tensor(sch.t_min, dtype=torch.float64))
    std = (sd**2 + (s / a) ** 2).sqrt()
    lo, hi = x8.double() / 128 - 1, (x8.double() + 1) / 128 - 1
    p_bin = torch.from_numpy(norm.cdf(((hi - mu) / std).numpy()) - norm.cdf(((lo - mu) / std).numpy()))
    exact = -p_bin.log().sum(1) / (2 * math.log(2))
    gap = est - exact
    se = float(gap.std()) / math.sqrt(len(gap))
    assert -3 * se - 1e-3 < float(gap.mean()) < 0.005, (float(gap.mean()), se)
    with pytest.raises(DifflabError, match="uint8"):
        bits_per_dim(den, x8.float())


def test_scores_closed_cases():
    from difflab.metrics import class_entropy, inception_score
    K = 10
    confident = torch.eye(K, dtype=torch.float64).repeat(20, 1)        # every class equally often, certain
    assert inception_score(confident, splits=4)[0] == pytest.approx(K, rel=1e-9)
    assert inception_score(torch.eye(K, dtype=torch.float64)[[0] * 200], splits=4)[0] == pytest.approx(1.0)
    assert inception_score(torch.full((200, K), 1 / K, dtype=torch.float64), splits=4)[0] == pytest.approx(1.0)
    h, hist = class_entropy(confident)
    assert h == pytest.approx(math.log(K)) and torch.allclose(hist, torch.full((K,), 0.1, dtype=torch.float64))


def test_memorisation_ratio():
    import difflab as dl
    from difflab.metrics import memorisation
    d = dl.load_dataset("digits").x
    train, held = d[:1000], d[1000:1400]
    copies = memorisation(train[:100] + 0.0, train, held)
    fresh = memorisation(d[1400:1500], train, held)
    assert copies["ratio"] == 0.0 and copies["fraction_closer_than_held_out_5pct"] == 1.0
    assert 0.8 < fresh["ratio"] < 1.25


def test_classifier_extractor_batch_independence_and_accuracy(tmp_path):
    """A SmallCNN trained for 800 steps on 1500 of the 8x8 digits classifies the other 297 at > 90%;
    its features do not depend on batch size or on uint8 vs float input; save -> load is exact."""
    import difflab as dl
    from difflab.metrics import load_classifier, save_classifier, train_classifier
    d = dl.load_dataset("digits")
    net = train_classifier(d.x[:1500], d.labels[:1500], steps=800, batch_size=64, progress=False)
    acc = (net.probabilities(d.x[1500:]).argmax(1) == d.labels[1500:]).double().mean()
    assert acc > 0.9, acc
    ext = net.extractor(batch_size=7)
    f_small = ext(d.x[:20])
    f_big = net.extractor(batch_size=256)(d.x[:20])
    assert torch.allclose(f_small, f_big, atol=1e-6) and f_small.shape == (20, 128)
    u8 = dl.data.to_uint8(d.x[:20])
    assert torch.allclose(ext(torch.from_numpy(u8)), ext(torch.from_numpy(u8).float() / 127.5 - 1), atol=1e-6)
    save_classifier(net, tmp_path / "clf")
    assert torch.equal(load_classifier(tmp_path / "clf").probabilities(d.x[:5]), net.probabilities(d.x[:5]))
    (tmp_path / "clf" / "classifier.safetensors").write_bytes(b"broken")
    with pytest.raises(DifflabError, match="classifier weights .* is corrupt"):
        load_classifier(tmp_path / "clf")


def test_eval_cli_protocol(tmp_path, monkeypatch, capsys):
    """difflab train-classifier + difflab eval on the 8x8 digits: real held-out images score near the
    real-vs-real floor; uniform noise scores far worse; the reference features are cached."""
    import json as _json

    import numpy as np

    import difflab as dl
    from difflab.cli import main
    monkeypatch.setenv("DIFFLAB_CACHE", str(tmp_path / "cache"))
    assert main(["train-classifier", "--data", "digits", "--index-range", "0:1200", "--steps", "400",
                 "--out", str(tmp_path / "clf"), "--no-progress"]) == 0
    d = dl.load_dataset("digits")
    real = dl.data.to_uint8(d.x[1200:1500])
    noise = np.random.default_rng(0).integers(0, 256, real.shape, dtype=np.uint8)
    results = {}
    for name, arr in (("real", real), ("noise", noise)):
        np.savez(tmp_path / f"{name}.npz", samples=arr)
        code = main(["eval", str(tmp_path / f"{name}.npz"), "--data", "digits", "--train-range", "0:1200",
                     "--ref-range", "1500:1797", "--classifier", str(tmp_path / "clf"), "--min-samples", "100",
                     "--out", str(tmp_path / f"{name}.json")])
        assert code == 0
        results[name] = _json.loads((tmp_path / f"{name}.json").read_text())
    assert "real vs real" in capsys.readouterr().out
    r, n = results["real"], results["noise"]
    assert r["fd_samples"] < 3 * r["fd_floor"] + 1 and n["fd_samples"] > 10 * r["fd_samples"]
    assert n["precision_samples"] < r["precision_samples"]
    assert 0.7 < r["memorisation"]["ratio"] < 1.4
    assert len(list((tmp_path / "cache" / "features").glob("*.safetensors"))) == 1
    assert main(["eval", str(tmp_path / "missing.npz"), "--data", "digits", "--classifier",
                 str(tmp_path / "clf")]) == 2


def test_eval_seeds_and_likelihood_cli(tmp_path, monkeypatch, capsys):
    """difflab eval --checkpoint with two seeds reports mean +- std over seeds (the std equals that of
    the per-seed values); several .npz files do the same; difflab likelihood prints bits/dim."""
    import json as _json

    import numpy as np

    import difflab as dl
    from difflab.cli import main
    from difflab.metrics import SmallCNN, save_classifier
    monkeypatch.setenv("DIFFLAB_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    save_classifier(SmallCNN(1, 10), tmp_path / "clf")  # an untrained network still gives features
    run = tmp_path / "run"
    assert main(["train", "--data", "digits", "--index-range", "0:64", "--steps", "3", "--batch-size", "4",
                 "--channels", "8,16", "--no-progress", "--sample-every", "0", "--out", str(run)]) == 0
    common = ["--data", "digits", "--train-range", "0:1200", "--ref-range", "1500:1797", "--classifier",
              str(tmp_path / "clf"), "--min-samples", "10", "--no-progress"]
    assert main(["eval", "--checkpoint", str(run), "--sampler", "ddim", "--steps", "4", "--n", "40",
                 "--seeds", "0,1", "--out", str(tmp_path / "s.json")] + common) == 0
    assert "+-" in capsys.readouterr().out
    res = _json.loads((tmp_path / "s.json").read_text())
    fds = [r["fd_samples"] for r in res["runs"]]
    assert len(fds) == 2 and fds[0] != fds[1]
    assert abs(res["fd_samples"] - np.mean(fds)) < 1e-9 and abs(res["fd_samples_runs_std"] - np.std(fds, ddof=1)) < 1e-9
    d = dl.load_dataset("digits")
    for i in range(2):
        np.savez(tmp_path / f"r{i}.npz", samples=dl.data.to_uint8(d.x[1200 + 40 * i:1240 + 40 * i]))
    assert main(["eval", str(tmp_path / "r0.npz"), str(tmp_path / "r1.npz"), "--out", str(tmp_path / "f.json")]
                + common) == 0
    assert len(_json.loads((tmp_path / "f.json").read_text())["runs"]) == 2
    assert main(["eval", "--data", "digits", "--classifier", str(tmp_path / "clf")]) == 2  # nothing to score
    assert main(["likelihood", str(run), "--data", "digits", "--n", "4", "--n-t", "5", "--no-progress",
                 "--out", str(tmp_path / "l.json")]) == 0
    assert "bits/dim" in capsys.readouterr().out
    lk = _json.loads((tmp_path / "l.json").read_text())
    assert len(lk["bpd"]) == 4 and all(b > 0 for b in lk["bpd"])


def test_evaluate_samples_scores_floats_as_the_saved_8bit_images():
    """A float tensor straight from a sampler (values beyond [-1, 1]) and the uint8 images written from
    it get identical scores: evaluation quantises floats as saving does."""
    import difflab as dl
    from difflab.metrics import SmallCNN
    from difflab.metrics.evaluate import evaluate_samples
    torch.manual_seed(0)
    net = SmallCNN(1, 10)
    d = dl.load_dataset("digits")
    g = torch.Generator().manual_seed(1)
    x = d.x[:200] * 1.2 + 0.05 * torch.randn(d.x[:200].shape, generator=g)  # overshoots [-1, 1]
    assert x.abs().max() > 1.1
    kw = dict(train=d.x[200:1200], reference=d.x[1200:1700], model=net, min_samples=10, use_cache=False)
    a, b = evaluate_samples(x, **kw), evaluate_samples(torch.from_numpy(dl.data.to_uint8(x)), **kw)
    for k in ("fd_samples", "kid_samples", "precision_samples", "recall_samples", "inception_score"):
        assert a[k] == b[k], k
