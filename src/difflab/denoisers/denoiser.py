r"""The one denoiser contract: :math:`D(x_t, t, **cond) \to \hat x_0`.

:class:`Denoiser` turns a network that knows nothing of diffusion into D, given a schedule and
the network's parameterisation (see :mod:`difflab.denoisers.param`).  Samplers, losses, guidance
and metrics only ever see D; :func:`eps_hat`, :func:`v_hat` and :func:`score_hat` derive the other
quantities from it.
"""
from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from ..process.forward import expand
from ..process.schedules import Schedule
from . import param

__all__ = ["DenoiserFn", "Denoiser", "eps_hat", "v_hat", "score_hat", "NFECounter", "evaluations", "as_time",
           "network_dtype"]


@runtime_checkable
class DenoiserFn(Protocol):
    r"""The contract every sampler, loss, guidance wrapper and metric is written against:
    :math:`D(x_t, t, **cond) \to \hat x_0 = E[x_0 \mid x_t]`, with the schedule it belongs to.

    ``x_t``: ``(B, *shape)``; ``t``: a float or a ``(B,)`` tensor in [0, 1]; ``cond``: per-sample
    conditioning tensors (class labels, ...) with leading dimension B, passed through unchanged.
    """

    schedule: Schedule

    def __call__(self, x_t: Tensor, t: Tensor | float, **cond: Any) -> Tensor: ...


def as_time(t: Tensor | float, x: Tensor) -> Tensor:
    """A time value (scalar or per sample) as a float64 tensor of shape ``(B,)``."""
    t = torch.as_tensor(t, dtype=torch.float64)
    return t.expand(x.shape[0]) if t.ndim == 0 else t


class Denoiser(nn.Module):
    r""":math:`D(x_t, t) = \hat x_0` from ``net(c_in x_t, timestep(t), **cond)``.

    Args:
        net: a module ``net(x, timestep, **cond) -> out`` with ``out.shape == x.shape``.
        schedule: the :class:`~difflab.process.Schedule` the network was trained with.
        prediction: what ``net`` predicts: ``eps``, ``x0``, ``v``, ``score``, ``edm``, ``velocity``, or
            ``consistency_<one of them>`` (a consistency function whose boundary :math:`f(x, t_{min}) = x` sits
            at the schedule's ``t_min``; :mod:`~difflab.denoisers.param`).
        clip_x0: clamp :math:`\hat x_0` to ``[-clip_x0, clip_x0]`` (DDPM's ``clip_sample``); None: off.
        sigma_data: data standard deviation used by ``edm`` preconditioning and by the input scaling
            :math:`c_{in} = 1/\sqrt{\alpha^2\sigma_d^2 + \sigma^2}` of variance-exploding schedules
            (VP schedules feed :math:`x_t` unscaled, as DDPM does).
    """

    def __init__(self, net: nn.Module, schedule: Schedule, prediction: str = "eps",
                 clip_x0: float | None = None, sigma_data: float = 0.5):
        super().__init__()
        self.net = net
        self.schedule = schedule
        self.prediction = param.check_prediction(prediction)
        self.clip_x0 = clip_x0
        self.sigma_data = sigma_data
        self.data_shape: tuple[int, ...] | None = None   # the samples' shape and data kind, set by whoever
        self.data_kind: str | None = None                # knows them (trainer, checkpoint, loader)
        self.classes: list[str] | None = None            # names of the classes of a conditional network
        self.encoder: nn.Module | None = None            # the encoder of a latent model (samples are decoded)
        self.sampling: dict[str, Any] | None = None      # the sampler setting it was made for (a distilled student)
        # sigma/alpha at t_min, where a consistency function is the identity (0: not one)
        self.sigma_min = float(schedule.sigma_ratio(schedule.t_min)) if prediction.startswith("consistency_") else 0.0

    @property
    def num_classes(self) -> int:
        """Number of classes of a class-conditional network (0: unconditional); label ``num_classes`` is null."""
        return int(getattr(self.net, "config", {}).get("num_classes", 0) or 0)

    def c_in(self, alpha: Tensor, sigma: Tensor) -> Tensor:
        if param.base_prediction(self.prediction) == "edm":
            return param.edm_coefficients(alpha, sigma, self.sigma_data)[2]
        if self.schedule.variance_preserving:
            return torch.ones_like(alpha)
        return 1.0 / (alpha**2 * self.sigma_data**2 + sigma**2).sqrt()

    def raw(self, x_t: Tensor, t: Tensor | float, alpha_sigma: tuple[Tensor, Tensor] | None = None,
            **cond: Any) -> Tensor:
        """The network output in its own parameterisation (what the training loss compares);
        ``alpha_sigma`` may pass the schedule values at t when the caller has them already."""
        t = as_time(t, x_t)
        return self._net(x_t, t, *(alpha_sigma or self.schedule.alpha_sigma(t)), cond)

    def _net(self, x_t: Tensor, t: Tensor, a: Tensor, s: Tensor, cond: dict[str, Any]) -> Tensor:
        x_in = expand(self.c_in(a, s), x_t) * x_t
        # the schedule computes in float64 on the CPU (MPS has no float64); the network's input goes to x's device
        return self.net(x_in, self.schedule.timestep(t).to(device=x_t.device, dtype=torch.float32), **cond)

    def forward(self, x_t: Tensor, t: Tensor | float, **cond: Any) -> Tensor:
        t = as_time(t, x_t)
        a, s = self.schedule.alpha_sigma(t)
        out = self._net(x_t, t, a, s, cond).to(x_t.dtype)
        x0 = param.to_x0(self.prediction, out, x_t, expand(a, x_t), expand(s, x_t), self.sigma_data, self.sigma_min)
        if self.clip_x0 is not None:
            x0 = x0.clamp(-self.clip_x0, self.clip_x0)
        return x0


