r"""Ancestral samplers of the Markov chain: DDPM, and DDIM's family that contains it.

Both step from time :math:`t` to the earlier :math:`s` through the posterior
:math:`q(x_s \mid x_t, x_0 = \hat x_0)` (:func:`~difflab.process.forward.posterior_coefficients`).
"""
from __future__ import annotations

from typing import Any, Callable

from torch import Tensor

from ..denoisers.denoiser import DenoiserFn
from ..errors import DifflabError
from ..process.forward import expand, posterior_coefficients, transition_coefficients
from .grids import grid_alpha_sigma
from .noise import randn_like
from .registry import Callback, Noise, emit, register

__all__ = ["ancestral_step", "ancestral_chain", "sample_ddpm", "sample_repaint", "sample_ddim"]

VARIANCES = ("fixed_small", "fixed_large")


def ancestral_step(x: Tensor, x0: Tensor, a_t: Tensor, s_t: Tensor, a_s: Tensor, s_s: Tensor, *,
                   generator: Noise = None, variance: str = "fixed_small") -> Tensor:
    r"""One DDPM step :math:`x_s \sim N(c_t x_t + c_0\hat x_0, v)` from t to the earlier s.

    ``variance``: ``fixed_small``, the posterior variance :math:`\tilde\beta`, or ``fixed_large``, the forward
    variance :math:`\sigma_{t|s}^2` (:math:`\beta_t` on a full table); Ho et al., arXiv:2006.11239, sec. 3.2.
    No noise is added on a step to :math:`\sigma_s = 0`."""
    c_t, c_0, var = posterior_coefficients(a_s, s_s, a_t, s_t)
    if variance == "fixed_large" and s_s > 0:
        var = transition_coefficients(a_s, s_s, a_t, s_t)[1]
    x = expand(c_t, x) * x + expand(c_0, x) * x0
    if s_s > 0:
        x = x + expand(var.sqrt(), x) * randn_like(x, generator)
    return x


def ancestral_chain(denoiser: DenoiserFn, x_T: Tensor, ts: Tensor, *, generator: Noise = None,
                    callback: Callback = None, variance: str = "fixed_small",
                    corrector: Callable[[Tensor, int], Tensor] | None = None, cond: dict[str, Any] | None = None
                    ) -> Tensor:
    """The DDPM chain over the grid: an :func:`ancestral_step` per step, then, where the new time still
    has noise, ``corrector(x, i + 1)`` (the Langevin corrector of predictor-corrector sampling)."""
    if variance not in VARIANCES:
        raise DifflabError(f"DDPM variance must be one of {', '.join(VARIANCES)}, got {variance!r}")
    cond = cond or {}
    a, s = grid_alpha_sigma(denoiser.schedule, ts)
    x = x_T
    for i in range(len(ts) - 1):
        x0 = denoiser(x, ts[i], **cond)
        x = ancestral_step(x, x0, a[i], s[i], a[i + 1], s[i + 1], generator=generator, variance=variance)
        if corrector is not None and s[i + 1] > 0:
            x = corrector(x, i + 1)
        emit(callback, i, ts[i], x, x0)
    return x


@register("ddpm", order=1, nfe_per_step=1, stochastic=True,
          summary="ancestral sampling of the DDPM Markov chain (Ho et al. 2020)")
def sample_ddpm(denoiser: DenoiserFn, x_T: Tensor, ts: Tensor, *, generator: Noise = None, callback: Callback = None,
                variance: str = "fixed_small", **cond: Any) -> Tensor:
    r"""DDPM ancestral sampling: :math:`x_s \sim q(x_s \mid x_t, x_0 = \hat x_0)` at each step
    (:func:`ancestral_step`; ``variance`` fixed_small or fixed_large)."""
    return ancestral_chain(denoiser, x_T, ts, generator=generator, callback=callback, variance=variance, cond=cond)


@register("repaint", order=1, nfe_per_step=lambda o: o["resample"], stochastic=True,
          budget=lambda nfe: (max(1, (nfe - 1) // 10 + 1), {}),   # 10 evaluations a step, 1 on the last
          summary="DDPM with RePaint resampling: each step undone and redone (Lugmayr et al. 2022)")
def sample_repaint(denoiser: DenoiserFn, x_T: Tensor, ts: Tensor, *, generator: Noise = None,
                   callback: Callback = None, resample: int = 10, **cond: Any) -> Tensor:
    r"""RePaint's resampling (Lugmayr et al., arXiv:2201.09865, Algorithm 1 with jump length 1): each DDPM step
    from t to s is taken ``resample`` times; between them the state goes back from s to t by the forward
    transition :math:`q(x_t \mid x_s)`, which lets a constrained denoiser's known and generated parts
    harmonise (use it with :class:`~difflab.guidance.ConstrainedDenoiser`)."""
    if resample < 1:
        raise DifflabError(f"resample must be >= 1, got {resample}")
    a, s = grid_alpha_sigma(denoiser.schedule, ts)
    x = x_T
    for i in range(len(ts) - 1):
        for u in range(resample):
            x0 = denoiser(x, ts[i], **cond)
            x_s = ancestral_step(x, x0, a[i], s[i], a[i + 1], s[i + 1], generator=generator)
            if u == resample - 1 or s[i + 1] == 0:
                break
            a_ts, var = transition_coefficients(a[i + 1], s[i + 1], a[i], s[i])
            x = expand(a_ts, x_s) * x_s + expand(var.sqrt(), x_s) * randn_like(x_s, generator)
        x = x_s
        emit(callback, i, ts[i], x, x0)
    return x


@register("ddim", order=1, nfe_per_step=1, stochastic="eta",
          summary="DDIM (Song et al. 2021); eta=1 is ancestral, eta=0 deterministic")
def sample_ddim(denoiser: DenoiserFn, x_T: Tensor, ts: Tensor, *, generator: Noise = None, callback: Callback = None,
                eta: float = 0.0, **cond: Any) -> Tensor:
    r"""DDIM, Song et al., arXiv:2010.02502, eq. 12:
    :math:`x_s = \alpha_s\hat x_0 + \sqrt{\sigma_s^2 - c^2}\,\hat\epsilon + c z`,
    :math:`c = \eta\,\tilde\sigma_{s|t}` (the posterior standard deviation), :math:`\hat\epsilon = (x_t - \alpha_t\hat x_0)/\sigma_t`.
    """
    if not 0.0 <= eta <= 1.0:
        raise DifflabError(f"eta must be in [0, 1], got {eta}")
    a, s = grid_alpha_sigma(denoiser.schedule, ts)
    x = x_T
    for i in range(len(ts) - 1):
        x0 = denoiser(x, ts[i], **cond)
        eps = (x - expand(a[i], x) * x0) / expand(s[i], x)
        c = eta * posterior_coefficients(a[i + 1], s[i + 1], a[i], s[i])[2].sqrt()
        x = expand(a[i + 1], x) * x0 + expand((s[i + 1]**2 - c**2).clamp_min(0.0).sqrt(), x) * eps
        if c > 0:
            x = x + expand(c, x) * randn_like(x, generator)
        emit(callback, i, ts[i], x, x0)
    return x
