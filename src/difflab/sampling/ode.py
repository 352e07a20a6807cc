r"""The probability-flow ODE, its time variable and an adaptive Dormand-Prince integrator: shared by the
``ode`` sampler and the exact likelihood (:mod:`difflab.metrics.likelihood`).

In the VE-equivalent variables :math:`\tilde x = x/\alpha`, :math:`\tilde\sigma = \sigma/\alpha` and the
time :math:`u = \log\tilde\sigma`, the probability-flow ODE of every schedule (Song et al.,
arXiv:2011.13456, eq. 13; Karras et al., arXiv:2206.00364, eq. 3) is

.. math:: \frac{d\tilde x}{du} = \tilde x - D(\alpha_t\tilde x, t), \qquad t = t(u),

smooth in u also near the data end, where t(u) is steep.  :func:`log_sigma_time` tabulates t(u).
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from ..denoisers.denoiser import DenoiserFn
from ..errors import DifflabError
from ..process.forward import expand
from ..process.schedules import Schedule
from .registry import Callback, Noise, emit, register

__all__ = ["dopri5", "log_sigma_time", "pf_ode_derivative", "sample_ode"]

# Dormand & Prince (1980), J. Comput. Appl. Math. 6(1), RK5(4)7FM
_C = [0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0]
_A = [[], [1 / 5], [3 / 40, 9 / 40], [44 / 45, -56 / 15, 32 / 9],
      [19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729],
      [9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656]]
_B5 = [35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0]
_B4 = [5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40]


def dopri5(f: Callable[[float, Tensor], Tensor], y: Tensor, u0: float, u1: float, rtol: float = 1e-4,
           atol: float = 1e-4, h0: float | None = None,
           on_step: Callable[[int, float, Tensor, Tensor], None] | None = None) -> tuple[Tensor, dict]:
    """Integrate dy/du = f(u, y) from u0 to u1 (either direction) with the Dormand-Prince 5(4) pair
    (first-same-as-last; step control h <- h min(5, max(0.2, 0.9 e^(-1/5))) on the RMS error norm over the
    whole tensor).  ``on_step(k, u, y, f(u, y))`` after the k-th accepted step.  Returns y(u1) and
    ``{"nfe", "steps", "rejected"}``."""
    sign = 1.0 if u1 >= u0 else -1.0
    h = h0 if h0 is not None else (u1 - u0) / 50
    u, k1 = u0, f(u0, y)
    stats = {"nfe": 1, "steps": 0, "rejected": 0}
    while (u1 - u) * sign > 1e-12:
        h = max(h, u1 - u) if sign < 0 else min(h, u1 - u)
        ks = [k1]
        for j in range(1, 6):
            ks.append(f(u + _C[j] * h, y + h * sum(c * k for c, k in zip(_A[j], ks))))
        y5 = y + h * sum(b * k for b, k in zip(_B5, ks))
        ks.append(f(u + h, y5))
        stats["nfe"] += 6
        err = h * sum((b5 - b4) * k for b5, b4, k in zip(_B5, _B4, ks))
        scale = atol + rtol * y.abs().maximum(y5.abs())
        e = float((err / scale).pow(2).mean().sqrt())
        if e <= 1.0:
            u, y, k1 = u + h, y5, ks[-1]
            if on_step is not None:
                on_step(stats["steps"], u, y, k1)
            stats["steps"] += 1
        else:
            stats["rejected"] += 1
        h = h * min(5.0, max(0.2, 0.9 * max(e, 1e-10) ** -0.2))
    return y, stats


def log_sigma_time(schedule: Schedule, t_hi: float, t_lo: float, n: int = 4097
                   ) -> tuple[Tensor, Callable[[float], Tensor]]:
    """u = log(sigma/alpha) on a grid uniform in u over [u(t_lo), u(t_hi)] (t by bisection), and the
    map u -> t by linear interpolation on it (smooth in u, also where u(t) is steep near t = 0)."""
    lam = schedule.logsnr(torch.tensor([t_lo, t_hi], dtype=torch.float64))
    u = torch.linspace(float(-0.5 * lam[0]), float(-0.5 * lam[1]), n, dtype=torch.float64)
    t = schedule.t_of_logsnr(-2.0 * u)
    t[0], t[-1] = t_lo, t_hi

    def t_of(v: float) -> Tensor:
        k = int(torch.searchsorted(u, torch.tensor([v], dtype=torch.float64)).clamp(1, n - 1))
        w = (v - u[k - 1]) / (u[k] - u[k - 1])
        return t[k - 1] + w * (t[k] - t[k - 1])
    return u, t_of


def pf_ode_derivative(denoiser: DenoiserFn, x_tld: Tensor, t: Tensor, cond: dict[str, Any],
                      net_dtype: torch.dtype | None = None) -> tuple[Tensor, Tensor]:
    r""":math:`(d\tilde x/du, \hat x_0)` at :math:`\tilde x` and time t: :math:`\tilde x - D(\alpha_t\tilde x, t)`.

    ``net_dtype``: the dtype the denoiser computes in, when the state is kept in another (a float64 ODE
    state around a float32 network); the estimate comes back in the state's dtype."""
    x = expand(denoiser.schedule.alpha_sigma(t)[0], x_tld) * x_tld
    if net_dtype is None:
        x0 = denoiser(x, t, **cond)
    else:
        x0 = denoiser(x.to(net_dtype), t, **cond).to(x_tld.dtype)
    return x_tld - x0, x0