def network_dtype(denoiser: nn.Module) -> torch.dtype:
    """The dtype a denoiser's network computes in (float64 for parameter-free oracles): callers that
    keep float64 state (likelihood ODE, ELBO) cast to it before the call."""
    p = next(iter(denoiser.parameters()), None) if hasattr(denoiser, "parameters") else None
    return torch.float64 if p is None else p.dtype


def eps_hat(schedule: Schedule, x_t: Tensor, t: Tensor | float, x0_hat: Tensor) -> Tensor:
    r""":math:`\hat\epsilon = (x_t - \alpha_t\hat x_0)/\sigma_t`."""
    a, s = schedule.alpha_sigma(as_time(t, x_t))
    return param.eps_from_x0(x0_hat, x_t, expand(a, x_t), expand(s, x_t))


def v_hat(schedule: Schedule, x_t: Tensor, t: Tensor | float, x0_hat: Tensor) -> Tensor:
    r""":math:`\hat v = \alpha_t\hat\epsilon - \sigma_t\hat x_0`."""
    a, s = schedule.alpha_sigma(as_time(t, x_t))
    a, s = expand(a, x_t), expand(s, x_t)
    return param.v_from_x0_eps(x0_hat, param.eps_from_x0(x0_hat, x_t, a, s), a, s)


def score_hat(schedule: Schedule, x_t: Tensor, t: Tensor | float, x0_hat: Tensor) -> Tensor:
    r"""Tweedie: :math:`\nabla\log p_t(x_t) \approx (\alpha_t\hat x_0 - x_t)/\sigma_t^2 = -\hat\epsilon/\sigma_t`."""
    a, s = schedule.alpha_sigma(as_time(t, x_t))
    a, s = expand(a, x_t), expand(s, x_t)
    return param.score_from_eps(param.eps_from_x0(x0_hat, x_t, a, s), s)


def evaluations(denoiser: Any) -> int:
    """Network evaluations per sample that ``denoiser``'s last call made: 1 for a network, and what a
    wrapper that calls several (guidance: 2, or 1 outside its interval) reports as ``last_nfe``."""
    return int(getattr(denoiser, "last_nfe", 1))


class NFECounter(nn.Module):
    """Wraps a denoiser and counts network function evaluations per sample, never assumed: a guided call
    that runs two networks (or one on a doubled batch) counts 2 (:func:`evaluations`)."""

    def __init__(self, denoiser: nn.Module):
        super().__init__()
        self.denoiser = denoiser
        self.schedule = denoiser.schedule
        self.nfe = 0
        self.last_nfe = 1

    @property
    def num_classes(self) -> int:
        return int(getattr(self.denoiser, "num_classes", 0))

    def forward(self, x_t: Tensor, t: Tensor | float, **cond: Any) -> Tensor:
        out = self.denoiser(x_t, t, **cond)
        self.last_nfe = evaluations(self.denoiser)
        self.nfe += self.last_nfe
        return out
