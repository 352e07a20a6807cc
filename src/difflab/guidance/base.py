"""A denoiser that wraps others: the base of every guidance and editing wrapper.

A wrapper is itself a denoiser ``D'(x_t, t, **cond) -> x0_hat`` with the inner model's schedule, data kind
and shape, so every sampler works with it unchanged.  It reports the network evaluations per sample of its
last call as ``last_nfe`` (two networks, or one on a doubled batch, count 2), which
:class:`~difflab.denoisers.NFECounter` adds up.
"""
from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from ..denoisers.denoiser import evaluations

__all__ = ["DenoiserWrapper", "call"]


def call(denoiser: Any, x_t: Tensor, t: Tensor | float, **cond: Any) -> tuple[Tensor, int]:
    """``denoiser(x_t, t, **cond)`` and the network evaluations per sample it made."""
    out = denoiser(x_t, t, **cond)
    return out, evaluations(denoiser)


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
