r"""Distances between two sets of samples or features (float64 throughout).

* Frechet distance of Gaussians fitted to features (the FID formula, Heusel et al., arXiv:1706.08500):
  :math:`\lVert\mu_1 - \mu_2\rVert^2 + \mathrm{tr}(\Sigma_1 + \Sigma_2 - 2(\Sigma_1\Sigma_2)^{1/2})`, with
  :math:`\mathrm{tr}(\Sigma_1\Sigma_2)^{1/2} = \sum_i \sqrt{\lambda_i(\Sigma_1^{1/2}\Sigma_2\Sigma_1^{1/2})}`
  (a symmetric PSD eigenproblem, so no complex square roots as with a general ``sqrtm``).
* KID (Binkowski et al., arXiv:1801.01401): the unbiased MMD^2 with the cubic polynomial kernel
  :math:`k(x, y) = (x^\top y/d + 1)^3`, averaged over random subsets (mean and standard deviation).
* Precision and recall of Kynkaanniemi et al. (arXiv:1904.06991): a sample is "covered" by a set if
  it lies within the k-th nearest-neighbour radius of some member of that set (k = 3).
* For low-dimensional data (2-D toys): sliced Wasserstein-1, MMD^2 with an RBF kernel (unbiased),
  and the energy distance :math:`2E\lVert X - Y\rVert - E\lVert X - X'\rVert - E\lVert Y - Y'\rVert`.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..errors import DifflabError

__all__ = ["gaussian_stats", "frechet_distance", "frechet_distance_from_stats", "kid", "precision_recall",
           "sliced_wasserstein", "mmd_rbf", "energy_distance"]


def _as2d(x: Tensor | object, name: str) -> Tensor:
    t = torch.as_tensor(x).to(torch.float64)
    if t.ndim != 2:
        raise DifflabError(f"{name} must be a 2-D array (samples x features), got shape {tuple(t.shape)}")
    return t


def gaussian_stats(feats: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and unbiased covariance of features ``(N, D)``, float64."""
    f = _as2d(feats, "features")
    if f.shape[0] < 2:
        raise DifflabError("need at least 2 samples for a covariance")
    return f.mean(0), torch.cov(f.T).reshape(f.shape[1], f.shape[1])


def _psd_sqrt(s: Tensor) -> Tensor:
    w, v = torch.linalg.eigh((s + s.T) / 2)
    return (v * w.clamp_min(0).sqrt()) @ v.T


def frechet_distance_from_stats(mu1: Tensor, s1: Tensor, mu2: Tensor, s2: Tensor) -> float:
    mu1, mu2, s1, s2 = (torch.as_tensor(v, dtype=torch.float64) for v in (mu1, mu2, s1, s2))
    r1 = _psd_sqrt(s1)
    m = r1 @ s2 @ r1
    tr_sqrt = torch.linalg.eigvalsh((m + m.T) / 2).clamp_min(0).sqrt().sum()
    return float(((mu1 - mu2) ** 2).sum() + torch.trace(s1) + torch.trace(s2) - 2 * tr_sqrt)


def frechet_distance(feats1: Tensor, feats2: Tensor) -> float:
    """Frechet distance between Gaussians fitted to two feature sets ``(N, D)`` and ``(M, D)``."""
    return frechet_distance_from_stats(*gaussian_stats(feats1), *gaussian_stats(feats2))


def _poly_mmd2_unbiased(x: Tensor, y: Tensor) -> Tensor:
    d = x.shape[1]
    kxx = (x @ x.T / d + 1) ** 3
    kyy = (y @ y.T / d + 1) ** 3
    kxy = (x @ y.T / d + 1) ** 3
    m, n = x.shape[0], y.shape[0]
    return ((kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1)) + (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1))
            - 2 * kxy.mean())


