r"""Samplers: short functions over the denoiser contract.

``sample_<name>(denoiser, x_T, ts, *, generator=None, callback=None, **opts) -> x_0``

* ``denoiser(x_t, t) -> x0_hat`` with ``denoiser.schedule``;
* ``ts``: decreasing float64 times ending at 0 (see :mod:`.grids`);
* ``generator``: a ``torch.Generator`` or per-sample :class:`~.noise.SampleNoise`;
* ``callback(info)`` after each step with ``info = {"i", "t", "x", "x0_hat"}`` (x is the new state).

Coefficients are computed in float64 from the schedule; the state keeps the dtype of ``x_T``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

from ..process.forward import expand
from .dopri import dopri5
from .grids import grid_alpha_sigma, logsigma_table
from .noise import SampleNoise, randn_like

__all__ = ["SAMPLERS", "SamplerInfo", "register", "sample_ddpm", "sample_ddim"]

Callback = Callable[[dict[str, Any]], None] | None
Generator = torch.Generator | SampleNoise | None


@dataclass(frozen=True)
class SamplerInfo:
    fn: Callable[..., Tensor]
    order: int
    nfe_per_step: int
    stochastic: bool
    summary: str


SAMPLERS: dict[str, SamplerInfo] = {}


def register(name: str, order: int, nfe_per_step: int, stochastic: bool, summary: str):
    def deco(fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
        SAMPLERS[name] = SamplerInfo(fn, order, nfe_per_step, stochastic, summary)
        return fn
    return deco


def _step(callback: Callback, i: int, t: Tensor, x: Tensor, x0: Tensor) -> None:
    if callback is not None:
        callback({"i": i, "t": t, "x": x, "x0_hat": x0})


def posterior_coefficients(a_t: Tensor, s_t: Tensor, a_s: Tensor, s_s: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    r"""Coefficients of :math:`q(x_s \mid x_t, x_0) = N(c_t x_t + c_0 x_0, v)` from (alpha, sigma) at t and s,
    with :math:`\sigma_{t|s}^2 = \sigma_t^2 - (\alpha_t/\alpha_s)^2\sigma_s^2` (DDPM eq. 7; VDM eq. 28)."""
    a_ts = a_t / a_s
    var_ts = (s_t**2 - a_ts**2 * s_s**2).clamp_min(0.0)
    return a_ts * s_s**2 / s_t**2, a_s * var_ts / s_t**2, var_ts * s_s**2 / s_t**2


@register("ddpm", order=1, nfe_per_step=1, stochastic=True,
          summary="ancestral sampling of the DDPM Markov chain (Ho et al. 2020)")
def sample_ddpm(denoiser, x_T: Tensor, ts: Tensor, *, generator: Generator = None, callback: Callback = None,
                variance: str = "fixed_small", **cond: Any) -> Tensor:
    r"""DDPM ancestral sampling: :math:`x_s \sim q(x_s \mid x_t, x_0 = \hat x_0)` at each step.

    ``variance``: ``fixed_small`` (the posterior variance :math:`\tilde\beta`) or ``fixed_large``
    (the forward variance :math:`\sigma_{t|s}^2`, i.e. :math:`\beta_t` on a full table); Ho et al.,
    arXiv:2006.11239, sec. 3.2.  No noise is added on the final step to t = 0.
    """
    a, s = grid_alpha_sigma(denoiser.schedule, ts)
    x = x_T
    for i in range(len(ts) - 1):
        x0 = denoiser(x, ts[i], **cond)
        c_t, c_0, var = posterior_coefficients(a[i], s[i], a[i + 1], s[i + 1])
        if variance == "fixed_large" and s[i + 1] > 0:
            var = (s[i]**2 - (a[i] / a[i + 1])**2 * s[i + 1]**2).clamp_min(0.0)
        x = expand(c_t, x) * x + expand(c_0, x) * x0
        if s[i + 1] > 0:
            x = x + expand(var.sqrt(), x) * randn_like(x, generator)
        _step(callback, i, ts[i], x, x0)
    return x


@register("ddim", order=1, nfe_per_step=1, stochastic=False,
          summary="DDIM (Song et al. 2021); eta=1 is ancestral, eta=0 deterministic")
def sample_ddim(denoiser, x_T: Tensor, ts: Tensor, *, generator: Generator = None, callback: Callback = None,
                eta: float = 0.0, **cond: Any) -> Tensor:
    r"""DDIM, Song et al., arXiv:2010.02502, eq. 12:
    :math:`x_s = \alpha_s\hat x_0 + \sqrt{\sigma_s^2 - c^2}\,\hat\epsilon + c z`,
    :math:`c = \eta\,\tilde\sigma_{s|t}` (the posterior standard deviation), :math:`\hat\epsilon = (x_t - \alpha_t\hat x_0)/\sigma_t`.
    """
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must be in [0, 1], got {eta}")
    a, s = grid_alpha_sigma(denoiser.schedule, ts)
    x = x_T
    for i in range(len(ts) - 1):
        x0 = denoiser(x, ts[i], **cond)
        eps = (x - expand(a[i], x) * x0) / expand(s[i], x)
        c = eta * posterior_coefficients(a[i], s[i], a[i + 1], s[i + 1])[2].sqrt()
        x = expand(a[i + 1], x) * x0 + expand((s[i + 1]**2 - c**2).clamp_min(0.0).sqrt(), x) * eps
        if c > 0:
            x = x + expand(c, x) * randn_like(x, generator)
        _step(callback, i, ts[i], x, x0)
    return x


# -- ODE samplers in the VE-equivalent variables ------------------------------------------------
# With sigma~ = sigma/alpha and x~ = x/alpha every schedule becomes x~ = x0 + sigma~ eps, and the
# probability-flow ODE is dx~/dsigma~ = (x~ - D(x, t)) / sigma~ (Karras et al. 2022, eq. 3 with
# s(t) = 1).  A final grid time t = 0 has sigma~ = 0 and alpha = 1, so x~ = x there.


def _sig(a: Tensor, s: Tensor) -> Tensor:
    return s / a


def _t_for_sigma(schedule, sig: Tensor) -> Tensor:
    """The time whose sigma/alpha equals ``sig`` (for churned or intermediate noise levels)."""
    from .grids import t_of_logsnr
    return t_of_logsnr(schedule, -2.0 * torch.log(torch.as_tensor(sig, dtype=torch.float64)))


def _d(denoiser, x_tld: Tensor, t: Tensor, a: Tensor, sig: Tensor, cond: dict) -> tuple[Tensor, Tensor]:
    """Evaluate D at x = alpha x~ and return (dx~/dsigma~, x0_hat)."""
    x0 = denoiser(expand(a, x_tld) * x_tld, t, **cond)
    return (x_tld - x0) / expand(sig, x_tld), x0


def _karras(denoiser, x_T: Tensor, ts: Tensor, generator: Generator, callback: Callback, heun: bool,
            s_churn: float, s_tmin: float, s_tmax: float, s_noise: float, cond: dict) -> Tensor:
    """Karras et al. (2022), Algorithm 2 (``heun=True``) and its first-order (Euler) variant."""
    sch = denoiser.schedule
    a, s = grid_alpha_sigma(sch, ts)
    sig = _sig(a, s)
    n = len(ts) - 1
    x = x_T / expand(a[0], x_T)
    for i in range(n):
        gamma = min(s_churn / n, 2**0.5 - 1) if s_tmin <= sig[i] <= s_tmax else 0.0
        sig_hat, t_hat, a_hat = sig[i], ts[i], a[i]
        if gamma > 0:
            sig_hat = sig[i] * (1 + gamma)
            t_hat = _t_for_sigma(sch, sig_hat)
            a_hat = sch.alpha_sigma(t_hat)[0]
            x = x + expand((sig_hat**2 - sig[i]**2).sqrt() * s_noise, x) * randn_like(x, generator)
        d, x0 = _d(denoiser, x, t_hat, a_hat, sig_hat, cond)
        x_next = x + expand(sig[i + 1] - sig_hat, x) * d
        if heun and sig[i + 1] > 0:
            d2, _ = _d(denoiser, x_next, ts[i + 1], a[i + 1], sig[i + 1], cond)
            x_next = x + expand(sig[i + 1] - sig_hat, x) * (d + d2) / 2
        x = x_next
        _step(callback, i, ts[i], x * expand(a[i + 1], x), x0)
    return x * expand(a[-1], x)


@register("euler", order=1, nfe_per_step=1, stochastic=False,
          summary="Euler on the probability-flow ODE (Karras et al. 2022); s_churn adds noise")
def sample_euler(denoiser, x_T: Tensor, ts: Tensor, *, generator: Generator = None, callback: Callback = None,
                 s_churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = float("inf"), s_noise: float = 1.0,
                 **cond: Any) -> Tensor:
    r"""Euler steps of :math:`d\tilde x/d\tilde\sigma = (\tilde x - D)/\tilde\sigma`; with ``s_churn > 0`` the
    noise level is first raised to :math:`\hat\sigma = \sigma_i(1+\gamma)`, :math:`\gamma = \min(S_{churn}/N, \sqrt2 - 1)`
    for :math:`\sigma_i \in [S_{tmin}, S_{tmax}]` (Karras et al., arXiv:2206.00364, Algorithm 2)."""
    return _karras(denoiser, x_T, ts, generator, callback, False, s_churn, s_tmin, s_tmax, s_noise, cond)


@register("heun", order=2, nfe_per_step=2, stochastic=False,
          summary="Heun's 2nd-order method (Karras et al. 2022, Alg. 2); last step Euler")
def sample_heun(denoiser, x_T: Tensor, ts: Tensor, *, generator: Generator = None, callback: Callback = None,
                s_churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = float("inf"), s_noise: float = 1.0,
                **cond: Any) -> Tensor:
    """Heun's method (trapezoidal correction) on the probability-flow ODE; the step to sigma = 0 is
    an Euler step (Karras et al., arXiv:2206.00364, Algorithm 2, with the same churn options)."""
    return _karras(denoiser, x_T, ts, generator, callback, True, s_churn, s_tmin, s_tmax, s_noise, cond)


def ancestral_split(sig_from: Tensor, sig_to: Tensor, eta: float = 1.0) -> tuple[Tensor, Tensor]:
    r"""Split a step :math:`\tilde\sigma_i \to \tilde\sigma_{i+1}` into a deterministic move to
    :math:`\sigma_{down}` and fresh noise :math:`\sigma_{up}`, :math:`\sigma_{down}^2 + \sigma_{up}^2 = \tilde\sigma_{i+1}^2`,
    with :math:`\sigma_{up} = \eta\,\tilde\sigma_{i+1}\sqrt{(\tilde\sigma_i^2 - \tilde\sigma_{i+1}^2)/\tilde\sigma_i^2}` (the DDPM posterior noise)."""
    up = (eta * sig_to * ((sig_from**2 - sig_to**2).clamp_min(0) / sig_from**2).sqrt()).clamp(max=sig_to)
    return (sig_to**2 - up**2).clamp_min(0).sqrt(), up


@register("euler_ancestral", order=1, nfe_per_step=1, stochastic=True,
          summary="Euler step to sigma_down plus fresh noise sigma_up (ancestral)")
def sample_euler_ancestral(denoiser, x_T: Tensor, ts: Tensor, *, generator: Generator = None,
                           callback: Callback = None, eta: float = 1.0, **cond: Any) -> Tensor:
    """Euler-ancestral: an Euler step of the ODE to sigma_down, then noise of std sigma_up
    (:func:`ancestral_split`)."""
    a, s = grid_alpha_sigma(denoiser.schedule, ts)
    sig = _sig(a, s)
    x = x_T / expand(a[0], x_T)
    for i in range(len(ts) - 1):
        d, x0 = _d(denoiser, x, ts[i], a[i], sig[i], cond)
        down, up = ancestral_split(sig[i], sig[i + 1], eta)
        x = x + expand(down - sig[i], x) * d
        if up > 0:
            x = x + expand(up, x) * randn_like(x, generator)
        _step(callback, i, ts[i], x * expand(a[i + 1], x), x0)
    return x * expand(a[-1], x)


# -- exponential-integrator multistep solvers in log-SNR ----------------------------------------
# With lambda = log(alpha/sigma) the exact solution of the probability-flow ODE from s to t is
# x_t = (sigma_t/sigma_s) x_s + sigma_t \int_{lambda_s}^{lambda_t} e^lambda x0_hat(lambda) dlambda
# (Lu et al., DPM-Solver++, arXiv:2211.01095, eq. 9).  Expanding x0_hat in a Taylor series in lambda
# around lambda_s, with h = lambda_t - lambda_s, the k-th term integrates to
#   k=0: alpha_t (1 - e^{-h})           k=1: alpha_t h (1 + (e^{-h} - 1)/h)
#   k=2: alpha_t h^2 (1/2 - (e^{-h} - 1 + h)/h^2)
# and divided differences of past x0_hat values estimate the derivatives: with r0, r1 the ratios of the
# previous steps to h, D1 = h x0' and D2 = (D1_0 - D1_1)/(r0 + r1) = h^2 x0''/2, so the k=2 term
# weighs D2 by 2 (1/2 - (e^{-h} - 1 + h)/h^2).  The DPM-Solver reference code (and diffusers) weigh
# it by half that, which leaves a local error O(h^3) and makes "3M" converge at order 2 only
# (tests/test_samplers.py measures both); ``dpm_solver_coefficients=True`` reproduces it.


def _lambdas(a: Tensor, s: Tensor) -> Tensor:
    with torch.no_grad():
        return torch.log(a) - torch.log(s)  # +inf at the final sigma = 0


def _order_at(i: int, n: int, order: int, lower_order_final: bool, ends_at_zero: bool, always: bool = False) -> int:
    """Order of step i of n for a multistep solver: it ramps up from 1 as the history fills.  Before a
    final jump to sigma = 0, ``lower_order_final`` lowers the order of the last steps (for fewer
    than 15 steps, or ``always``), the convention of diffusers' multistep schedulers for stability
    at few steps; the jump itself is first order.  Grids that stop at sigma > 0 keep the full order."""
    o = min(order, i + 1)
    if lower_order_final and ends_at_zero and (always or n < 15):
        o = min(o, n - i)
    return o


def _dpmpp_update(x: Tensor, x0s: list[Tensor], lam: list[Tensor], a_t: Tensor, s_t: Tensor, s_s: Tensor,
                  order: int, d2_weight: float = 2.0) -> Tensor:
    """One DPM-Solver++ multistep update of order 1-3 (data prediction), lam = [l_t, l_s0, l_s1, l_s2]."""
    h = lam[0] - lam[1]
    e = torch.expm1(-h)                                         # e^{-h} - 1
    out = expand(s_t / s_s, x) * x - expand(a_t * e, x) * x0s[0]
    if order >= 2:
        r0 = (lam[1] - lam[2]) / h
        d1_0 = (x0s[0] - x0s[1]) / expand(r0, x)
        if order == 2:
            return out - expand(0.5 * a_t * e, x) * d1_0
        r1 = (lam[2] - lam[3]) / h
        d1_1 = (x0s[1] - x0s[2]) / expand(r1, x)
        d1 = d1_0 + expand(r0 / (r0 + r1), x) * (d1_0 - d1_1)
        d2 = (d1_0 - d1_1) / expand(r0 + r1, x)
        out = out + expand(a_t * (e / h + 1), x) * d1 - expand(d2_weight * a_t * ((e + h) / h**2 - 0.5), x) * d2
    return out


def _dpmpp_multistep(denoiser, x_T, ts, callback, order: int, lower_order_final: bool, cond: dict,
                     d2_weight: float = 2.0) -> Tensor:
    a, s = grid_alpha_sigma(denoiser.schedule, ts)
    lam = _lambdas(a, s)
    n, x, x0s = len(ts) - 1, x_T, []
    for i in range(n):
        x0s.insert(0, denoiser(x, ts[i], **cond))
        del x0s[3:]
        o = _order_at(i, n, order, lower_order_final, bool(s[-1] == 0))
        if s[i + 1] == 0:
            x = x0s[0] * expand(a[i + 1], x)                     # the limit h -> inf of every order
        else:
            lams = [lam[i + 1]] + [lam[i - k] for k in range(min(o, i + 1))]
            x = _dpmpp_update(x, x0s, lams + [lam[0]] * (4 - len(lams)), a[i + 1], s[i + 1], s[i], o, d2_weight)
        _step(callback, i, ts[i], x, x0s[0])
    return x


@register("dpmpp_2m", order=2, nfe_per_step=1, stochastic=False,
          summary="DPM-Solver++(2M), 2nd-order multistep (Lu et al. 2022)")
def sample_dpmpp_2m(denoiser, x_T: Tensor, ts: Tensor, *, generator: Generator = None, callback: Callback = None,
                    lower_order_final: bool = True, **cond: Any) -> Tensor:
    """DPM-Solver++(2M), Lu et al., arXiv:2211.01095, Algorithm 2: one network call per step, the
    previous x0_hat gives the first derivative."""
    return _dpmpp_multistep(denoiser, x_T, ts, callback, 2, lower_order_final, cond)


@register("dpmpp_3m", order=3, nfe_per_step=1, stochastic=False,
          summary="DPM-Solver++(3M), 3rd-order multistep")
def sample_dpmpp_3m(denoiser, x_T: Tensor, ts: Tensor, *, generator: Generator = None, callback: Callback = None,
                    lower_order_final: bool = True, dpm_solver_coefficients: bool = False, **cond: Any) -> Tensor:
    """Third-order multistep DPM-Solver++ (Lu et al., arXiv:2211.01095, sec. 4 / App. B): two
    divided differences of the last three x0_hat estimate the first and second derivatives, weighted
    by the exact Taylor coefficients (order 3).  ``dpm_solver_coefficients=True`` uses the reference
    code's half weight on the second-derivative term instead (as diffusers does; order 2)."""
    return _dpmpp_multistep(denoiser, x_T, ts, callback, 3, lower_order_final, cond,
                            1.0 if dpm_solver_coefficients else 2.0)


