r"""Multistep consistency sampling (Song et al., "Consistency Models", arXiv:2303.01469, Algorithm 1).

A consistency function maps any point of a probability-flow trajectory to its end, so one evaluation
at the start gives a sample; more steps alternate "jump to the end" and "re-noise to an earlier time":

.. math:: \hat x_0 = f(x_{t_i}, t_i), \qquad x_{t_{i+1}} = \alpha_{t_{i+1}}\hat x_0 + \sigma_{t_{i+1}} z,
          \quad z \sim N(0, I),

the forward process :math:`q(x_{t_{i+1}} \mid x_0 = \hat x_0)`.  (Song et al. re-noise by
:math:`\sqrt{\tau^2 - \epsilon^2}` because their f ends at :math:`\sigma = \epsilon`; difflab's f is read
as clean data, which differs by :math:`\tilde\sigma_{min}^2` in the variance, ~1e-6.)  Written over
the denoiser contract, it runs with any denoiser: with a consistency model (prediction
``consistency_*``) it is the consistency sampler; with an ordinary denoiser :math:`E[x_0 \mid x_t]` it
is "denoise, then re-noise", which loses variance.  The recommended grid is ``trailing``
(:math:`1, \tfrac12` for 2 steps): the other grids end at ``t_min``, where a consistency function is the
identity, so their last evaluation would be wasted.  ``sigma_ratios`` sets the re-noising levels
:math:`\tilde\sigma = \sigma/\alpha` between the jumps directly (steps - 1 of them, decreasing): Song et al.
(sec. 6) and Song & Dhariwal (arXiv:2310.14189, sec. 6) choose the midpoint of 2-step sampling by a search
(0.821 on CIFAR-10), since the trailing grid's t = 1/2 need not be the best level.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor

from ..denoisers.denoiser import DenoiserFn
from ..errors import DifflabError
from ..process.forward import expand
from .grids import grid_alpha_sigma
from .noise import randn_like
from .registry import Callback, Noise, emit, register

__all__ = ["sample_consistency"]


@register("consistency", order=1, nfe_per_step=1, stochastic=True, grid="trailing",
          summary="multistep consistency sampling (Song et al. 2023, Alg. 1): jump to x0_hat, re-noise")
def sample_consistency(denoiser: DenoiserFn, x_T: Tensor, ts: Tensor, *, generator: Noise = None,
                       callback: Callback = None, sigma_ratios: Sequence[float] | str | None = None,
                       **cond: Any) -> Tensor:
    r"""Song et al. (2023), Algorithm 1 over the grid ``ts``: :math:`\hat x_0 = D(x_{t_i}, t_i)`, then
    :math:`x_{t_{i+1}} = \alpha_{t_{i+1}}\hat x_0 + \sigma_{t_{i+1}}z` while :math:`t_{i+1} > 0`.  One step
    is deterministic.  ``sigma_ratios`` (a sequence or ``"0.8"``/``"2,0.8,0.3"``) replaces the intermediate
    times ``ts[1:-1]`` by those of the given noise levels :math:`\tilde\sigma`."""
    if sigma_ratios is not None:
        ts = with_levels(denoiser.schedule, ts, sigma_ratios)
    a, s = grid_alpha_sigma(denoiser.schedule, ts)
    x = x_T
    for i in range(len(ts) - 1):
        x0 = denoiser(x, ts[i], **cond)
        x = x0 if s[i + 1] == 0 else expand(a[i + 1], x0) * x0 + expand(s[i + 1], x0) * randn_like(x0, generator)
        emit(callback, i, ts[i], x, x0)
    return x


def with_levels(schedule: Any, ts: Tensor, sigma_ratios: Sequence[float] | str) -> Tensor:
    """``ts`` with its intermediate times moved to the noise levels ``sigma_ratios`` (decreasing, below the
    first time's level; as many as ``ts`` has intermediate times)."""
    if isinstance(sigma_ratios, str):
        sigma_ratios = [float(v) for v in sigma_ratios.split(",") if v.strip()]
    elif isinstance(sigma_ratios, (int, float)):
        sigma_ratios = [float(sigma_ratios)]
    levels = torch.as_tensor(list(sigma_ratios), dtype=torch.float64)
    if len(levels) != len(ts) - 2:
        raise DifflabError(f"sigma_ratios gives {len(levels)} noise levels; {len(ts) - 1} steps re-noise "
                           f"{len(ts) - 2} times")
    top, end = (float(v) for v in schedule.sigma_ratio(ts[[0, -1]].to(torch.float64)))
    if len(levels) and not (bool((levels[1:] < levels[:-1]).all()) and float(levels[-1]) > end
                            and float(levels[0]) < top):
        raise DifflabError(f"sigma_ratios must decrease and lie in ({end:.4g}, {top:.4g}) (sigma/alpha of the last "
                           f"and first times), got {levels.tolist()}")
    mid = schedule.t_of_sigma_ratio(levels).to(ts.dtype)
    return torch.cat([ts[:1], mid.reshape(-1), ts[-1:]])
