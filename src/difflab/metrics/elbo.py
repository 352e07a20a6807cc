r"""The discrete-time variational bound of a DDPM (Ho et al. 2020, eq. 5; Sohl-Dickstein et al. 2015).

With steps :math:`t = 1..T` (difflab's table index :math:`i = t - 1`, time :math:`(i+1)/T`),

.. math:: -\log p_\theta(x_0) \le \underbrace{KL(q(x_T|x_0)\,\|\,N(0, I))}_{L_T}
          + \sum_{t=2}^{T} \underbrace{E_q\, KL(q(x_{t-1}|x_t, x_0)\,\|\,p_\theta(x_{t-1}|x_t))}_{L_{t-1}}
          \underbrace{- E_q \log p_\theta(x_0|x_1)}_{L_0}.

The posterior :math:`q(x_{t-1}|x_t,x_0) = N(c_0 x_0 + c_t x_t, \tilde\beta_t)` with
:math:`c_0 = \sqrt{\bar\alpha_{t-1}}\beta_t/(1-\bar\alpha_t)`, :math:`c_t = \sqrt{1-\beta_t}(1-\bar\alpha_{t-1})/(1-\bar\alpha_t)`,
:math:`\tilde\beta_t = \beta_t(1-\bar\alpha_{t-1})/(1-\bar\alpha_t)`; the model's step has mean
:math:`c_0\hat x_0(x_t) + c_t x_t` and variance :math:`\sigma_t^2 = \tilde\beta_t` ("fixed_small") or
:math:`\beta_t` ("fixed_large"), so per dimension

.. math:: L_{t-1} = \tfrac12\big(\log(\sigma_t^2/\tilde\beta_t) + \tilde\beta_t/\sigma_t^2 - 1\big)
          + c_0^2 (x_0 - \hat x_0)^2 / (2\sigma_t^2).

The decoder :math:`p(x_0|x_1)` is Gaussian with mean :math:`\hat x_0(x_1)` and variance :math:`\tilde\beta_2`
(as Ho et al.'s code, for both variance choices), integrated over each 8-bit bin of width 2/255
(``decoder="discrete"``: a bound on the discrete likelihood, in bits/dim directly) or taken as a
density (``decoder="gaussian"``, for continuous data).  Each term uses one draw of
:math:`x_t \sim q(x_t|x_0)`; with ``n_t`` the T-1 KL terms are estimated by ``n_t`` uniformly drawn
t per image (an unbiased estimate scaled by (T-1)/n_t).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..data.pixels import to_unit
from ..denoisers.denoiser import network_dtype
from ..errors import DifflabError
from ..process.forward import posterior_coefficients, transition_coefficients

__all__ = ["ElboResult", "ddpm_elbo", "ddpm_coefficients"]


@dataclass
class ElboResult:
    """Per-image terms in nats (summed over dimensions); ``bpd`` = total / (d ln 2)."""
    prior: Tensor
    diffusion: Tensor
    decoder: Tensor
    dims: int

    @property
    def total(self) -> Tensor:
        return self.prior + self.diffusion + self.decoder

    @property
    def bpd(self) -> Tensor:
        return self.total / (self.dims * math.log(2))


def ddpm_coefficients(schedule, T: int | None = None) -> dict[str, Tensor]:
    """float64 tables over t = 1..T: alpha_bar, beta, posterior c0, ct, beta_tilde."""
    if not schedule.variance_preserving:
        raise DifflabError(f"the DDPM bound needs a variance-preserving schedule, not {schedule.name}")
    T = T or getattr(schedule, "T", None) or 1000
    t = torch.arange(1, T + 1, dtype=torch.float64) / T
    a, _ = schedule.alpha_sigma(t)
    ab = (a.double() ** 2).clamp(max=1.0)
    if float(ab[-1]) <= 0.0:
        raise DifflabError("the DDPM bound is infinite for a zero-terminal-SNR schedule (q(x_T|x_0) has no prior match)")
    ab_prev = torch.cat([torch.ones(1, dtype=torch.float64), ab[:-1]])
    # step t-1 <- t of the table: (alpha, sigma) at t-1 and at t
    a_s, s_s, a_t, s_t = ab_prev.sqrt(), (1 - ab_prev).sqrt(), ab.sqrt(), (1 - ab).sqrt()
    beta = transition_coefficients(a_s, s_s, a_t, s_t)[1]
    ct, c0, beta_tilde = posterior_coefficients(a_s, s_s, a_t, s_t)
    return {"t": t, "alpha_bar": ab, "beta": beta, "c0": c0, "ct": ct, "beta_tilde": beta_tilde}


def _discretised_gaussian_logp(x: Tensor, mean: Tensor, log_std: Tensor) -> Tensor:
    """log of N(mean, std^2) mass in the bin [x - 1/255, x + 1/255] of 8-bit data on [-1, 1], the edge
    bins extended to infinity (Ho et al. 2020, eq. 13)."""
    inv = torch.exp(-log_std)
    hi, lo = (x - mean + 1 / 255) * inv, (x - mean - 1 / 255) * inv
    log_cdf_hi = torch.special.log_ndtr(hi)
    log_sf_lo = torch.special.log_ndtr(-lo)

    def log_diff(log_big: Tensor, log_small: Tensor) -> Tensor:  # log(e^big - e^small), no cancellation
        return log_big + torch.log(-torch.expm1((log_small - log_big).clamp(max=-1e-300)))

    # a middle bin's mass from the tail it lies in, so that far-out bins keep their precision
    mid = torch.where(lo > 0, log_diff(log_sf_lo, torch.special.log_ndtr(-hi)),
                      log_diff(log_cdf_hi, torch.special.log_ndtr(lo)))
    return torch.where(x < -0.999, log_cdf_hi, torch.where(x > 0.999, log_sf_lo, mid))


@torch.no_grad()
def ddpm_elbo(denoiser, x0: Tensor, T: int | None = None, variance: str = "fixed_small", decoder: str = "discrete",
              n_t: int | None = None, seed: int = 0, batch_size: int = 256, progress: bool = False) -> ElboResult:
    """The bound above for each image of ``x0`` (uint8, or float in [-1, 1] for ``decoder="gaussian"``).

    ``T`` defaults to the schedule's table length (1000 for continuous schedules, evaluated at
    t = 1/T, ..., 1); cost: T - 1 (or ``n_t``) + 1 network evaluations per image."""
    if variance not in ("fixed_small", "fixed_large"):
        raise DifflabError(f"variance must be fixed_small or fixed_large, got {variance!r}")
    if decoder not in ("discrete", "gaussian"):
        raise DifflabError(f"decoder must be discrete or gaussian, got {decoder!r}")
    if x0.dtype == torch.uint8:
        x0 = to_unit(x0, torch.float64)
    elif decoder == "discrete":
        raise DifflabError("the discrete decoder takes 8-bit images (uint8); use decoder='gaussian' for real data")
    x0 = x0.double()
    co = ddpm_coefficients(denoiser.schedule, T)
    T = len(co["t"])
    g = torch.Generator().manual_seed(seed)
    rounds = T - 1 if n_t is None else n_t
    weight = 1.0 if n_t is None else (T - 1) / n_t
    var_p = co["beta_tilde"] if variance == "fixed_small" else co["beta"]
    dec_var = co["beta_tilde"][1]
    dims = x0[0].numel()
    dtype = network_dtype(denoiser)
    bar = None
    if progress:
        from ..progress import progress_bar
        bar = progress_bar(total=x0.shape[0] * (rounds + 1), desc="ELBO", unit="img-step")

    def col(name: str, i: Tensor) -> Tensor:  # per-sample coefficient, broadcast over the image
        return co[name][i].reshape(-1, *([1] * (x0.ndim - 1)))

    def draw(x: Tensor, i: Tensor) -> tuple[Tensor, Tensor]:
        """x_t ~ q(x_t | x_0) at per-sample steps i, and the denoiser's x0 estimate there."""
        ab = col("alpha_bar", i)
        x_t = ab.sqrt() * x + (1 - ab).sqrt() * torch.randn(x.shape, generator=g, dtype=torch.float64)
        return x_t, denoiser(x_t.to(dtype), co["t"][i].float()).double()

    prior, diff, dec = [], [], []
    for b in range(0, x0.shape[0], batch_size):
        x = x0[b:b + batch_size]
        nb = x.shape[0]
        ab_T = co["alpha_bar"][-1]
        prior.append((0.5 * (ab_T * x**2 + (1 - ab_T) - 1 - torch.log(1 - ab_T))).flatten(1).sum(1))
        kl = torch.zeros(nb, dtype=torch.float64)
        for r in range(rounds):
            # every step once, or one uniformly drawn step per image and round
            i = torch.full((nb,), r + 1) if n_t is None else torch.randint(1, T, (nb,), generator=g)
            _, xh = draw(x, i)
            vq, vp = co["beta_tilde"][i], var_p[i]
            const = 0.5 * (torch.log(vp / vq) + vq / vp - 1) * dims
            mse = (col("c0", i) ** 2 * (x - xh) ** 2).flatten(1).sum(1)
            kl += weight * (const + mse / (2 * vp))
            if bar is not None:
                bar.update(nb)
        diff.append(kl)
        _, xh = draw(x, torch.zeros(nb, dtype=torch.long))
        if decoder == "discrete":
            logp = _discretised_gaussian_logp(x, xh, 0.5 * torch.log(dec_var).expand_as(x))
        else:
            logp = -0.5 * (math.log(2 * math.pi) + torch.log(dec_var) + (x - xh) ** 2 / dec_var)
        dec.append(-logp.flatten(1).sum(1))
        if bar is not None:
            bar.update(nb)
    if bar is not None:
        bar.close()
    return ElboResult(torch.cat(prior), torch.cat(diff), torch.cat(dec), dims)