@register("dpmpp_2m_sde", order=2, nfe_per_step=1, stochastic=True,
          summary="SDE-DPM-Solver++(2M), stochastic 2nd-order multistep")
def sample_dpmpp_2m_sde(denoiser, x_T: Tensor, ts: Tensor, *, generator: Generator = None,
                        callback: Callback = None, lower_order_final: bool = True, **cond: Any) -> Tensor:
    r"""SDE-DPM-Solver++(2M) (Lu et al., arXiv:2211.01095, App. D; midpoint form): exact integration of
    the linear part of the reverse SDE,
    :math:`x_t = \frac{\sigma_t}{\sigma_s}e^{-h}x_s + \alpha_t(1 - e^{-2h})(\hat x_0 + \tfrac12 D_1) + \sigma_t\sqrt{1-e^{-2h}}\,z`."""
    a, s = grid_alpha_sigma(denoiser.schedule, ts)
    lam = _lambdas(a, s)
    n, x, prev = len(ts) - 1, x_T, None
    for i in range(n):
        x0 = denoiser(x, ts[i], **cond)
        if s[i + 1] == 0:
            x = x0 * expand(a[i + 1], x)
        else:
            h = lam[i + 1] - lam[i]
            e2 = -torch.expm1(-2 * h)                           # 1 - e^{-2h}
            x_new = expand(s[i + 1] / s[i] * torch.exp(-h), x) * x + expand(a[i + 1] * e2, x) * x0
            if _order_at(i, n, 2, lower_order_final, bool(s[-1] == 0)) == 2:
                r0 = (lam[i] - lam[i - 1]) / h
                x_new = x_new + expand(0.5 * a[i + 1] * e2 / r0, x) * (x0 - prev)
            x = x_new + expand(s[i + 1] * e2.sqrt(), x) * randn_like(x, generator)
        prev = x0
        _step(callback, i, ts[i], x, x0)
    return x


