r"""Exact denoisers for Gaussian and Gaussian-mixture data: test oracles.

For :math:`x_0 \sim N(\mu, \Sigma)` and :math:`x_t = \alpha x_0 + \sigma\epsilon`,
:math:`E[x_0 \mid x_t] = \mu + \alpha\Sigma(\alpha^2\Sigma + \sigma^2 I)^{-1}(x_t - \alpha\mu)`.
With :math:`\Sigma = U\,\mathrm{diag}(\lambda)U^T` this is a per-eigendirection gain
:math:`\alpha\lambda/(\alpha^2\lambda + \sigma^2)`.

For a mixture :math:`\sum_k \pi_k N(\mu_k, \Sigma_k)` the posterior responsibilities are
:math:`w_k \propto \pi_k N(x_t; \alpha\mu_k, \alpha^2\Sigma_k + \sigma^2 I)` and
:math:`E[x_0 \mid x_t] = \sum_k w_k E_k[x_0 \mid x_t]`.

Both work on data of shape ``(B, *shape)`` with ``prod(shape) = D`` and compute in float64.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from ..process.schedules import Schedule
from .denoiser import as_time

__all__ = ["GaussianDenoiser", "GaussianMixtureDenoiser"]


class GaussianMixtureDenoiser(nn.Module):
    """Exact :math:`E[x_0 \\mid x_t]` for a mixture of K Gaussians in D dimensions.

    Args:
        means: ``(K, D)``; covs: ``(K, D, D)``; weights: ``(K,)`` (normalised here).
        shape: the per-sample shape of x (defaults to ``(D,)``).
    """

    def __init__(self, schedule: Schedule, means: Tensor, covs: Tensor, weights: Tensor | None = None,
                 shape: tuple[int, ...] | None = None):
        super().__init__()
        self.schedule = schedule
        self.means = means.to(torch.float64)
        self.covs = covs.to(torch.float64)
        K, D = self.means.shape
        w = torch.ones(K, dtype=torch.float64) if weights is None else weights.to(torch.float64)
        self.log_weights = (w / w.sum()).log()
        self.evals, self.evecs = torch.linalg.eigh(self.covs)  # (K, D), (K, D, D)
        self.evals = self.evals.clamp_min(0.0)
        self.shape = shape or (D,)

    def forward(self, x_t: Tensor, t: Tensor | float, **cond: Any) -> Tensor:
        B = x_t.shape[0]
        a, s = self.schedule.alpha_sigma(as_time(t, x_t).to(torch.float64))
        a, s = a[:, None, None], s[:, None, None]                     # (B, 1, 1)
        x = x_t.reshape(B, -1).to(torch.float64)[:, None, :]         # (B, 1, D)
        r = x - a * self.means[None]                                  # (B, K, D)
        z = torch.einsum("bkd,kde->bke", r, self.evecs)               # rotate to eigenbasis
        var = a**2 * self.evals[None] + s**2                          # (B, K, D)
        gain = a * self.evals[None] / var
        x0 = self.means[None] + torch.einsum("bke,kde->bkd", gain * z, self.evecs)
        if self.means.shape[0] == 1:
            out = x0[:, 0]
        else:
            D = x.shape[-1]
            logp = -0.5 * ((z**2 / var).sum(-1) + var.log().sum(-1) + D * math.log(2 * math.pi))
            w = torch.softmax(logp + self.log_weights[None], dim=1)   # (B, K)
            out = (w[..., None] * x0).sum(1)
        return out.reshape(x_t.shape).to(x_t.dtype)

    def sample_data(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Exact samples of the data distribution, shape ``(n, *shape)``."""
        k = torch.multinomial(self.log_weights.exp(), n, replacement=True, generator=generator)
        z = torch.randn(n, self.means.shape[1], generator=generator, dtype=torch.float64)
        root = self.evecs * self.evals.sqrt()[:, None, :]             # U diag(sqrt(l))
        x = self.means[k] + torch.einsum("nde,ne->nd", root[k], z)
        return x.reshape(n, *self.shape)


class GaussianDenoiser(GaussianMixtureDenoiser):
    """Exact denoiser of :math:`N(\\mu, \\Sigma)` data (a one-component mixture)."""

    def __init__(self, schedule: Schedule, mean: Tensor, cov: Tensor, shape: tuple[int, ...] | None = None):
        super().__init__(schedule, mean[None], cov[None], None, shape)
