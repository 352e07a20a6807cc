r"""ODE samplers in the VE-equivalent variables (Karras et al., EDM, arXiv:2206.00364): Euler, Heun and
Euler-ancestral.

With :math:`\tilde\sigma = \sigma/\alpha` and :math:`\tilde x = x/\alpha` every schedule becomes
:math:`\tilde x = x_0 + \tilde\sigma\epsilon`, and the probability-flow ODE is
:math:`d\tilde x/d\tilde\sigma = (\tilde x - D(x, t))/\tilde\sigma` (eq. 3 with s(t) = 1).  A final grid time
t = 0 has :math:`\tilde\sigma = 0` and :math:`\alpha = 1`, so :math:`\tilde x = x` there.
"""
from __future__ import annotations

from typing import Any

from torch import Tensor

from ..denoisers.denoiser import DenoiserFn
from ..process.forward import expand
from .grids import grid_alpha_sigma
from .noise import randn_like
from .registry import Callback, Noise, emit, register

__all__ = ["ode_derivative", "churn", "ancestral_split", "sample_euler", "sample_heun", "sample_euler_ancestral"]


def ode_derivative(denoiser: DenoiserFn, x_tld: Tensor, t: Tensor, alpha: Tensor, sig: Tensor, cond: dict[str, Any]
                   ) -> tuple[Tensor, Tensor]:
    r"""Evaluate D at :math:`x = \alpha\tilde x` and return :math:`(d\tilde x/d\tilde\sigma, \hat x_0)`."""
    x0 = denoiser(expand(alpha, x_tld) * x_tld, t, **cond)
    return (x_tld - x0) / expand(sig, x_tld), x0


def churn(denoiser: DenoiserFn, x_tld: Tensor, t: Tensor, alpha: Tensor, sig: Tensor, *, gamma: float, s_noise: float,
          generator: Noise) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    r"""Raise the noise level to :math:`\hat\sigma = \tilde\sigma(1+\gamma)` by adding noise of standard deviation
    :math:`S_{noise}\sqrt{\hat\sigma^2 - \tilde\sigma^2}` (Karras et al., Algorithm 2, lines 4-6).
    Returns the new state and the time, alpha and sigma~ of that level (unchanged when gamma is 0)."""
    if gamma <= 0:
        return x_tld, t, alpha, sig
    sch = denoiser.schedule
    sig_hat = sig * (1 + gamma)
    t_hat = sch.t_of_sigma_ratio(sig_hat)
    x_tld = x_tld + expand((sig_hat**2 - sig**2).sqrt() * s_noise, x_tld) * randn_like(x_tld, generator)
    return x_tld, t_hat, sch.alpha_sigma(t_hat)[0], sig_hat


def _karras(denoiser: DenoiserFn, x_T: Tensor, ts: Tensor, *, heun: bool, generator: Noise, callback: Callback,
            s_churn: float, s_tmin: float, s_tmax: float, s_noise: float, cond: dict[str, Any]) -> Tensor:
    """Karras et al. (2022), Algorithm 2 (``heun=True``) and its first-order (Euler) variant."""
    a, s = grid_alpha_sigma(denoiser.schedule, ts)
    sig = s / a
    n = len(ts) - 1
    x = x_T / expand(a[0], x_T)
    for i in range(n):
        gamma = min(s_churn / n, 2**0.5 - 1) if s_tmin <= sig[i] <= s_tmax else 0.0
        x, t_hat, a_hat, sig_hat = churn(denoiser, x, ts[i], a[i], sig[i], gamma=gamma, s_noise=s_noise,
                                         generator=generator)
        d, x0 = ode_derivative(denoiser, x, t_hat, a_hat, sig_hat, cond)
        x_next = x + expand(sig[i + 1] - sig_hat, x) * d
        if heun and sig[i + 1] > 0:
            d2, _ = ode_derivative(denoiser, x_next, ts[i + 1], a[i + 1], sig[i + 1], cond)
            x_next = x + expand(sig[i + 1] - sig_hat, x) * (d + d2) / 2
        x = x_next
        emit(callback, i, ts[i], x * expand(a[i + 1], x), x0)
    return x * expand(a[-1], x)


@register("euler", order=1, nfe_per_step=1, stochastic="s_churn",
          summary="Euler on the probability-flow ODE (Karras et al. 2022); s_churn adds noise")