def _unipc_coefficients(rks: Tensor, hh: Tensor, order: int) -> tuple[Tensor, Tensor]:
    r"""The order conditions of UniPC with B(h) = e^{hh} - 1 ("bh2"; hh = -h for data prediction),
    Zhao et al., arXiv:2302.04867, Theorem 3.1 / Algorithm 2: :math:`R_{kj} = r_j^{k}` (k = 0..p-1) and
    :math:`b_k = k!\,\psi_{k+1}(hh)/B(hh)` with :math:`\psi_{2} = (e^{hh} - 1)/hh - 1` and
    :math:`\psi_{k+1} = \psi_k/hh - 1/k!` (the scaled phi-functions of exponential integrators)."""
    phi = torch.expm1(hh) / hh - 1                              # h*phi_2 form used recursively
    b_h = torch.expm1(hh)
    R, b, fact = [], [], 1
    for k in range(1, order + 1):
        R.append(rks ** (k - 1))
        b.append(phi * fact / b_h)
        fact *= k + 1
        phi = phi / hh - 1 / fact
    return torch.stack(R), torch.stack(b)


@register("unipc", order=3, nfe_per_step=1, stochastic=False,
          summary="UniPC (bh2) predictor-corrector multistep, order 2 or 3 (Zhao et al. 2023)")
