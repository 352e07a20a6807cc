r"""Parameterisations and the exact conversions between them.

With :math:`x_t = \alpha x_0 + \sigma\epsilon` (all quantities broadcast per sample):

* eps:   :math:`\epsilon = (x_t - \alpha x_0)/\sigma`,  :math:`x_0 = (x_t - \sigma\epsilon)/\alpha`
* v:     :math:`v = \alpha\epsilon - \sigma x_0` (Salimans & Ho, arXiv:2202.00512, generalised to
  non-VP schedules), :math:`x_0 = (\alpha x_t - \sigma v)/(\alpha^2 + \sigma^2)`,
  :math:`\epsilon = (\sigma x_t + \alpha v)/(\alpha^2 + \sigma^2)`
* score: :math:`\nabla_{x_t}\log p(x_t) = -\epsilon/\sigma` (Tweedie / Vincent 2011)
* edm:   the network output F of Karras et al. (arXiv:2206.00364, eq. 7, Table 1), in the scaled
  variable :math:`\tilde x = x_t/\alpha`, :math:`\tilde\sigma = \sigma/\alpha`:
  :math:`x_0 = c_{skip}\tilde x + c_{out}F`, :math:`c_{skip} = \sigma_d^2/(\tilde\sigma^2 + \sigma_d^2)`,
  :math:`c_{out} = \tilde\sigma\sigma_d/\sqrt{\tilde\sigma^2 + \sigma_d^2}`.

Every function is pure and works for any broadcastable shapes.
"""
from __future__ import annotations

from torch import Tensor

from ..errors import DifflabError

__all__ = ["PREDICTIONS", "check_prediction", "eps_from_x0", "x0_from_eps", "v_from_x0_eps",
           "x0_from_v", "eps_from_v", "score_from_eps", "eps_from_score", "edm_coefficients",
           "to_x0", "target"]

PREDICTIONS = ("eps", "x0", "v", "score", "edm")


def check_prediction(kind: str) -> str:
    if kind not in PREDICTIONS:
        raise DifflabError(f"unknown prediction {kind!r}; choose from {', '.join(PREDICTIONS)}")
    return kind


def eps_from_x0(x0: Tensor, x_t: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    return (x_t - alpha * x0) / sigma


def x0_from_eps(eps: Tensor, x_t: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    return (x_t - sigma * eps) / alpha


def v_from_x0_eps(x0: Tensor, eps: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    return alpha * eps - sigma * x0


def x0_from_v(v: Tensor, x_t: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    return (alpha * x_t - sigma * v) / (alpha**2 + sigma**2)


def eps_from_v(v: Tensor, x_t: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    return (sigma * x_t + alpha * v) / (alpha**2 + sigma**2)


def score_from_eps(eps: Tensor, sigma: Tensor) -> Tensor:
    return -eps / sigma


def eps_from_score(score: Tensor, sigma: Tensor) -> Tensor:
    return -sigma * score


def edm_coefficients(alpha: Tensor, sigma: Tensor, sigma_data: float) -> tuple[Tensor, Tensor, Tensor]:
    """``(c_skip, c_out, c_in)`` acting on :math:`x_t` directly (the 1/alpha is folded in)."""
    s = sigma / alpha
    r = (s**2 + sigma_data**2).sqrt()
    c_skip = sigma_data**2 / r**2
    return c_skip / alpha, s * sigma_data / r, 1.0 / (alpha * r)


def to_x0(kind: str, out: Tensor, x_t: Tensor, alpha: Tensor, sigma: Tensor, sigma_data: float = 0.5) -> Tensor:
    """Convert a network output of parameterisation ``kind`` into :math:`\\hat x_0`."""
    if kind == "x0":
        return out
    if kind == "eps":
        return x0_from_eps(out, x_t, alpha, sigma)
    if kind == "v":
        return x0_from_v(out, x_t, alpha, sigma)
    if kind == "score":
        return x0_from_eps(eps_from_score(out, sigma), x_t, alpha, sigma)
    if kind == "edm":
        c_skip, c_out, _ = edm_coefficients(alpha, sigma, sigma_data)
        return c_skip * x_t + c_out * out
    raise DifflabError(f"unknown prediction {kind!r}")


def target(kind: str, x0: Tensor, eps: Tensor, alpha: Tensor, sigma: Tensor, sigma_data: float = 0.5) -> Tensor:
    """What a network of parameterisation ``kind`` should output for clean ``x0`` and noise ``eps``."""
    if kind == "x0":
        return x0
    if kind == "eps":
        return eps
    if kind == "v":
        return v_from_x0_eps(x0, eps, alpha, sigma)
    if kind == "score":
        return score_from_eps(eps, sigma)
    if kind == "edm":
        c_skip, c_out, _ = edm_coefficients(alpha, sigma, sigma_data)
        x_t = alpha * x0 + sigma * eps
        return (x0 - c_skip * x_t) / c_out
    raise DifflabError(f"unknown prediction {kind!r}")
