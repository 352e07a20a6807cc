r"""Exact likelihood through the probability-flow ODE (Song et al., arXiv:2011.13456, sec. 4.3 and App. D.2).

In the VE-equivalent variables :math:`\tilde x = x/\alpha`, :math:`u = \log\tilde\sigma`, the ODE is
:math:`d\tilde x/du = h(\tilde x, u) = \tilde x - D(\tilde x, u)` and the instantaneous change of variables
(Chen et al., Neural ODEs, arXiv:1806.07366) gives

.. math:: \log p_{u_0}(\tilde x(u_0)) = \log p_{u_1}(\tilde x(u_1)) - \int_{u_0}^{u_1} \nabla\cdot h\, du,
          \qquad \nabla\cdot h = d - \nabla\cdot D,

integrated from the data end :math:`u_0 = \log\tilde\sigma(t_{min})` to :math:`u_1 = \log\tilde\sigma(t_{max})`,
where the prior is :math:`N(0, (1 + \tilde\sigma_{max}^2) I)` (data of unit scale; its error is
:math:`O(|\mu|/\tilde\sigma_{max})` nats for data of mean :math:`\mu`).  The divergence of D is exact (d vector-Jacobian products) or
Hutchinson's estimate :math:`\epsilon^\top (\partial D/\partial\tilde x)\epsilon` with one Rademacher
:math:`\epsilon` per sample held fixed along the path (Grathwohl et al., FFJORD, arXiv:1810.01367).

For 8-bit data, uniform dequantisation gives the bound
:math:`\text{bits/dim} \le 8 - 1 - E_u[\log p_x(x)]/(d\ln 2)` for x in [-1, 1] (Theis et al. 2016).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from ..denoisers.denoiser import DenoiserFn, network_dtype
from ..errors import DifflabError
from ..sampling.ode import dopri5, log_sigma_time, pf_ode_derivative

__all__ = ["log_likelihood", "bits_per_dim"]


def _divergence(fn, x: Tensor, eps: Tensor | None) -> tuple[Tensor, Tensor]:
    """(fn(x), div fn(x)) per sample; exact when ``eps`` is None, else Hutchinson with ``eps``."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        out = fn(x)
        if eps is not None:
            (g,) = torch.autograd.grad(out, x, eps)
            return out.detach(), (g * eps).flatten(1).sum(1)
        flat_out = out.flatten(1)
        div = torch.zeros(x.shape[0], dtype=out.dtype, device=out.device)
        for i in range(flat_out.shape[1]):
            (g,) = torch.autograd.grad(flat_out[:, i].sum(), x, retain_graph=i < flat_out.shape[1] - 1)
            div = div + g.flatten(1)[:, i]
        return out.detach(), div


def log_likelihood(denoiser: DenoiserFn, x0: Tensor, t_min: float | None = None, sigma_max: float | None = None,
                   exact_trace: bool | None = None, rtol: float = 1e-5, atol: float = 1e-5, seed: int = 0,
                   stats: dict | None = None) -> Tensor:
    """:math:`\\log p(x_0)` in nats per sample (the density at :math:`\\tilde x = x_0` at ``t_min``).

    ``exact_trace`` defaults to True for up to 64 dimensions, Hutchinson above.  ``t_min`` defaults to
    1/T on discrete tables and 1e-3 otherwise; the prior sits at t = 1, or where sigma/alpha =
    ``sigma_max``.  The prior ignores the data mean mu: its error is about x.mu/sigma_max^2 with
    |x| ~ sigma_max, i.e. O(|mu|/sigma_max) nats, so keep sigma_max large (VP schedules reach 150-3e4)."""
    sch = denoiser.schedule
    if t_min is None:
        t_min = sch.t_min
    t_max = 1.0 if sigma_max is None else float(sch.t_of_sigma_ratio(sigma_max))
    if not t_max > t_min:
        raise DifflabError(f"sigma_max={sigma_max} is reached before t_min={t_min}")
    u_tab, t_of = log_sigma_time(sch, t_max, t_min)
    u0, u1 = float(u_tab[0]), float(u_tab[-1])
    x0 = x0.to(torch.float64)
    B, d = x0.shape[0], x0[0].numel()
    exact = d <= 64 if exact_trace is None else exact_trace
    eps = None
    if not exact:
        g = torch.Generator().manual_seed(seed)
        eps = (torch.randint(0, 2, x0.shape, generator=g) * 2 - 1).to(x0.dtype)

    net_dtype = network_dtype(denoiser)  # the ODE state stays float64

    def f(u: float, y: Tensor) -> Tensor:
        t = t_of(u)
        xt = y[:, :-1].reshape(x0.shape)
        # h(x~) = x~ - D(a x~): autograd's divergence includes the chain factor a of D's argument
        h, div_h = _divergence(lambda z: pf_ode_derivative(denoiser, z, t, {}, net_dtype)[0], xt, eps)
        return torch.cat([h.flatten(1), div_h[:, None]], dim=1)

    y0 = torch.cat([x0.flatten(1), torch.zeros(B, 1, dtype=x0.dtype)], dim=1)   # [x~, integral of div h]
    y1, st = dopri5(f, y0, u0, u1, rtol, atol)
    if stats is not None:
        stats.update(st)
    x1, int_div = y1[:, :-1], y1[:, -1]
    var = 1.0 + math.exp(2 * u1)
    log_prior = -0.5 * (x1.pow(2).sum(1) / var + d * math.log(2 * math.pi * var))
    return log_prior + int_div


def bits_per_dim(denoiser: DenoiserFn, x_uint8: Tensor, samples: int = 1, seed: int = 0, **kw) -> Tensor:
    """Upper bound on the NLL of 8-bit images in bits/dim, uniform dequantisation (``samples`` draws)."""
    if x_uint8.dtype != torch.uint8:
        raise DifflabError("bits_per_dim takes uint8 images")
    g = torch.Generator().manual_seed(seed)
    d = x_uint8[0].numel()
    total = torch.zeros(x_uint8.shape[0], dtype=torch.float64)
    for _ in range(samples):
        u = torch.rand(x_uint8.shape, generator=g, dtype=torch.float64)
        x = (x_uint8.to(torch.float64) + u) / 256 * 2 - 1
        total += log_likelihood(denoiser, x, seed=seed, **kw)
    logp = total / samples
    return 7.0 - logp / (d * math.log(2))