def sample_unipc(denoiser, x_T: Tensor, ts: Tensor, *, generator: Generator = None, callback: Callback = None,
                 order: int = 2, lower_order_final: bool = True, corrector: bool = True, **cond: Any) -> Tensor:
    r"""UniPC with data prediction and :math:`B(h) = e^{h}-1` (bh2), Zhao et al., arXiv:2302.04867.

    Each step: evaluate :math:`\hat x_0` at the new point; the corrector UniC (order p + 1, no extra
    network call) refines that point using the new evaluation; then the predictor UniP of order p
    moves on.  The evaluation kept for the history is the one at the uncorrected point.
    """
    if order not in (1, 2, 3):
        raise ValueError(f"UniPC order must be 1, 2 or 3, got {order}")
    a, s = grid_alpha_sigma(denoiser.schedule, ts)
    lam = _lambdas(a, s)
    n, x, hist, hist_i = len(ts) - 1, x_T, [], []                # hist[0] is the newest x0_hat
    last_x, last_order = None, 1

    def update(x_s: Tensor, i_s: int, i_t: int, o: int, x0_t: Tensor | None) -> Tensor:
        """UniP (x0_t None) or UniC (x0_t: the evaluation at t) from point i_s to i_t."""
        h = lam[i_t] - lam[i_s]
        hh = -h
        m0 = hist[0]
        base = expand(s[i_t] / s[i_s], x_s) * x_s - expand(a[i_t] * torch.expm1(hh), x_s) * m0
        rks = [(lam[hist_i[k]] - lam[i_s]) / h for k in range(1, o)]
        d1s = [(hist[k] - m0) / expand(r, m0) for k, r in zip(range(1, o), rks)]
        R, b = _unipc_coefficients(torch.stack(rks + [torch.ones((), dtype=torch.float64)]), hh, o)
        b_h = torch.expm1(hh)
        if x0_t is None:                                         # predictor UniP-p
            if not d1s:
                return base
            rhos = torch.tensor([0.5], dtype=torch.float64) if o == 2 else torch.linalg.solve(R[:-1, :-1], b[:-1])
            res = sum(expand(r, m0) * d for r, d in zip(rhos, d1s))
            return base - expand(a[i_t] * b_h, x_s) * res
        rhos = torch.tensor([0.5], dtype=torch.float64) if o == 1 else torch.linalg.solve(R, b)
        res = sum((expand(r, m0) * d for r, d in zip(rhos[:-1], d1s)), torch.zeros_like(m0))
        return base - expand(a[i_t] * b_h, x_s) * (res + expand(rhos[-1], m0) * (x0_t - m0))

    for i in range(n):
        x0 = denoiser(x, ts[i], **cond)
        if corrector and last_x is not None:
            x = update(last_x, i - 1, i, last_order, x0)
        hist.insert(0, x0)
        hist_i.insert(0, i)
        del hist[order:], hist_i[order:]
        o = _order_at(i, n, order, lower_order_final, bool(s[-1] == 0), always=True)
        last_x, last_order = x, o
        x = x0 * expand(a[i + 1], x) if s[i + 1] == 0 else update(x, i, i + 1, o, None)
        _step(callback, i, ts[i], x, x0)
    return x