def kid(feats1: Tensor, feats2: Tensor, subsets: int = 100, subset_size: int = 1000, seed: int = 0
        ) -> tuple[float, float]:
    """Kernel Inception Distance: mean and std of the unbiased polynomial MMD^2 over random subsets."""
    x, y = _as2d(feats1, "features 1"), _as2d(feats2, "features 2")
    size = min(subset_size, x.shape[0], y.shape[0])
    if size < 2:
        raise DifflabError("KID needs at least 2 samples in each set")
    g = torch.Generator().manual_seed(seed)
    vals = torch.stack([_poly_mmd2_unbiased(x[torch.randperm(x.shape[0], generator=g)[:size]],
                                            y[torch.randperm(y.shape[0], generator=g)[:size]])
                        for _ in range(subsets)])
    return float(vals.mean()), float(vals.std()) if subsets > 1 else 0.0


def _kth_radius(x: Tensor, k: int) -> Tensor:
    d = torch.cdist(x, x)
    return d.kthvalue(k + 1, dim=1).values  # k+1: the point itself is at distance 0


def precision_recall(real: Tensor, fake: Tensor, k: int = 3) -> tuple[float, float]:
    """Improved precision (fraction of fake samples inside the real manifold) and recall (fraction of
    real samples inside the fake manifold), manifolds as unions of k-NN balls."""
    r, f = _as2d(real, "real features"), _as2d(fake, "fake features")
    if min(len(r), len(f)) <= k:
        raise DifflabError(f"precision/recall with k={k} needs more than {k} samples per set")
    rr, rf = _kth_radius(r, k), _kth_radius(f, k)
    precision = (torch.cdist(f, r) <= rr[None, :]).any(1).double().mean()
    recall = (torch.cdist(r, f) <= rf[None, :]).any(1).double().mean()
    return float(precision), float(recall)


def sliced_wasserstein(x: Tensor, y: Tensor, projections: int = 256, seed: int = 0) -> float:
    """Sliced Wasserstein-1 distance: the mean over random directions of the 1-D W1 between the
    projections (sets of equal size are matched by sorting; otherwise quantiles are compared)."""
    a, b = _as2d(x, "x"), _as2d(y, "y")
    g = torch.Generator().manual_seed(seed)
    dirs = torch.randn(a.shape[1], projections, generator=g, dtype=torch.float64)
    dirs = dirs / dirs.norm(dim=0, keepdim=True)
    pa, pb = (a @ dirs).sort(0).values, (b @ dirs).sort(0).values
    if len(pa) != len(pb):
        q = torch.linspace(0, 1, max(len(pa), len(pb)), dtype=torch.float64)
        pa, pb = torch.quantile(pa, q, dim=0), torch.quantile(pb, q, dim=0)
    return float((pa - pb).abs().mean())


def mmd_rbf(x: Tensor, y: Tensor, bandwidth: float | None = None) -> float:
    """Unbiased MMD^2 with the RBF kernel exp(-|x-y|^2 / (2 h^2)); h defaults to the median distance."""
    a, b = _as2d(x, "x"), _as2d(y, "y")
    dxx, dyy, dxy = torch.cdist(a, a) ** 2, torch.cdist(b, b) ** 2, torch.cdist(a, b) ** 2
    h = bandwidth or float(torch.cat([dxy.flatten(), dxx.flatten()]).sqrt().median())
    k = lambda d: torch.exp(-d / (2 * h * h))  # noqa: E731
    m, n = len(a), len(b)
    kxx, kyy = k(dxx), k(dyy)
    return float((kxx.sum() - m) / (m * (m - 1)) + (kyy.sum() - n) / (n * (n - 1)) - 2 * k(dxy).mean())


def energy_distance(x: Tensor, y: Tensor) -> float:
    """Energy distance (Szekely & Rizzo 2013), the V-statistic form; 0 iff the distributions agree."""
    a, b = _as2d(x, "x"), _as2d(y, "y")
    return float(2 * torch.cdist(a, b).mean() - torch.cdist(a, a).mean() - torch.cdist(b, b).mean())
