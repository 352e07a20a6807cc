r"""Time grids for sampling: decreasing tensors ``ts`` (float64) from the start time to 0.

* Discrete-step models use step indices of their table with the conventions of
  Lin et al. (arXiv:2305.08891, Table 2): ``leading`` (DDIM/diffusers default),
  ``trailing`` and ``linspace``; index i sits at :math:`t = (i+1)/T`.
* Continuous schedules use ``uniform`` t, ``logsnr`` (uniform in log-SNR, as DPM-Solver), or
  ``karras`` (:math:`\sigma_i^{1/\rho}` uniform, Karras et al. 2022, eq. 5).

A grid always ends with t = 0, meaning clean data: samplers return :math:`\hat x_0` there
(:math:`\sigma = 0`) even for VE schedules whose :math:`\sigma(0) = \sigma_{min} > 0`.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..errors import DifflabError
from ..process.schedules import DiscreteSchedule, Schedule

__all__ = ["SPACINGS", "GRIDS", "discrete_timesteps", "time_grid", "grid_alpha_sigma"]

SPACINGS = ("leading", "trailing", "linspace")
GRIDS = ("default", "uniform", "logsnr", "karras") + SPACINGS


def discrete_timesteps(T: int, steps: int, spacing: str = "leading", offset: int = 0) -> Tensor:
    """Decreasing step indices in [0, T-1] of a ``steps``-step sampler over a T-step table."""
    if not 1 <= steps <= T:
        raise DifflabError(f"number of sampling steps must be in [1, {T}], got {steps}")
    if spacing == "leading":
        idx = torch.arange(steps, dtype=torch.int64) * (T // steps) + offset
    elif spacing == "trailing":
        idx = (torch.arange(T, 0, -T / steps, dtype=torch.float64).round().to(torch.int64) - 1).flip(0)
    elif spacing == "linspace":
        idx = torch.linspace(0, T - 1, steps, dtype=torch.float64).round().to(torch.int64)
    else:
        raise DifflabError(f"unknown timestep spacing {spacing!r}; choose from {', '.join(SPACINGS)}")
    return idx.flip(0)


def time_grid(schedule: Schedule, steps: int, kind: str = "default", t_max: float = 1.0,
              t_min: float = 0.0, rho: float = 7.0, sigma_max: float | None = None) -> Tensor:
    """``steps + 1`` decreasing times from ``t_max`` to 0 (``steps`` network evaluations for a
    first-order sampler).

    ``default`` is ``leading`` on discrete tables and ``uniform`` on continuous schedules; on a table,
    ``t_max`` < 1 applies the spacing to the table's first round(t_max T) steps.
    ``t_min`` is the last time before the final jump to 0.  ``sigma_max`` starts the grid where
    sigma/alpha equals it (Karras et al. use 80): second-order steps from the sigma/alpha of about
    3e4 that VP schedules reach at t = 1 overshoot (tests/test_samplers.py shows it for Heun).
    """
    if sigma_max is not None:
        t_max = min(t_max, float(schedule.t_of_sigma_ratio(sigma_max)))
        if kind in SPACINGS or (kind == "default" and isinstance(schedule, DiscreteSchedule)):
            raise DifflabError("sigma_max applies to the uniform, logsnr and karras grids")
    if steps < 1:
        raise DifflabError(f"number of sampling steps must be >= 1, got {steps}")
    if kind not in GRIDS:
        raise DifflabError(f"unknown time grid {kind!r}; choose from {', '.join(GRIDS)}")
    if isinstance(schedule, DiscreteSchedule) and kind in ("default",) + SPACINGS:
        # t_max < 1 (SDEdit) keeps the first round(t_max T) steps of the table
        T = schedule.T if t_max >= 1.0 else max(1, round(t_max * schedule.T))
        idx = discrete_timesteps(T, steps, "leading" if kind == "default" else kind)
        ts = schedule.index_to_t(idx)
    else:
        if kind in SPACINGS:
            raise DifflabError(f"spacing {kind!r} applies to discrete-step schedules only")
        lo = t_min if t_min > 0 else schedule.t_min
        u = torch.linspace(0, 1, steps, dtype=torch.float64)
        if kind in ("default", "uniform"):
            ts = t_max + u * (lo - t_max)
        elif kind == "logsnr":
            l0, l1 = schedule.logsnr(torch.tensor(t_max, dtype=torch.float64)), schedule.logsnr(torch.tensor(lo, dtype=torch.float64))
            ts = schedule.t_of_logsnr(l0 + u * (l1 - l0))
        else:  # karras: uniform in sigma^(1/rho) of the VE-equivalent sigma = sigma/alpha
            s = lambda t: schedule.sigma_ratio(torch.tensor(t, dtype=torch.float64))  # noqa: E731
            r = s(t_max) ** (1 / rho) + u * (s(lo) ** (1 / rho) - s(t_max) ** (1 / rho))
            ts = schedule.t_of_logsnr(-2 * torch.log(r**rho))
        if steps == 1:
            ts = torch.tensor([t_max], dtype=torch.float64)
    return torch.cat([ts, torch.zeros(1, dtype=torch.float64)])


def grid_alpha_sigma(schedule: Schedule, ts: Tensor) -> tuple[Tensor, Tensor]:
    """Float64 ``(alpha, sigma)`` at every grid time; a final t = 0 is clean data (alpha 1, sigma 0)."""
    ts = torch.as_tensor(ts, dtype=torch.float64)
    a, s = schedule.alpha_sigma(ts)
    if ts[-1] == 0:
        a, s = a.clone(), s.clone()
        a[-1], s[-1] = 1.0, 0.0
    return a, s