# -- score-based samplers -----------------------------------------------------------------------
def _per_sample_norm(v: Tensor) -> Tensor:
    return v.flatten(1).norm(dim=1)


@register("pc", order=1, nfe_per_step=2, stochastic=True,
          summary="predictor-corrector: ancestral predictor + Langevin corrector (Song et al. 2021)")
def sample_pc(denoiser, x_T: Tensor, ts: Tensor, *, generator: Generator = None, callback: Callback = None,
              snr: float = 0.16, corrector_steps: int = 1, step_rule: str = "sigma", **cond: Any) -> Tensor:
    r"""Predictor-corrector sampling, Song et al., arXiv:2011.13456, Algorithms 2-5.

    Predictor: the ancestral step :math:`x_s \sim q(x_s \mid x_t, \hat x_0)` (as :func:`sample_ddpm`).
    Corrector at the new time s: ``corrector_steps`` Langevin steps
    :math:`x \leftarrow x + \epsilon\nabla\log p_s(x) + \sqrt{2\epsilon}\,z`, score
    :math:`(\alpha_s\hat x_0 - x)/\sigma_s^2`, with the signal-to-noise step size
    :math:`\epsilon = 2\alpha_i(r\lVert z\rVert/\lVert\nabla\rVert)^2` (r = ``snr``;
    :math:`\alpha_i = (\alpha_t/\alpha_s)^2`, 1 for VE).

    ``step_rule``: ``"snr"`` measures both norms as batch means, as Song et al.'s code does (samples then
    depend on their batch); ``"sigma"`` (default) uses their noise-dominated value
    :math:`\lVert\nabla\rVert \approx \lVert z\rVert/\sigma_s`, i.e. :math:`\epsilon = 2\alpha_i r^2\sigma_s^2`,
    the same for every sample (and stable in low dimension, where per-sample norms are not).
    NFE per step: 1 + ``corrector_steps``.
    """
    if step_rule not in ("sigma", "snr"):
        raise ValueError(f"step_rule must be 'sigma' or 'snr', got {step_rule!r}")
    a, s = grid_alpha_sigma(denoiser.schedule, ts)
    x = x_T
    for i in range(len(ts) - 1):
        x0 = denoiser(x, ts[i], **cond)
        c_t, c_0, var = posterior_coefficients(a[i], s[i], a[i + 1], s[i + 1])
        x = expand(c_t, x) * x + expand(c_0, x) * x0
        if s[i + 1] > 0:
            x = x + expand(var.sqrt(), x) * randn_like(x, generator)
            alpha_i = min(1.0, float((a[i] / a[i + 1]) ** 2))
            for _ in range(corrector_steps):
                grad = (expand(a[i + 1], x) * denoiser(x, ts[i + 1], **cond) - x) / expand(s[i + 1] ** 2, x)
                z = randn_like(x, generator)
                if step_rule == "snr":
                    ratio = _per_sample_norm(z).mean() / _per_sample_norm(grad).mean()
                else:
                    ratio = s[i + 1]
                eps = 2 * alpha_i * (snr * ratio) ** 2
                x = x + expand(eps, x) * grad + expand((2 * eps).sqrt(), x) * z
        _step(callback, i, ts[i], x, x0)
    return x


