r"""The forward (noising) process and its posterior.

* Closed form: :math:`q(x_t \mid x_0) = N(\alpha_t x_0, \sigma_t^2 I)`.
* Transition between any two times s < t:
  :math:`q(x_t \mid x_s) = N(\alpha_{t|s} x_s, \sigma_{t|s}^2 I)` with
  :math:`\alpha_{t|s} = \alpha_t/\alpha_s`, :math:`\sigma_{t|s}^2 = \sigma_t^2 - \alpha_{t|s}^2\sigma_s^2`.
  On a DDPM table with s = t_{i-1}, t = t_i this is :math:`N(\sqrt{1-\beta_i} x_{i-1}, \beta_i I)`.
* Posterior: :math:`q(x_s \mid x_t, x_0) = N(\tilde\mu, \tilde\sigma^2 I)` with
  :math:`\tilde\mu = \frac{\alpha_{t|s}\sigma_s^2}{\sigma_t^2} x_t + \frac{\alpha_s \sigma_{t|s}^2}{\sigma_t^2} x_0`,
  :math:`\tilde\sigma^2 = \frac{\sigma_{t|s}^2 \sigma_s^2}{\sigma_t^2}`
  (Kingma et al., VDM, arXiv:2107.00630, eq. 27-29; DDPM eq. 6-7 is the table case).

Times are broadcast against the batch dimension: ``t`` has shape ``(B,)`` or is a scalar.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from .schedules import Schedule

__all__ = ["expand", "q_sample", "transition_coefficients", "posterior_coefficients", "transition", "q_step",
           "markov_chain", "posterior"]


def expand(v: Tensor, x: Tensor) -> Tensor:
    """Reshape a per-sample tensor ``(B,)`` (or scalar) to broadcast against ``x`` ``(B, ...)``."""
    v = v.to(device=x.device, dtype=x.dtype)
    return v.reshape(v.shape + (1,) * (x.ndim - v.ndim)) if v.ndim else v


def q_sample(schedule: Schedule, x0: Tensor, t: Tensor | float, eps: Tensor | None = None,
             generator: torch.Generator | None = None) -> Tensor:
    r"""Draw :math:`x_t = \alpha_t x_0 + \sigma_t \epsilon` (closed form)."""
    t = torch.as_tensor(t, dtype=torch.float64)
    if eps is None:
        eps = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
    a, s = schedule.alpha_sigma(t)
    return expand(a, x0) * x0 + expand(s, x0) * eps


def transition_coefficients(alpha_s: Tensor, sigma_s: Tensor, alpha_t: Tensor, sigma_t: Tensor
                            ) -> tuple[Tensor, Tensor]:
    r""":math:`(\alpha_{t|s}, \sigma_{t|s}^2)` of :math:`q(x_t \mid x_s)` from the schedule values at s <= t:
    :math:`\alpha_{t|s} = \alpha_t/\alpha_s`, :math:`\sigma_{t|s}^2 = \sigma_t^2 - \alpha_{t|s}^2\sigma_s^2`
    (clamped at 0 against rounding)."""
    a_ts = alpha_t / alpha_s
    return a_ts, (sigma_t**2 - a_ts**2 * sigma_s**2).clamp_min(0.0)


def posterior_coefficients(alpha_s: Tensor, sigma_s: Tensor, alpha_t: Tensor, sigma_t: Tensor
                           ) -> tuple[Tensor, Tensor, Tensor]:
    r"""The posterior :math:`q(x_s \mid x_t, x_0) = N(c_t x_t + c_0 x_0, v\,I)` for s < t, from the schedule
    values at s and t: :math:`c_t = \alpha_{t|s}\sigma_s^2/\sigma_t^2`, :math:`c_0 = \alpha_s\sigma_{t|s}^2/\sigma_t^2`,
    :math:`v = \sigma_{t|s}^2\sigma_s^2/\sigma_t^2` (VDM eq. 28; DDPM eq. 7 on a table).  This is the one
    home of the formula: the ancestral samplers, Langevin predictor and the DDPM ELBO all call it."""
    a_ts, var_ts = transition_coefficients(alpha_s, sigma_s, alpha_t, sigma_t)
    return a_ts * sigma_s**2 / sigma_t**2, alpha_s * var_ts / sigma_t**2, var_ts * sigma_s**2 / sigma_t**2


def transition(schedule: Schedule, s: Tensor | float, t: Tensor | float) -> tuple[Tensor, Tensor]:
    r""":math:`(\alpha_{t|s}, \sigma_{t|s}^2)` of :math:`q(x_t \mid x_s)` for s <= t, in float64."""
    a_s, s_s = schedule.alpha_sigma(torch.as_tensor(s, dtype=torch.float64))
    a_t, s_t = schedule.alpha_sigma(torch.as_tensor(t, dtype=torch.float64))
    return transition_coefficients(a_s, s_s, a_t, s_t)


def q_step(schedule: Schedule, x_s: Tensor, s: Tensor | float, t: Tensor | float,
           generator: torch.Generator | None = None) -> Tensor:
    r"""One Markov step :math:`x_t \sim q(x_t \mid x_s)`."""
    a_ts, var = transition(schedule, s, t)
    z = torch.randn(x_s.shape, generator=generator, dtype=x_s.dtype, device=x_s.device)
    return expand(a_ts, x_s) * x_s + expand(var.sqrt(), x_s) * z


def markov_chain(schedule: Schedule, x0: Tensor, ts: Tensor, generator: torch.Generator | None = None,
                 callback: Callable[[int, Tensor, Tensor], None] | None = None) -> Tensor:
    """Run the forward chain step by step over the increasing grid ``ts`` (starting after t = 0).

    Returns the states at every grid time, shape ``(len(ts), *x0.shape)``.
    """
    out, x, s = [], x0, torch.zeros((), dtype=torch.float64)
    for i, t in enumerate(ts):
        x = q_step(schedule, x, s, t, generator=generator)
        if callback is not None:
            callback(i, t, x)
        out.append(x)
        s = t
    return torch.stack(out)


def posterior(schedule: Schedule, x_t: Tensor, x0: Tensor, s: Tensor | float, t: Tensor | float
              ) -> tuple[Tensor, Tensor]:
    r"""Mean and variance of :math:`q(x_s \mid x_t, x_0)` for s < t (variance per sample, broadcastable).

    At s = 0 on a VP schedule (:math:`\sigma_s = 0`) the posterior is a point mass at :math:`x_0`.
    """
    a_s, s_s = schedule.alpha_sigma(torch.as_tensor(s, dtype=torch.float64))
    a_t, s_t = schedule.alpha_sigma(torch.as_tensor(t, dtype=torch.float64))
    c_xt, c_x0, var = posterior_coefficients(a_s, s_s, a_t, s_t)
    return expand(c_xt, x_t) * x_t + expand(c_x0, x0) * x0, expand(var, x_t)
