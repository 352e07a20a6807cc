r"""Exponential-integrator multistep solvers in log-SNR: DPM-Solver++ (2M, 3M) and SDE-DPM-Solver++(2M).

With :math:`\lambda = \log(\alpha/\sigma)` the exact solution of the probability-flow ODE from s to t is
:math:`x_t = \frac{\sigma_t}{\sigma_s}x_s + \sigma_t\int_{\lambda_s}^{\lambda_t} e^\lambda\hat x_0(\lambda)\,d\lambda`
(Lu et al., DPM-Solver++, arXiv:2211.01095, eq. 9).  Expanding :math:`\hat x_0` in a Taylor series in
:math:`\lambda` around :math:`\lambda_s`, with :math:`h = \lambda_t - \lambda_s`, the k-th term integrates to

* k = 0: :math:`\alpha_t(1 - e^{-h})`,  k = 1: :math:`\alpha_t h(1 + (e^{-h} - 1)/h)`,
* k = 2: :math:`\alpha_t h^2(1/2 - (e^{-h} - 1 + h)/h^2)`,

and divided differences of past :math:`\hat x_0` estimate the derivatives: with :math:`r_0, r_1` the ratios of
the previous steps to h, :math:`D_1 = h\hat x_0'` and :math:`D_2 = (D_{1,0} - D_{1,1})/(r_0 + r_1) = h^2\hat x_0''/2`,
so the k = 2 term weighs :math:`D_2` by :math:`2(1/2 - (e^{-h} - 1 + h)/h^2)`.  The DPM-Solver reference code
(and diffusers) weigh it by half that, which leaves a local error :math:`O(h^3)` and makes "3M" converge
at order 2 only (tests/test_samplers.py measures both); ``dpm_solver_coefficients=True`` reproduces it.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..denoisers.denoiser import DenoiserFn
from ..process.forward import expand
from .grids import grid_alpha_sigma
from .noise import randn_like
from .registry import Callback, Noise, emit, register

__all__ = ["lambdas", "multistep_order", "dpmpp_update", "dpmpp_multistep", "sample_dpmpp_2m", "sample_dpmpp_3m",
           "sample_dpmpp_2m_sde"]


def lambdas(a: Tensor, s: Tensor) -> Tensor:
    r""":math:`\lambda = \log\alpha - \log\sigma` at every grid time (+inf at a final :math:`\sigma = 0`)."""
    with torch.no_grad():
        return torch.log(a) - torch.log(s)


def multistep_order(i: int, n: int, order: int, *, lower_order_final: bool, ends_at_zero: bool,
                    always: bool = False) -> int:
    """Order of step i of n for a multistep solver: it ramps up from 1 as the history fills.  Before a
    final jump to sigma = 0, ``lower_order_final`` lowers the order of the last steps (for fewer
    than 15 steps, or ``always``), the convention of diffusers' multistep schedulers for stability
    at few steps; the jump itself is first order.  Grids that stop at sigma > 0 keep the full order."""
    o = min(order, i + 1)
    if lower_order_final and ends_at_zero and (always or n < 15):
        o = min(o, n - i)
    return o


def dpmpp_update(x: Tensor, x0s: list[Tensor], lam: list[Tensor], *, a_t: Tensor, s_t: Tensor, s_s: Tensor,
                 order: int, d2_weight: float = 2.0) -> Tensor:
    """One DPM-Solver++ multistep update of order 1-3 (data prediction) from s to t; ``x0s`` newest first,
    ``lam = [l_t, l_s0, l_s1, l_s2]``."""
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


def dpmpp_multistep(denoiser: DenoiserFn, x_T: Tensor, ts: Tensor, *, order: int, callback: Callback = None,
                    lower_order_final: bool = True, d2_weight: float = 2.0, cond: dict[str, Any] | None = None
                    ) -> Tensor:
    """Multistep DPM-Solver++ of ``order`` 1-3: one network call per step, the history of x0_hat gives
    the derivatives."""
    cond = cond or {}
    a, s = grid_alpha_sigma(denoiser.schedule, ts)
    lam = lambdas(a, s)
    n, x, x0s = len(ts) - 1, x_T, []
    for i in range(n):
        x0s.insert(0, denoiser(x, ts[i], **cond))
        del x0s[3:]
        o = multistep_order(i, n, order, lower_order_final=lower_order_final, ends_at_zero=bool(s[-1] == 0))
        if s[i + 1] == 0:
            x = x0s[0] * expand(a[i + 1], x)                     # the limit h -> inf of every order
        else:
            lams = [lam[i + 1]] + [lam[i - k] for k in range(min(o, i + 1))]
            x = dpmpp_update(x, x0s, lams + [lam[0]] * (4 - len(lams)), a_t=a[i + 1], s_t=s[i + 1], s_s=s[i],
                             order=o, d2_weight=d2_weight)
        emit(callback, i, ts[i], x, x0s[0])
    return x


@register("dpmpp_2m", order=2, nfe_per_step=1, stochastic=False,
          summary="DPM-Solver++(2M), 2nd-order multistep (Lu et al. 2022)")
def sample_dpmpp_2m(denoiser: DenoiserFn, x_T: Tensor, ts: Tensor, *, generator: Noise = None, callback: Callback = None,
                    lower_order_final: bool = True, **cond: Any) -> Tensor:
    """DPM-Solver++(2M), Lu et al., arXiv:2211.01095, Algorithm 2: one network call per step, the
    previous x0_hat gives the first derivative."""
    return dpmpp_multistep(denoiser, x_T, ts, order=2, callback=callback, lower_order_final=lower_order_final,
                           cond=cond)


@register("dpmpp_3m", order=3, nfe_per_step=1, stochastic=False,
          summary="DPM-Solver++(3M), 3rd-order multistep")
def sample_dpmpp_3m(denoiser: DenoiserFn, x_T: Tensor, ts: Tensor, *, generator: Noise = None, callback: Callback = None,
                    lower_order_final: bool = True, dpm_solver_coefficients: bool = False, **cond: Any) -> Tensor:
    """Third-order multistep DPM-Solver++ (Lu et al., arXiv:2211.01095, sec. 4 / App. B): two
    divided differences of the last three x0_hat estimate the first and second derivatives, weighted
    by the exact Taylor coefficients (order 3).  ``dpm_solver_coefficients=True`` uses the reference
    code's half weight on the second-derivative term instead (as diffusers does; order 2)."""
    return dpmpp_multistep(denoiser, x_T, ts, order=3, callback=callback, lower_order_final=lower_order_final,
                           d2_weight=1.0 if dpm_solver_coefficients else 2.0, cond=cond)