@register("ald", order=1, nfe_per_step=10, stochastic=True,
          summary="annealed Langevin dynamics over the noise levels (Song & Ermon 2019)")
def sample_ald(denoiser, x_T: Tensor, ts: Tensor, *, generator: Generator = None, callback: Callback = None,
               steps_per_level: int = 10, epsilon: float | None = None, denoise: bool = True, **cond: Any) -> Tensor:
    r"""Annealed Langevin dynamics, Song & Ermon, arXiv:1907.05600, Algorithm 1, in the VE-equivalent
    variables :math:`\tilde x = x/\alpha`, :math:`\tilde\sigma = \sigma/\alpha`: for each noise level of the grid,
    ``steps_per_level`` steps :math:`\tilde x \leftarrow \tilde x + \tfrac{\eta_i}{2}\nabla\log p + \sqrt{\eta_i}\,z`,
    :math:`\eta_i = \epsilon\,\tilde\sigma_i^2/\tilde\sigma_L^2`, score :math:`(\hat x_0 - \tilde x)/\tilde\sigma_i^2`.
    ``epsilon`` defaults to :math:`0.1\tilde\sigma_L^2`.  With ``denoise`` the result is :math:`\hat x_0` at the
    last level (Jolicoeur-Martineau et al., arXiv:2009.05475), one more network call.
    It needs geometric noise levels from a moderate sigma (NCSN: 50): ``--grid logsnr --sigma-max 50``;
    from the sigma/alpha of about 3e4 that VP schedules reach at t = 1 a few Langevin steps per level
    cannot bring the state down.
    """
    a, s = grid_alpha_sigma(denoiser.schedule, ts)
    sig = _sig(a, s)
    levels = [i for i in range(len(ts)) if sig[i] > 0]
    sig_L = sig[levels[-1]]
    eps0 = 0.1 * sig_L**2 if epsilon is None else epsilon
    x = x_T / expand(a[0], x_T)
    x0 = x
    for i in levels:
        eta = eps0 * sig[i] ** 2 / sig_L**2
        for _ in range(steps_per_level):
            x0 = denoiser(expand(a[i], x) * x, ts[i], **cond)
            x = x + expand(eta / 2, x) * (x0 - x) / expand(sig[i] ** 2, x) + expand(eta.sqrt(), x) * randn_like(x, generator)
        _step(callback, i, ts[i], x * expand(a[i], x), x0)
    if denoise:
        i = levels[-1]
        return denoiser(expand(a[i], x) * x, ts[i], **cond)
    return x * expand(a[levels[-1]], x)


