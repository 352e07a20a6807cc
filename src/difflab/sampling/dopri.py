"""An adaptive Dormand-Prince 5(4) integrator for batched tensors (used by the ODE sampler and the
likelihood).  Dormand & Prince (1980), J. Comput. Appl. Math. 6(1), RK5(4)7FM; first-same-as-last;
step control h <- h min(5, max(0.2, 0.9 e^(-1/5))) on the RMS error norm over the whole tensor."""
from __future__ import annotations

from typing import Callable

from torch import Tensor

__all__ = ["dopri5"]

_C = [0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0]
_A = [[], [1 / 5], [3 / 40, 9 / 40], [44 / 45, -56 / 15, 32 / 9],
      [19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729],
      [9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656]]
_B5 = [35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0]
_B4 = [5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40]


def dopri5(f: Callable[[float, Tensor], Tensor], y: Tensor, u0: float, u1: float, rtol: float = 1e-4,
           atol: float = 1e-4, h0: float | None = None,
           on_step: Callable[[float, Tensor, Tensor], None] | None = None) -> tuple[Tensor, dict]:
    """Integrate dy/du = f(u, y) from u0 to u1 (either direction).  ``on_step(u, y, f(u, y))`` after
    each accepted step.  Returns y(u1) and ``{"nfe", "steps", "rejected"}``."""
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
            stats["steps"] += 1
            if on_step is not None:
                on_step(u, y, k1)
        else:
            stats["rejected"] += 1
        h = h * min(5.0, max(0.2, 0.9 * max(e, 1e-10) ** -0.2))
    return y, stats
