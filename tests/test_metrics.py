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


def test_kid_is_unbiased_and_matches_a_direct_computation():
    x, y = _feats(300, 16, 0), _feats(300, 16, 1)
    same_mean, same_std = kid(x, _feats(300, 16, 0) + 0 * x, subsets=1, subset_size=300)
    assert same_mean == pytest.approx(kid(x, x, subsets=1, subset_size=300)[0])
    # direct O(n^2) loops on a small subset, kernel (x.y/d + 1)^3
    xs, ys = x[:20], y[:20]
    k = lambda a, b: (a @ b / 16 + 1) ** 3  # noqa: E731
    m = 20
    kxx = sum(k(xs[i], xs[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    kyy = sum(k(ys[i], ys[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    kxy = sum(k(xs[i], ys[j]) for i in range(m) for j in range(m)) / (m * m)
    from difflab.metrics.distances import _poly_mmd2_unbiased
    assert float(_poly_mmd2_unbiased(xs, ys)) == pytest.approx(float(kxx + kyy - 2 * kxy), rel=1e-10)
    # same distribution: the mean over subsets is within a few standard errors of 0
    mean, std = kid(_feats(2000, 16, 5), _feats(2000, 16, 5).flip(0)[torch.randperm(2000)], subsets=50,
                    subset_size=200)
    mean_shift, _ = kid(x, _feats(300, 16, 0, shift=1.0), subsets=10, subset_size=200)
    assert mean_shift > 10 * abs(mean) + 3 * std / math.sqrt(50)


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