@register("ode", order=5, nfe_per_step=6, stochastic=False,
          summary="probability-flow ODE, adaptive Dormand-Prince RK45 (rtol/atol), NFE reported")
def sample_ode(denoiser, x_T: Tensor, ts: Tensor, *, generator: Generator = None, callback: Callback = None,
               rtol: float = 1e-4, atol: float = 1e-4, t_end: float | None = None, stats: dict | None = None,
               **cond: Any) -> Tensor:
    r"""The probability-flow ODE (Song et al., arXiv:2011.13456, eq. 13) in :math:`u = \log\tilde\sigma`,
    :math:`d\tilde x/du = \tilde x - \hat x_0`, integrated by the adaptive Dormand-Prince 5(4) pair from
    ``ts[0]`` down to ``t_end``; the solver chooses its own steps, so only the grid's first and last
    times matter.  A grid ending at 0 integrates to ``t_end`` (default: the first step of a discrete
    table, 1/T, or 1e-3) and returns :math:`\hat x_0` there; otherwise it integrates to ``ts[-1]``.
    The error norm is the RMS over the whole batch of err / (atol + rtol |x~|).  ``stats`` (a dict)
    receives ``nfe``, ``steps`` and ``rejected``.
    """
    sch = denoiser.schedule
    ts = torch.as_tensor(ts, dtype=torch.float64)
    final_jump = bool(ts[-1] == 0)
    if not final_jump:
        t_end = float(ts[-1])
    elif t_end is None:
        t_end = 1.0 / sch.T if getattr(sch, "discrete", False) else 1e-3
    t_end = torch.tensor(t_end, dtype=torch.float64)
    if not float(ts[0]) > float(t_end) > 0:
        raise ValueError(f"the ODE sampler integrates from ts[0] down to a positive time; got {float(ts[0])} "
                         f"-> {float(t_end)}")
    u_tab, t_of = logsigma_table(sch, float(ts[0]), float(t_end))
    u0, u1 = float(u_tab[-1]), float(u_tab[0])

    def f(u: float, y: Tensor) -> Tensor:
        t = t_of(u)
        return y - denoiser(expand(sch.alpha_sigma(t)[0], y) * y, t, **cond)

    def on_step(u: float, y: Tensor, dy: Tensor) -> None:
        if callback is not None:
            t = t_of(u)
            _step(callback, counter["steps"], t, y * expand(sch.alpha_sigma(t)[0], y), y - dy)
        counter["steps"] += 1

    counter = {"steps": 0}
    y0 = x_T / expand(sch.alpha_sigma(ts[0])[0], x_T)
    y, st = dopri5(f, y0, u0, u1, rtol, atol, on_step=on_step)
    nfe, steps, rejected = st["nfe"], st["steps"], st["rejected"]
    x = y * expand(sch.alpha_sigma(t_end)[0], y)
    if final_jump:
        x = denoiser(x, t_end, **cond)
        nfe += 1
    if stats is not None:
        stats.update(nfe=nfe, steps=steps, rejected=rejected)
    return x
