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
* velocity: :math:`u = \epsilon - x_0`, the velocity :math:`dx_t/dt` of the linear interpolant
  :math:`x_t = (1-t)x_0 + t\epsilon` (flow matching, Lipman et al., arXiv:2210.02747; rectified flow, Liu et al.,
  arXiv:2209.03003).  It is defined as :math:`\epsilon - x_0` on every schedule, so it needs no schedule
  derivatives and stays a pure function of :math:`(\alpha, \sigma)`:
  :math:`x_0 = (x_t - \sigma u)/(\alpha + \sigma)`, :math:`\epsilon = (x_t + \alpha u)/(\alpha + \sigma)`.
  Only on the ``flow`` schedule is it the time derivative of :math:`x_t` (elsewhere that is
  :math:`\dot\alpha x_0 + \dot\sigma\epsilon`).
* consistency_<base>: a consistency function with the boundary condition :math:`f(x, t_{min}) = x` built in
  (Song et al., "Consistency Models", arXiv:2303.01469, eq. 5 and App. C):
  :math:`f = c_{skip}\tilde x + c_{out}F`, :math:`c_{skip} = \sigma_d^2/((\tilde\sigma - \tilde\sigma_{min})^2 + \sigma_d^2)`,
  :math:`c_{out} = \sigma_d(\tilde\sigma - \tilde\sigma_{min})/\sqrt{\tilde\sigma^2 + \sigma_d^2}`, where F is the
  network output read as the edm output of the ``base`` parameterisation,
  :math:`F = (\hat x_0^{base} - c^{edm}_{skip}\tilde x)/c^{edm}_{out}`.  Hence
  :math:`f = c_{skip}\tilde x + r(\hat x_0^{base} - c^{edm}_{skip}\tilde x)`, :math:`r = 1 - \tilde\sigma_{min}/\tilde\sigma`:
  for ``consistency_edm`` exactly Song et al.'s parameterisation, and for any base a network trained as a
  denoiser of that base is a consistency function up to the boundary layer near :math:`\tilde\sigma_{min}`
  (so a student can start from its teacher's weights, as Geng et al., arXiv:2406.14548, do).  With
  :math:`\tilde\sigma_{min} = 0` it is the base parameterisation.

Every function is pure and works for any broadcastable shapes.
"""
from __future__ import annotations

from torch import Tensor

from ..errors import DifflabError

__all__ = ["PREDICTIONS", "BASE_PREDICTIONS", "check_prediction", "base_prediction", "eps_from_x0", "x0_from_eps",
           "v_from_x0_eps", "x0_from_v", "eps_from_v", "score_from_eps", "eps_from_score", "edm_coefficients",
           "velocity_from_x0_eps", "x0_from_velocity", "eps_from_velocity", "consistency_coefficients",
           "consistency_from_x0", "to_x0", "target"]

BASE_PREDICTIONS = ("eps", "x0", "v", "score", "edm", "velocity")
PREDICTIONS = BASE_PREDICTIONS + tuple(f"consistency_{k}" for k in BASE_PREDICTIONS)
_CM = "consistency_"


def check_prediction(kind: str) -> str:
    if kind not in PREDICTIONS:
        raise DifflabError(f"unknown prediction {kind!r}; choose from {', '.join(PREDICTIONS)}")
    return kind


def base_prediction(kind: str) -> str:
    """What the network itself predicts: ``v`` for ``consistency_v``, the kind itself otherwise."""
    return kind[len(_CM):] if kind.startswith(_CM) else kind


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


def velocity_from_x0_eps(x0: Tensor, eps: Tensor) -> Tensor:
    r""":math:`u = \epsilon - x_0`."""
    return eps - x0


def x0_from_velocity(u: Tensor, x_t: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    r""":math:`x_0 = (x_t - \sigma u)/(\alpha + \sigma)` (from :math:`x_t = \alpha x_0 + \sigma(u + x_0)`)."""
    return (x_t - sigma * u) / (alpha + sigma)


def eps_from_velocity(u: Tensor, x_t: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    r""":math:`\epsilon = (x_t + \alpha u)/(\alpha + \sigma)`."""
    return (x_t + alpha * u) / (alpha + sigma)


def consistency_coefficients(alpha: Tensor, sigma: Tensor, sigma_data: float, sigma_min: float | Tensor
                             ) -> tuple[Tensor, Tensor, Tensor]:
    r"""``(c_skip, c_skip_edm, r)`` of :func:`consistency_from_x0`, acting on :math:`\tilde x = x_t/\alpha`:
    Song et al.'s :math:`c_{skip}` (boundary at :math:`\tilde\sigma_{min}`), EDM's, and
    :math:`r = c_{out}/c^{edm}_{out} = 1 - \tilde\sigma_{min}/\tilde\sigma`."""
    s = sigma / alpha
    c_skip = sigma_data**2 / ((s - sigma_min) ** 2 + sigma_data**2)
    return c_skip, sigma_data**2 / (s**2 + sigma_data**2), 1.0 - sigma_min / s


def consistency_from_x0(x0_base: Tensor, x_t: Tensor, alpha: Tensor, sigma: Tensor, sigma_data: float,
                        sigma_min: float | Tensor) -> Tensor:
    r""":math:`f = c_{skip}\tilde x + r(\hat x_0^{base} - c^{edm}_{skip}\tilde x)` (see the module docstring);
    :math:`f = \tilde x` at :math:`\tilde\sigma = \tilde\sigma_{min}`."""
    c_skip, c_edm, r = consistency_coefficients(alpha, sigma, sigma_data, sigma_min)
    x_tld = x_t / alpha
    return c_skip * x_tld + r * (x0_base - c_edm * x_tld)


def to_x0(kind: str, out: Tensor, x_t: Tensor, alpha: Tensor, sigma: Tensor, sigma_data: float = 0.5,
          sigma_min: float | Tensor = 0.0) -> Tensor:
    """Convert a network output of parameterisation ``kind`` into :math:`\\hat x_0` (for ``consistency_*``:
    the consistency function, with its boundary at sigma/alpha = ``sigma_min``)."""
    if kind.startswith(_CM):
        x0 = to_x0(base_prediction(kind), out, x_t, alpha, sigma, sigma_data)
        return consistency_from_x0(x0, x_t, alpha, sigma, sigma_data, sigma_min)
    if kind == "velocity":
        return x0_from_velocity(out, x_t, alpha, sigma)
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


def target(kind: str, x0: Tensor, eps: Tensor, alpha: Tensor, sigma: Tensor, sigma_data: float = 0.5,
           sigma_min: float | Tensor = 0.0) -> Tensor:
    """What a network of parameterisation ``kind`` should output for clean ``x0`` and noise ``eps`` (for
    ``consistency_*``: the output whose consistency function is ``x0``; undefined at ``sigma_min``)."""
    if kind.startswith(_CM):
        c_skip, c_edm, r = consistency_coefficients(alpha, sigma, sigma_data, sigma_min)
        x_t = alpha * x0 + sigma * eps
        x_tld = x_t / alpha
        x0_base = c_edm * x_tld + (x0 - c_skip * x_tld) / r
        return target(base_prediction(kind), x0_base, eps_from_x0(x0_base, x_t, alpha, sigma), alpha, sigma,
                      sigma_data)
    if kind == "velocity":
        return velocity_from_x0_eps(x0, eps)
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