@register("dpmpp_2m_sde", order=2, nfe_per_step=1, stochastic=True,
          summary="SDE-DPM-Solver++(2M), stochastic 2nd-order multistep")
def sample_dpmpp_2m_sde(denoiser: DenoiserFn, x_T: Tensor, ts: Tensor, *, generator: Noise = None,
                        callback: Callback = None, lower_order_final: bool = True, **cond: Any) -> Tensor:
    r"""SDE-DPM-Solver++(2M) (Lu et al., arXiv:2211.01095, App. D; midpoint form): exact integration of
    the linear part of the reverse SDE,
    :math:`x_t = \frac{\sigma_t}{\sigma_s}e^{-h}x_s + \alpha_t(1 - e^{-2h})(\hat x_0 + \tfrac12 D_1) + \sigma_t\sqrt{1-e^{-2h}}\,z`."""
    a, s = grid_alpha_sigma(denoiser.schedule, ts)
    lam = lambdas(a, s)
    n, x, prev = len(ts) - 1, x_T, None
    for i in range(n):
        x0 = denoiser(x, ts[i], **cond)
        if s[i + 1] == 0:
            x = x0 * expand(a[i + 1], x)
        else:
            h = lam[i + 1] - lam[i]
            e2 = -torch.expm1(-2 * h)                           # 1 - e^{-2h}
            x_new = expand(s[i + 1] / s[i] * torch.exp(-h), x) * x + expand(a[i + 1] * e2, x) * x0
            if multistep_order(i, n, 2, lower_order_final=lower_order_final, ends_at_zero=bool(s[-1] == 0)) == 2:
                r0 = (lam[i] - lam[i - 1]) / h
                x_new = x_new + expand(0.5 * a[i + 1] * e2 / r0, x) * (x0 - prev)
            x = x_new + expand(s[i + 1] * e2.sqrt(), x) * randn_like(x, generator)
        prev = x0
        emit(callback, i, ts[i], x, x0)
    return x
