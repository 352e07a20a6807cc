r"""Training-time proposals for t: where on the time axis the denoising loss is evaluated.

* ``uniform``: the schedule's own :meth:`~difflab.process.schedules.Schedule.sample_t` (uniform on (0, 1],
  uniform over the knots of a table).
* ``logit_normal``: :math:`t = \mathrm{sigmoid}(m + s z)`, :math:`z \sim N(0, 1)`, density
  :math:`\pi(t) = \frac{1}{s\sqrt{2\pi}}\frac{1}{t(1-t)}\exp\!\big(-\frac{(\mathrm{logit}\,t - m)^2}{2s^2}\big)`
  (Esser et al., "Scaling Rectified Flow Transformers for High-Resolution Image Synthesis",
  arXiv:2403.03206, eq. 19; their best setting is m = 0, s = 1).  It puts more training on the middle
  of the time axis; in expectation the loss is weighted by :math:`\pi(t)`.  On a discrete table t is
  moved up to the next knot :math:`t_i = (i+1)/T`.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..errors import DifflabError
from .schedules import DiscreteSchedule, Schedule

__all__ = ["T_PROPOSALS", "propose_t", "logit_normal_density"]

T_PROPOSALS = ("uniform", "logit_normal")


def propose_t(schedule: Schedule, n: int, generator: torch.Generator | None = None, proposal: str = "uniform",
             mean: float = 0.0, std: float = 1.0) -> Tensor:
    """``n`` training times (float64) from ``proposal`` (see the module docstring); ``mean`` and ``std`` are
    the logit-normal's m and s."""
    if proposal == "uniform":
        return schedule.sample_t(n, generator=generator)
    if proposal != "logit_normal":
        raise DifflabError(f"unknown t proposal {proposal!r}; choose from {', '.join(T_PROPOSALS)}")
    if not std > 0:
        raise DifflabError(f"the logit-normal t proposal needs std > 0, got {std}")
    z = torch.randn(n, generator=generator, dtype=torch.float64)
    t = torch.sigmoid(mean + std * z)
    if isinstance(schedule, DiscreteSchedule):
        i = (t * schedule.T).ceil().clamp(1, schedule.T) - 1
        return schedule.index_to_t(i)
    return t.clamp_min(1e-5)


def logit_normal_density(t: Tensor, mean: float = 0.0, std: float = 1.0) -> Tensor:
    r""":math:`\pi(t)` of the logit-normal proposal (Esser et al. 2024, eq. 19)."""
    logit = torch.log(t) - torch.log1p(-t)
    return torch.exp(-0.5 * ((logit - mean) / std) ** 2) / (std * (2 * torch.pi) ** 0.5 * t * (1 - t))