_TOLERANCE_FOR_NFE = {5: 1e-1, 10: 3e-2, 20: 1e-2, 50: 1e-3}


@register("ode", order=5, nfe_per_step=6, stochastic=False, adaptive=True, grid="uniform",
          budget=lambda nfe: (1, dict.fromkeys(("rtol", "atol"), _TOLERANCE_FOR_NFE.get(nfe, 1e-4))),
          summary="probability-flow ODE, adaptive Dormand-Prince RK45 (rtol/atol), NFE reported")
def sample_ode(denoiser: DenoiserFn, x_T: Tensor, ts: Tensor, *, generator: Noise = None, callback: Callback = None,
               rtol: float = 1e-4, atol: float = 1e-4, t_end: float | None = None, stats: dict | None = None,
               **cond: Any) -> Tensor:
    r"""The probability-flow ODE (Song et al., arXiv:2011.13456, eq. 13) in :math:`u = \log\tilde\sigma`,
    :math:`d\tilde x/du = \tilde x - \hat x_0`, integrated by the adaptive Dormand-Prince 5(4) pair from
    ``ts[0]`` down to ``t_end``; the solver chooses its own steps, so only the grid's first and last
    times matter.  A grid ending at 0 integrates to ``t_end`` (default: the schedule's ``t_min``, 1/T on
    a table, else 1e-3) and returns :math:`\hat x_0` there; otherwise it integrates to ``ts[-1]``.
    The error norm is the RMS over the whole batch of err / (atol + rtol |x~|).  ``stats`` (a dict)
    receives ``nfe``, ``steps`` and ``rejected``.
    """
    sch = denoiser.schedule
    ts = torch.as_tensor(ts, dtype=torch.float64)
    final_jump = bool(ts[-1] == 0)
    if not final_jump:
        t_end = float(ts[-1])
    elif t_end is None:
        t_end = sch.t_min
    t_end = torch.tensor(t_end, dtype=torch.float64)
    if not float(ts[0]) > float(t_end) > 0:
        raise DifflabError(f"the ODE sampler integrates from the grid's first time down to a positive time; got "
                           f"{float(ts[0])} -> {float(t_end)} (start the grid at t = 1: --grid uniform)")
    u_tab, t_of = log_sigma_time(sch, float(ts[0]), float(t_end))

    def f(u: float, y: Tensor) -> Tensor:
        return pf_ode_derivative(denoiser, y, t_of(u), cond)[0]

    def on_step(k: int, u: float, y: Tensor, dy: Tensor) -> None:
        t = t_of(u)
        emit(callback, k, t, y * expand(sch.alpha_sigma(t)[0], y), y - dy)

    y0 = x_T / expand(sch.alpha_sigma(ts[0])[0], x_T)
    y, st = dopri5(f, y0, float(u_tab[-1]), float(u_tab[0]), rtol, atol,
                   on_step=on_step if callback is not None else None)
    x = y * expand(sch.alpha_sigma(t_end)[0], y)
    if final_jump:
        x = denoiser(x, t_end, **cond)
        st["nfe"] += 1
    if stats is not None:
        stats.update(st)
    return x
