r"""Guidance by a second prediction: classifier-free guidance and autoguidance.

Both extrapolate from a weaker prediction ``neg`` towards the model's ``pos``:

.. math:: D_w(x_t, t) = D_{neg} + w\,(D_{pos} - D_{neg}),

so **w = 1 is the model itself** and w = 0 the weaker prediction; w > 1 guides.  The combination is the same
in x0, eps or score space (they are affine in each other at fixed x_t, t).

* Classifier-free guidance (Ho & Salimans, arXiv:2207.12598): pos = the conditional model, neg = the same
  network with the null label (one call on a doubled batch: 2 evaluations per sample).
* Autoguidance (Karras et al., arXiv:2406.02507): pos = the model, neg = a weaker version of it (an earlier EMA
  snapshot of the same run, or a smaller model), with the same conditioning; it also works for
  unconditional models.
* Guidance interval (Kynkaanniemi et al., arXiv:2404.07724): guide only where the noise level
  :math:`\tilde\sigma = \sigma/\alpha` lies in (lo, hi]; elsewhere use pos alone (1 evaluation).
* Rescaling (Lin et al., arXiv:2305.08891, sec. 3.4, eq. 15-16): the guided noise prediction is rescaled to
  the per-sample standard deviation of the model's own, :math:`\hat\epsilon_r = \hat\epsilon_w\,
  \mathrm{std}(\hat\epsilon_{pos})/\mathrm{std}(\hat\epsilon_w)`, then mixed: :math:`\phi\hat\epsilon_r + (1-\phi)\hat\epsilon_w`.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..denoisers import param
from ..denoisers.denoiser import as_time
from ..errors import DifflabError
from ..process.forward import expand
from .base import DenoiserWrapper, call, check_interval, in_interval

__all__ = ["ClassifierFreeGuidance", "Autoguidance", "rescale_guided"]


def rescale_guided(x0_guided: Tensor, x0_pos: Tensor, x_t: Tensor, alpha: Tensor, sigma: Tensor,
                   phi: float) -> Tensor:
    """Lin et al.'s rescaling (eq. 15-16), applied to the noise predictions of the two x0 estimates."""
    a, s = expand(alpha, x_t), expand(sigma, x_t)
    eps_w = param.eps_from_x0(x0_guided, x_t, a, s)
    eps_p = param.eps_from_x0(x0_pos, x_t, a, s)
    std = lambda e: e.flatten(1).std(1).reshape(-1, *([1] * (e.ndim - 1)))  # noqa: E731
    eps = phi * eps_w * (std(eps_p) / std(eps_w)) + (1 - phi) * eps_w
    return param.x0_from_eps(eps, x_t, a, s)


class _Guided(DenoiserWrapper):
    """The guided combination, its interval and rescaling; subclasses give the pair (pos, neg)."""

    def __init__(self, inner: Any, scale: float, interval: tuple[float, float] | None = None,
                 rescale: float = 0.0):
        super().__init__(inner)
        if not 0.0 <= rescale <= 1.0:
            raise DifflabError(f"guidance rescale must be in [0, 1], got {rescale}")
        self.scale, self.interval, self.rescale = float(scale), check_interval(interval), float(rescale)

    def _pair(self, x_t: Tensor, t: Tensor, cond: dict[str, Any]) -> tuple[Tensor, Tensor, int]:
        raise NotImplementedError  # pragma: no cover

    def forward(self, x_t: Tensor, t: Tensor | float, **cond: Any) -> Tensor:
        t = as_time(t, x_t)
        inside = in_interval(self.schedule, t, self.interval)
        if self.scale == 1.0 or not bool(inside.any()):
            out, self.last_nfe = call(self.inner, x_t, t, **cond)
            return out
        pos, neg, self.last_nfe = self._pair(x_t, t, cond)
        out = neg + self.scale * (pos - neg)
        if self.rescale > 0:
            a, s = self.schedule.alpha_sigma(t)
            out = rescale_guided(out, pos, x_t, a, s, self.rescale)
        if not bool(inside.all()):
            out = torch.where(expand(inside, out), out, pos)
        return out


class ClassifierFreeGuidance(_Guided):
    """Classifier-free guidance of a class-conditional denoiser (see the module docstring); every call needs
    ``label``."""

    def __init__(self, inner: Any, scale: float, interval: tuple[float, float] | None = None, rescale: float = 0.0):
        if int(getattr(inner, "num_classes", 0)) <= 0:
            raise DifflabError("classifier-free guidance needs a class-conditional model; this one is "
                               "unconditional (guide it with a weaker model instead: --autoguide CKPT)")
        super().__init__(inner, scale, interval, rescale)

    def _pair(self, x_t: Tensor, t: Tensor, cond: dict[str, Any]) -> tuple[Tensor, Tensor, int]:
        label = cond.get("label")
        if label is None:
            raise DifflabError("classifier-free guidance needs the class labels to guide towards")
        null = torch.full_like(label, self.num_classes)
        doubled = {k: torch.cat([v, v]) for k, v in cond.items() if k != "label"}
        out, n = call(self.inner, torch.cat([x_t, x_t]), torch.cat([t, t]), label=torch.cat([label, null]), **doubled)
        pos, neg = out.chunk(2)
        return pos, neg, 2 * n


class Autoguidance(_Guided):
    """Autoguidance: the model ``inner`` guided by a weaker ``guide`` of the same schedule and classes."""

    def __init__(self, inner: Any, guide: Any, scale: float, interval: tuple[float, float] | None = None,
                 rescale: float = 0.0):
        if guide.schedule.config() != inner.schedule.config():
            raise DifflabError("the autoguidance model must use the same noise schedule as the model it guides")
        k_guide, k_inner = int(getattr(guide, "num_classes", 0)), int(getattr(inner, "num_classes", 0))
        if k_guide and k_inner and k_guide != k_inner:
            raise DifflabError(f"the autoguidance model has {k_guide} classes, the model {k_inner}: they must be "
                               f"conditioned alike")
        super().__init__(inner, scale, interval, rescale)
        self.guide = guide

    def _pair(self, x_t: Tensor, t: Tensor, cond: dict[str, Any]) -> tuple[Tensor, Tensor, int]:
        pos, n_pos = call(self.inner, x_t, t, **cond)
        neg, n_neg = call(self.guide, x_t, t, **cond)
        return pos, neg, n_pos + n_neg
