r"""Exact denoisers for Gaussian and Gaussian-mixture data: test oracles.

For :math:`x_0 \sim N(\mu, \Sigma)` and :math:`x_t = \alpha x_0 + \sigma\epsilon`,
:math:`E[x_0 \mid x_t] = \mu + \alpha\Sigma(\alpha^2\Sigma + \sigma^2 I)^{-1}(x_t - \alpha\mu)`.
With :math:`\Sigma = U\,\mathrm{diag}(\lambda)U^T` this is a per-eigendirection gain
:math:`\alpha\lambda/(\alpha^2\lambda + \sigma^2)`.

For a mixture :math:`\sum_k \pi_k N(\mu_k, \Sigma_k)` the posterior responsibilities are
:math:`w_k = p(k \mid x_t) \propto \pi_k N(x_t; \alpha\mu_k, \alpha^2\Sigma_k + \sigma^2 I)` and
:math:`E[x_0 \mid x_t] = \sum_k w_k E_k[x_0 \mid x_t]`.  With the component as class label, the mixture
is also the exact class-conditional model: ``label=k`` gives :math:`E_k[x_0 \mid x_t]`, the null label
``K`` (or none) the mixture, and :meth:`GaussianMixtureDenoiser.class_log_posterior` the exact noisy
classifier :math:`\log p(k \mid x_t)`.

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

    @property
    def num_classes(self) -> int:
        return self.means.shape[0]

    def _components(self, x_t: Tensor, t: Tensor | float) -> tuple[Tensor, Tensor]:
        r"""Per-component posterior means ``(B, K, D)`` and unnormalised log responsibilities
        :math:`\log\pi_k + \log N(x_t; \alpha\mu_k, \alpha^2\Sigma_k + \sigma^2 I)`, ``(B, K)``, in float64."""
        B = x_t.shape[0]
        a, s = self.schedule.alpha_sigma(as_time(t, x_t).to(torch.float64))
        a, s = a[:, None, None], s[:, None, None]                     # (B, 1, 1)
        x = x_t.reshape(B, -1).to(torch.float64)[:, None, :]         # (B, 1, D)
        r = x - a * self.means[None]                                  # (B, K, D)
        z = torch.einsum("bkd,kde->bke", r, self.evecs)               # rotate to eigenbasis
        var = a**2 * self.evals[None] + s**2                          # (B, K, D)
        gain = a * self.evals[None] / var
        x0 = self.means[None] + torch.einsum("bke,kde->bkd", gain * z, self.evecs)
        D = x.shape[-1]
        logp = -0.5 * ((z**2 / var).sum(-1) + var.log().sum(-1) + D * math.log(2 * math.pi))
        return x0, logp + self.log_weights[None]

    def class_log_posterior(self, x_t: Tensor, t: Tensor | float) -> Tensor:
        r"""The exact noisy classifier :math:`\log p(k \mid x_t)`, ``(B, K)``, float64."""
        return torch.log_softmax(self._components(x_t, t)[1], dim=1)

    def forward(self, x_t: Tensor, t: Tensor | float, label: Tensor | None = None, **cond: Any) -> Tensor:
        x0, logits = self._components(x_t, t)
        out = x0[:, 0] if self.means.shape[0] == 1 else (torch.softmax(logits, dim=1)[..., None] * x0).sum(1)
        if label is not None:
            k = torch.as_tensor(label, device=x0.device).long()
            pick = k < self.num_classes
            comp = x0[torch.arange(x0.shape[0]), k.clamp(max=self.num_classes - 1)]
            out = torch.where(pick[:, None], comp, out)
        return out.reshape(x_t.shape).to(x_t.dtype)

    def sample_data(self, n: int, generator: torch.Generator | None = None, labels: bool = False):
        """Exact samples of the data distribution, shape ``(n, *shape)`` (and their components with ``labels``)."""
        k = torch.multinomial(self.log_weights.exp(), n, replacement=True, generator=generator)
        z = torch.randn(n, self.means.shape[1], generator=generator, dtype=torch.float64)
        root = self.evecs * self.evals.sqrt()[:, None, :]             # U diag(sqrt(l))
        x = (self.means[k] + torch.einsum("nde,ne->nd", root[k], z)).reshape(n, *self.shape)
        return (x, k) if labels else x


class GaussianDenoiser(GaussianMixtureDenoiser):
    """Exact denoiser of :math:`N(\\mu, \\Sigma)` data (a one-component mixture, without classes)."""

    num_classes = 0

    def __init__(self, schedule: Schedule, mean: Tensor, cov: Tensor, shape: tuple[int, ...] | None = None):
        super().__init__(schedule, mean[None], cov[None], None, shape)
