"""A denoiser that wraps others: the base of every guidance and editing wrapper.

A wrapper is itself a denoiser ``D'(x_t, t, **cond) -> x0_hat`` with the inner model's schedule, data kind
and shape, so every sampler works with it unchanged.  It reports the network evaluations per sample of its
last call as ``last_nfe`` (two networks, or one on a doubled batch, count 2), which
:class:`~difflab.denoisers.NFECounter` adds up.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..denoisers.denoiser import evaluations
from ..errors import DifflabError

__all__ = ["DenoiserWrapper", "call", "check_interval", "in_interval"]


def call(denoiser: Any, x_t: Tensor, t: Tensor | float, **cond: Any) -> tuple[Tensor, int]:
    """``denoiser(x_t, t, **cond)`` and the network evaluations per sample it made."""
    out = denoiser(x_t, t, **cond)
    return out, evaluations(denoiser)


def check_interval(interval: tuple[float, float] | None, what: str = "guidance") -> tuple[float, float] | None:
    """A noise-level interval (lo, hi] in sigma/alpha, checked: 0 <= lo < hi (None: every level)."""
    if interval is None:
        return None
    if len(interval) != 2:
        raise DifflabError(f"{what} interval takes two noise levels (lo, hi), got {tuple(interval)}")
    lo, hi = (float(v) for v in interval)
    if not 0 <= lo < hi:
        raise DifflabError(f"{what} interval must be 0 <= lo < hi in sigma/alpha, got {tuple(interval)}")
    return lo, hi


def in_interval(schedule: Any, t: Tensor, interval: tuple[float, float] | None) -> Tensor:
    r"""Which samples of the batch have their noise level :math:`\tilde\sigma = \sigma/\alpha` in (lo, hi]."""
    if interval is None:
        return torch.ones_like(t, dtype=torch.bool)
    sig = schedule.sigma_ratio(t.to(torch.float64))
    return (sig > interval[0]) & (sig <= interval[1])


class DenoiserWrapper(nn.Module):
    """Holds the main denoiser ``inner`` and takes over its schedule, data kind and shape, and classes."""

    def __init__(self, inner: Any):
        super().__init__()
        self.inner = inner
        self.schedule = inner.schedule
        self.last_nfe = 1

    @property
    def data_shape(self):
        return getattr(self.inner, "data_shape", None)

    @property
    def data_kind(self):
        return getattr(self.inner, "data_kind", None)

    @property
    def encoder(self):
        """The encoder of a model that runs in a latent space (None: data space)."""
        return getattr(self.inner, "encoder", None)

    @property
    def num_classes(self) -> int:
        return int(getattr(self.inner, "num_classes", 0))

    @property
    def classes(self):
        return getattr(self.inner, "classes", None)
