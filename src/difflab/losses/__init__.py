r"""The denoising loss and its weightings.

Per sample: :math:`L = w(t)\,\lVert F_\theta(x_t, t) - F^*(x_0, \epsilon, t)\rVert^2 / D` where F is the
network's parameterisation (eps, x0, v, score, edm) and :math:`F^*` its target.  A weighting is
stated in x0 space, :math:`\lambda(t)\lVert\hat x_0 - x_0\rVert^2`, and converted with
:math:`(\partial x_0/\partial F)^2` (all parameterisations are affine in F):

* ``uniform``: plain MSE on the network's own target (DDPM's "simple" loss for eps).
* ``snr``: :math:`\lambda = \mathrm{SNR}(t)` (equals eps-MSE for any parameterisation).
* ``min_snr``: :math:`\lambda = \min(\mathrm{SNR}(t), \gamma)` (Hang et al., arXiv:2303.09556).
* ``edm``: :math:`\lambda = (\tilde\sigma^2 + \sigma_d^2)/(\tilde\sigma\sigma_d)^2` (Karras et al. 2022, eq. 8),
  with :math:`\tilde\sigma = \sigma/\alpha`.
* ``flow``: :math:`\lambda = ((\alpha + \sigma)/\sigma)^2`, the x0-space weight of the velocity MSE
  :math:`\lVert\hat u - (\epsilon - x_0)\rVert^2`: the flow-matching / rectified-flow loss (Lipman et al.,
  arXiv:2210.02747, eq. 23; Liu et al., arXiv:2209.03003, eq. 1) for any parameterisation; on the ``flow``
  schedule :math:`\lambda = 1/t^2`.  With ``velocity`` prediction it equals ``uniform``.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..denoisers import param
from ..errors import DifflabError
from ..process.forward import expand

__all__ = ["WEIGHTINGS", "x0_jacobian_sq", "loss_weight", "denoising_loss"]

WEIGHTINGS = ("uniform", "snr", "min_snr", "edm", "flow")


def x0_jacobian_sq(kind: str, alpha: Tensor, sigma: Tensor, sigma_data: float = 0.5,
                   sigma_min: float | Tensor = 0.0) -> Tensor:
    r""":math:`(\partial\hat x_0/\partial F)^2` for parameterisation ``kind`` (see :mod:`.param`)."""
    if kind.startswith("consistency_"):
        r = param.consistency_coefficients(alpha, sigma, sigma_data, sigma_min)[2]
        return r**2 * x0_jacobian_sq(param.base_prediction(kind), alpha, sigma, sigma_data)
    if kind == "velocity":
        return (sigma / (alpha + sigma)) ** 2
    if kind == "x0":
        return torch.ones_like(alpha)
    if kind == "eps":
        return (sigma / alpha) ** 2
    if kind == "v":
        return (sigma / (alpha**2 + sigma**2)) ** 2
    if kind == "score":
        return (sigma**2 / alpha) ** 2
    if kind == "edm":
        return param.edm_coefficients(alpha, sigma, sigma_data)[1] ** 2
    raise DifflabError(f"unknown prediction {kind!r}")


def loss_weight(weighting: str, kind: str, alpha: Tensor, sigma: Tensor, sigma_data: float = 0.5,
                gamma: float = 5.0, sigma_min: float | Tensor = 0.0) -> Tensor:
    """Per-sample weight applied to the MSE in the network's target space."""
    if weighting == "uniform":
        return torch.ones_like(alpha)
    snr = (alpha / sigma) ** 2
    if weighting == "snr":
        lam = snr
    elif weighting == "min_snr":
        lam = snr.clamp(max=gamma)
    elif weighting == "edm":
        s = sigma / alpha
        lam = (s**2 + sigma_data**2) / (s * sigma_data) ** 2
    elif weighting == "flow":
        lam = 1.0 / x0_jacobian_sq("velocity", alpha, sigma)
    else:
        raise DifflabError(f"unknown loss weighting {weighting!r}; choose from {', '.join(WEIGHTINGS)}")
    return lam * x0_jacobian_sq(kind, alpha, sigma, sigma_data, sigma_min)


def denoising_loss(denoiser: Any, x0: Tensor, t: Tensor, eps: Tensor, weighting: str = "uniform",
                   gamma: float = 5.0, **cond: Any) -> Tensor:
    """Per-sample weighted denoising loss, shape ``(B,)``; ``t`` float64 ``(B,)``."""
    a, s = denoiser.schedule.alpha_sigma(t)
    a_x, s_x = expand(a, x0), expand(s, x0)
    x_t = a_x * x0 + s_x * eps
    out = denoiser.raw(x_t, t, alpha_sigma=(a, s), **cond).float()
    s_min = getattr(denoiser, "sigma_min", 0.0)
    tgt = param.target(denoiser.prediction, x0, eps, a_x, s_x, denoiser.sigma_data, s_min)
    mse = (out - tgt).pow(2).flatten(1).mean(1)
    w = loss_weight(weighting, denoiser.prediction, a, s, denoiser.sigma_data, gamma, s_min).to(mse.device, mse.dtype)
    return w * mse