def sample_euler(denoiser: DenoiserFn, x_T: Tensor, ts: Tensor, *, generator: Noise = None, callback: Callback = None,
                 s_churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = float("inf"), s_noise: float = 1.0,
                 **cond: Any) -> Tensor:
    r"""Euler steps of :math:`d\tilde x/d\tilde\sigma = (\tilde x - D)/\tilde\sigma`; with ``s_churn > 0`` the
    noise level is first raised to :math:`\hat\sigma = \sigma_i(1+\gamma)`, :math:`\gamma = \min(S_{churn}/N, \sqrt2 - 1)`
    for :math:`\sigma_i \in [S_{tmin}, S_{tmax}]` (Karras et al., arXiv:2206.00364, Algorithm 2)."""
    return _karras(denoiser, x_T, ts, heun=False, generator=generator, callback=callback, s_churn=s_churn,
                   s_tmin=s_tmin, s_tmax=s_tmax, s_noise=s_noise, cond=cond)


@register("heun", order=2, nfe_per_step=2, stochastic="s_churn", grid="karras", sigma_max=80.0,
          budget=lambda nfe: ((nfe + 1) // 2, {}),   # 2 evaluations a step, 1 on the last (Euler) one
          summary="Heun's 2nd-order method (Karras et al. 2022, Alg. 2); last step Euler")
def sample_heun(denoiser: DenoiserFn, x_T: Tensor, ts: Tensor, *, generator: Noise = None, callback: Callback = None,
                s_churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = float("inf"), s_noise: float = 1.0,
                **cond: Any) -> Tensor:
    """Heun's method (trapezoidal correction) on the probability-flow ODE; the step to sigma = 0 is
    an Euler step (Karras et al., arXiv:2206.00364, Algorithm 2, with the same churn options).
    Start it where sigma/alpha is about 80 (``sigma_max``): from the ~3e4 of a VP schedule at t = 1 its
    second-order correction overshoots."""
    return _karras(denoiser, x_T, ts, heun=True, generator=generator, callback=callback, s_churn=s_churn,
                   s_tmin=s_tmin, s_tmax=s_tmax, s_noise=s_noise, cond=cond)


def ancestral_split(sig_from: Tensor, sig_to: Tensor, eta: float = 1.0) -> tuple[Tensor, Tensor]:
    r"""Split a step :math:`\tilde\sigma_i \to \tilde\sigma_{i+1}` into a deterministic move to
    :math:`\sigma_{down}` and fresh noise :math:`\sigma_{up}`, :math:`\sigma_{down}^2 + \sigma_{up}^2 = \tilde\sigma_{i+1}^2`,
    with :math:`\sigma_{up} = \eta\,\tilde\sigma_{i+1}\sqrt{(\tilde\sigma_i^2 - \tilde\sigma_{i+1}^2)/\tilde\sigma_i^2}` (the DDPM posterior noise)."""
    up = (eta * sig_to * ((sig_from**2 - sig_to**2).clamp_min(0) / sig_from**2).sqrt()).clamp(max=sig_to)
    return (sig_to**2 - up**2).clamp_min(0).sqrt(), up


@register("euler_ancestral", order=1, nfe_per_step=1, stochastic="eta",
          summary="Euler step to sigma_down plus fresh noise sigma_up (ancestral)")
def sample_euler_ancestral(denoiser: DenoiserFn, x_T: Tensor, ts: Tensor, *, generator: Noise = None,
                           callback: Callback = None, eta: float = 1.0, **cond: Any) -> Tensor:
    """Euler-ancestral: an Euler step of the ODE to sigma_down, then noise of std sigma_up
    (:func:`ancestral_split`)."""
    a, s = grid_alpha_sigma(denoiser.schedule, ts)
    sig = s / a
    x = x_T / expand(a[0], x_T)
    for i in range(len(ts) - 1):
        d, x0 = ode_derivative(denoiser, x, ts[i], a[i], sig[i], cond)
        down, up = ancestral_split(sig[i], sig[i + 1], eta)
        x = x + expand(down - sig[i], x) * d
        if up > 0:
            x = x + expand(up, x) * randn_like(x, generator)
        emit(callback, i, ts[i], x * expand(a[i + 1], x), x0)
    return x * expand(a[-1], x)

