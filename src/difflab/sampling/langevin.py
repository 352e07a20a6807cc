r"""Score-based samplers with Langevin dynamics: predictor-corrector (Song et al. 2021) and annealed
Langevin dynamics (Song & Ermon 2019).  The score comes from the denoiser by Tweedie's formula,
:math:`\nabla\log p_t(x) = (\alpha_t\hat x_0 - x)/\sigma_t^2` (as :func:`~difflab.denoisers.score_hat`).
"""
from __future__ import annotations

from typing import Any

from torch import Tensor

from ..denoisers.denoiser import DenoiserFn
from ..errors import DifflabError
from ..process.forward import expand
from .ancestral import ancestral_chain
from .grids import grid_alpha_sigma
from .noise import randn_like
from .registry import Callback, Noise, emit, register

__all__ = ["sample_pc", "sample_ald"]

STEP_RULES = ("sigma", "snr")


def _per_sample_norm(v: Tensor) -> Tensor:
    return v.flatten(1).norm(dim=1)


@register("pc", order=1, nfe_per_step=lambda o: 1 + o["corrector_steps"], stochastic=True,
          summary="predictor-corrector: ancestral predictor + Langevin corrector (Song et al. 2021)")
def sample_pc(denoiser: DenoiserFn, x_T: Tensor, ts: Tensor, *, generator: Noise = None, callback: Callback = None,
              snr: float = 0.16, corrector_steps: int = 1, step_rule: str = "sigma", **cond: Any) -> Tensor:
    r"""Predictor-corrector sampling, Song et al., arXiv:2011.13456, Algorithms 2-5.

    Predictor: the ancestral step :math:`x_s \sim q(x_s \mid x_t, \hat x_0)` (:func:`~.ancestral.ancestral_step`).
    Corrector at the new time s: ``corrector_steps`` Langevin steps
    :math:`x \leftarrow x + \epsilon\nabla\log p_s(x) + \sqrt{2\epsilon}\,z`, with the signal-to-noise step
    size :math:`\epsilon = 2\alpha_i(r\lVert z\rVert/\lVert\nabla\rVert)^2` (r = ``snr``;
    :math:`\alpha_i = (\alpha_t/\alpha_s)^2`, 1 for VE).

    ``step_rule``: ``"snr"`` measures both norms as batch means, as Song et al.'s code does (samples then
    depend on their batch); ``"sigma"`` (default) uses their noise-dominated value
    :math:`\lVert\nabla\rVert \approx \lVert z\rVert/\sigma_s`, i.e. :math:`\epsilon = 2\alpha_i r^2\sigma_s^2`,
    the same for every sample (and stable in low dimension, where per-sample norms are not).
    NFE per step: 1 + ``corrector_steps``.
    """
    if step_rule not in STEP_RULES:
        raise DifflabError(f"step_rule must be one of {', '.join(STEP_RULES)}, got {step_rule!r}")
    a, s = grid_alpha_sigma(denoiser.schedule, ts)

    def langevin(x: Tensor, k: int) -> Tensor:   # corrector_steps Langevin steps at grid time k
        alpha_i = min(1.0, float((a[k - 1] / a[k]) ** 2))
        for _ in range(corrector_steps):
            # Tweedie's score (alpha_s x0_hat - x) / sigma_s^2, sigma_s^2 taken in float64
            grad = (expand(a[k], x) * denoiser(x, ts[k], **cond) - x) / expand(s[k] ** 2, x)
            z = randn_like(x, generator)
            ratio = _per_sample_norm(z).mean() / _per_sample_norm(grad).mean() if step_rule == "snr" else s[k]
            eps = 2 * alpha_i * (snr * ratio) ** 2
            x = x + expand(eps, x) * grad + expand((2 * eps).sqrt(), x) * z
        return x

    return ancestral_chain(denoiser, x_T, ts, generator=generator, callback=callback, corrector=langevin, cond=cond)


@register("ald", order=1, nfe_per_step=lambda o: o["steps_per_level"], stochastic=True, grid="logsnr",
          sigma_max=50.0, recommended={"steps_per_level": 5},
          summary="annealed Langevin dynamics over the noise levels (Song & Ermon 2019)")
def sample_ald(denoiser: DenoiserFn, x_T: Tensor, ts: Tensor, *, generator: Noise = None, callback: Callback = None,
               steps_per_level: int = 10, epsilon: float | None = None, denoise: bool = True, **cond: Any) -> Tensor:
    r"""Annealed Langevin dynamics, Song & Ermon, arXiv:1907.05600, Algorithm 1, in the VE-equivalent
    variables :math:`\tilde x = x/\alpha`, :math:`\tilde\sigma = \sigma/\alpha`: for each noise level of the grid,
    ``steps_per_level`` steps :math:`\tilde x \leftarrow \tilde x + \tfrac{\eta_i}{2}\nabla\log p + \sqrt{\eta_i}\,z`,
    :math:`\eta_i = \epsilon\,\tilde\sigma_i^2/\tilde\sigma_L^2`, score :math:`(\hat x_0 - \tilde x)/\tilde\sigma_i^2`.
    ``epsilon`` defaults to :math:`0.1\tilde\sigma_L^2`.  With ``denoise`` the result is :math:`\hat x_0` at the
    last level (Jolicoeur-Martineau et al., arXiv:2009.05475), one more network call.
    It needs geometric noise levels from a moderate sigma (NCSN: 50): ``--grid logsnr --sigma-max 50``;
    from the sigma/alpha of about 3e4 that VP schedules reach at t = 1 a few Langevin steps per level
    cannot bring the state down.
    """
    a, s = grid_alpha_sigma(denoiser.schedule, ts)
    sig = s / a
    levels = [i for i in range(len(ts)) if sig[i] > 0]
    sig_L = sig[levels[-1]]
    eps0 = 0.1 * sig_L**2 if epsilon is None else epsilon
    x = x_T / expand(a[0], x_T)
    x0 = x
    for i in levels:
        eta = eps0 * sig[i] ** 2 / sig_L**2
        for _ in range(steps_per_level):
            x0 = denoiser(expand(a[i], x) * x, ts[i], **cond)
            x = x + expand(eta / 2, x) * (x0 - x) / expand(sig[i] ** 2, x) + expand(eta.sqrt(), x) * randn_like(x, generator)
        emit(callback, i, ts[i], x * expand(a[i], x), x0)
    if denoise:
        i = levels[-1]
        return denoiser(expand(a[i], x) * x, ts[i], **cond)
    return x * expand(a[levels[-1]], x)
