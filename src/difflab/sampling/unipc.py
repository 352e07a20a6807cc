r"""UniPC: a unified predictor-corrector multistep solver (Zhao et al., arXiv:2302.04867), data prediction
with :math:`B(h) = e^{h} - 1` ("bh2"), in the log-SNR variables of :mod:`.dpm_solver`."""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..denoisers.denoiser import DenoiserFn
from ..errors import DifflabError
from ..process.forward import expand
from .dpm_solver import lambdas, multistep_order
from .grids import grid_alpha_sigma
from .registry import Callback, Noise, emit, register

__all__ = ["unipc_coefficients", "unipc_update", "sample_unipc"]


def unipc_coefficients(rks: Tensor, hh: Tensor, order: int) -> tuple[Tensor, Tensor]:
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


def unipc_update(x_s: Tensor, history: list[Tensor], lam_history: list[Tensor], *, lam_t: Tensor, a_t: Tensor,
                 s_t: Tensor, s_s: Tensor, order: int, x0_t: Tensor | None = None) -> Tensor:
    r"""One UniPC update from s to t of ``order`` p.

    ``history``: the x0_hat estimates, newest (at s) first, with their log-SNRs ``lam_history``.  Without
    ``x0_t`` this is the predictor UniP-p; with ``x0_t`` (the evaluation at t) the corrector UniC-p, which
    adds one order without a network call."""
    h = lam_t - lam_history[0]
    hh = -h
    m0 = history[0]
    base = expand(s_t / s_s, x_s) * x_s - expand(a_t * torch.expm1(hh), x_s) * m0
    rks = [(lam_history[k] - lam_history[0]) / h for k in range(1, order)]
    d1s = [(history[k] - m0) / expand(r, m0) for k, r in zip(range(1, order), rks)]
    R, b = unipc_coefficients(torch.stack(rks + [torch.ones((), dtype=torch.float64)]), hh, order)
    b_h = torch.expm1(hh)
    if x0_t is None:                                             # predictor UniP-p
        if not d1s:
            return base
        rhos = torch.tensor([0.5], dtype=torch.float64) if order == 2 else torch.linalg.solve(R[:-1, :-1], b[:-1])
        res = sum(expand(r, m0) * d for r, d in zip(rhos, d1s))
        return base - expand(a_t * b_h, x_s) * res
    rhos = torch.tensor([0.5], dtype=torch.float64) if order == 1 else torch.linalg.solve(R, b)
    res = sum((expand(r, m0) * d for r, d in zip(rhos[:-1], d1s)), torch.zeros_like(m0))
    return base - expand(a_t * b_h, x_s) * (res + expand(rhos[-1], m0) * (x0_t - m0))


@register("unipc", order=3, nfe_per_step=1, stochastic=False, recommended={"order": 3},
          summary="UniPC (bh2) predictor-corrector multistep, order 2 or 3 (Zhao et al. 2023)")
def sample_unipc(denoiser: DenoiserFn, x_T: Tensor, ts: Tensor, *, generator: Noise = None, callback: Callback = None,
                 order: int = 2, lower_order_final: bool = True, corrector: bool = True, **cond: Any) -> Tensor:
    r"""UniPC with data prediction and :math:`B(h) = e^{h}-1` (bh2), Zhao et al., arXiv:2302.04867.

    Each step: evaluate :math:`\hat x_0` at the new point; the corrector UniC (order p + 1, no extra
    network call) refines that point using the new evaluation; then the predictor UniP of order p
    moves on.  The evaluation kept for the history is the one at the uncorrected point.
    """
    if order not in (1, 2, 3):
        raise DifflabError(f"UniPC order must be 1, 2 or 3, got {order}")
    a, s = grid_alpha_sigma(denoiser.schedule, ts)
    lam = lambdas(a, s)
    n, x = len(ts) - 1, x_T
    history: list[Tensor] = []                                   # x0_hat, newest first
    lam_history: list[Tensor] = []
    last_x, last_order = None, 1
    for i in range(n):
        x0 = denoiser(x, ts[i], **cond)
        if corrector and last_x is not None:
            x = unipc_update(last_x, history, lam_history, lam_t=lam[i], a_t=a[i], s_t=s[i], s_s=s[i - 1],
                             order=last_order, x0_t=x0)
        history = [x0] + history[:order - 1]
        lam_history = [lam[i]] + lam_history[:order - 1]
        o = multistep_order(i, n, order, lower_order_final=lower_order_final, ends_at_zero=bool(s[-1] == 0),
                            always=True)
        last_x, last_order = x, o
        if s[i + 1] == 0:
            x = x0 * expand(a[i + 1], x)
        else:
            x = unipc_update(x, history, lam_history, lam_t=lam[i + 1], a_t=a[i + 1], s_t=s[i + 1], s_s=s[i],
                             order=o)
        emit(callback, i, ts[i], x, x0)
    return x
