r"""Noise schedules: one continuous time axis :math:`t \in [0, 1]` mapped to :math:`(\alpha_t, \sigma_t)`.

The forward process is :math:`x_t = \alpha_t x_0 + \sigma_t \epsilon`, :math:`\epsilon \sim N(0, I)`,
with log signal-to-noise ratio :math:`\lambda_t = \log(\alpha_t^2 / \sigma_t^2)`, decreasing in t.

* Variance-preserving (VP) schedules have :math:`\alpha_t^2 + \sigma_t^2 = 1` and are given by
  :math:`\bar\alpha(t) = \alpha_t^2`.  They also exist as a discrete table of T steps
  (:meth:`Schedule.discretize`): betas :math:`\beta_i` and :math:`\bar\alpha_i = \prod_{j \le i}(1-\beta_j)`,
  step index i (0-based, as in DDPM code) sitting at :math:`t_i = (i + 1) / T`.
* Variance-exploding (VE) schedules have :math:`\alpha_t = 1` and :math:`\sigma_t` from
  :math:`\sigma_{min}` to :math:`\sigma_{max}` (Song et al. 2021; Karras et al. 2022).
* The linear interpolant of flow matching / rectified flow, :math:`\alpha_t = 1 - t`, :math:`\sigma_t = t`
  (:class:`FlowSchedule`), is neither.

All maths is done in float64; results come back in the dtype of ``t`` (float32 stays float32).

References: Ho et al., DDPM, arXiv:2006.11239; Nichol & Dhariwal, arXiv:2102.09672;
Jabri et al., arXiv:2212.11972 and Chen, arXiv:2301.10972 (sigmoid); Rombach et al.,
arXiv:2112.10752 (scaled linear); Karras et al., EDM, arXiv:2206.00364; Song et al.,
arXiv:2011.13456 (VE, VP SDE); Lin et al., arXiv:2305.08891 (zero terminal SNR); Lipman et al.,
arXiv:2210.02747 and Liu et al., arXiv:2209.03003 (flow matching, rectified flow).
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from ..errors import DifflabError

__all__ = [
    "Schedule", "VPSchedule", "LinearSchedule", "ScaledLinearSchedule", "CosineSchedule",
    "SigmoidSchedule", "EDMSchedule", "VEGeometricSchedule", "FlowSchedule", "DiscreteSchedule",
    "ZeroTerminalSNR", "get_schedule", "schedule_from_spec", "schedule_from_config", "SCHEDULES",
]


def _as_t(t: Tensor | float) -> Tensor:
    return t if isinstance(t, Tensor) else torch.tensor(t, dtype=torch.float64)


class Schedule:
    """Base class.  Subclasses define :meth:`_alpha_sigma` on a float64 tensor ``t``."""

    name = "schedule"
    variance_preserving = True
    discrete = False

    # -- the contract -------------------------------------------------------------------------
    def alpha_sigma(self, t: Tensor | float) -> tuple[Tensor, Tensor]:
        """:math:`(\\alpha_t, \\sigma_t)` for ``t`` in [0, 1], same shape and dtype as ``t``."""
        t = _as_t(t)
        a, s = self._alpha_sigma(t.to(torch.float64).clamp(0.0, 1.0))
        return a.to(t.dtype), s.to(t.dtype)

    def alpha(self, t: Tensor | float) -> Tensor:
        return self.alpha_sigma(t)[0]

    def sigma(self, t: Tensor | float) -> Tensor:
        return self.alpha_sigma(t)[1]

    def logsnr(self, t: Tensor | float) -> Tensor:
        r""":math:`\lambda_t = 2 (\log\alpha_t - \log\sigma_t)`."""
        t = _as_t(t)
        a, s = self._alpha_sigma(t.to(torch.float64).clamp(0.0, 1.0))
        return (2 * (a.log() - s.log())).to(t.dtype)

    def alpha_bar(self, t: Tensor | float) -> Tensor:
        r""":math:`\bar\alpha(t) = \alpha_t^2` (VP notation)."""
        return self.alpha(t) ** 2

    def sigma_ratio(self, t: Tensor | float) -> Tensor:
        r"""The VE-equivalent noise level :math:`\tilde\sigma_t = \sigma_t/\alpha_t = e^{-\lambda_t/2}`
        (Karras et al.'s sigma)."""
        return torch.exp(-0.5 * self.logsnr(t))

    # -- inversions (float64) ------------------------------------------------------------------
    def t_of_logsnr(self, lam: Tensor, iters: int = 60) -> Tensor:
        """The t whose log-SNR is ``lam``: bisection on [0, 1] in float64 (the log-SNR decreases in t)."""
        lo = torch.zeros_like(lam, dtype=torch.float64)
        hi = torch.ones_like(lam, dtype=torch.float64)
        for _ in range(iters):
            mid = (lo + hi) / 2
            above = self.logsnr(mid) > lam
            lo = torch.where(above, mid, lo)
            hi = torch.where(above, hi, mid)
        return (lo + hi) / 2

    def t_of_sigma_ratio(self, ratio: Tensor | float) -> Tensor:
        r"""The t where :math:`\sigma_t/\alpha_t` equals ``ratio`` (a start such as Karras et al.'s 80, a
        churned noise level)."""
        log_r = torch.log(ratio.to(torch.float64)) if isinstance(ratio, Tensor) else \
            torch.tensor(math.log(ratio), dtype=torch.float64)
        return self.t_of_logsnr(-2.0 * log_r)

    @property
    def t_min(self) -> float:
        """The smallest usable t > 0: where samplers stop before the final jump to clean data, the ODE
        ends and likelihoods are evaluated (1e-3; the first knot 1/T on a table)."""
        return 1e-3

    def timestep(self, t: Tensor) -> Tensor:
        """The time value fed to a network's time embedding: ``1000 t`` for continuous schedules.

        Discrete schedules override this with the step index ``t T - 1`` so networks trained by
        DDPM code (integer timesteps 0..T-1) see exactly what they were trained on.
        """
        return 1000.0 * t

    def sample_t(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Training-time proposal for t: uniform on (0, 1] (discrete: uniform over the knots)."""
        u = torch.rand(n, generator=generator, dtype=torch.float64)
        return (1.0 - u).clamp_min(1e-5)

    # -- discretisation -----------------------------------------------------------------------
    def betas(self, T: int) -> Tensor:
        r"""Betas of a T-step table: :math:`\beta_i = \min(1 - \bar\alpha(t_{i+1})/\bar\alpha(t_i), 0.999)`,
        :math:`t_i = i/T` (Nichol & Dhariwal 2021, eq. 17 and their clipping)."""
        if not self.variance_preserving:
            raise DifflabError(f"schedule {self.name!r} is variance-exploding and has no beta table")
        t = torch.arange(T + 1, dtype=torch.float64) / T
        ab = self._alpha_sigma(t)[0] ** 2
        return (1.0 - ab[1:] / ab[:-1]).clamp(max=0.999)

    def discretize(self, T: int = 1000) -> "DiscreteSchedule":
        """The DDPM table of T steps for this schedule."""
        return DiscreteSchedule(self.betas(T), source=self.config())

    # -- serialisation ------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        return {"name": self.name, **self._params()}

    def _params(self) -> dict[str, Any]:
        return {}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._params().items() if k != "betas")
        return f"{type(self).__name__}({args})"

    def _alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError


class VPSchedule(Schedule):
    r"""A VP schedule given by :math:`\log\bar\alpha(t)`; :math:`\alpha = \sqrt{\bar\alpha}`,
    :math:`\sigma = \sqrt{1 - \bar\alpha}` computed as ``sqrt(-expm1(log_ab))`` for accuracy at small t."""

    def log_alpha_bar(self, t: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        lab = self.log_alpha_bar(t)
        return (0.5 * lab).exp(), (-torch.expm1(lab)).clamp_min(0.0).sqrt()


class LinearSchedule(VPSchedule):
    r"""Ho et al. (2020): :math:`\beta_i` linear from ``beta_start`` to ``beta_end`` over T steps.

    Continuous form (the VP SDE of Song et al. 2021, eq. 33) with
    :math:`\beta(t) = T(\beta_{start} + t(\beta_{end} - \beta_{start}))`:
    :math:`\log\bar\alpha(t) = -T(\beta_{start} t + \tfrac12(\beta_{end} - \beta_{start}) t^2)`.
    The discrete table (:meth:`betas`) is the original one, so ``discretize(1000)`` equals
    DDPM's and diffusers' ``beta_schedule="linear"``.
    """

    name = "linear"

    def __init__(self, beta_start: float = 1e-4, beta_end: float = 0.02, T: int = 1000):
        if not 0 < beta_start <= beta_end < 1:
            raise DifflabError(f"linear schedule needs 0 < beta_start <= beta_end < 1, got {beta_start}, {beta_end}")
        self.beta_start, self.beta_end, self.T = beta_start, beta_end, T

    def log_alpha_bar(self, t: Tensor) -> Tensor:
        b0, b1 = self.beta_start, self.beta_end
        return -self.T * (b0 * t + 0.5 * (b1 - b0) * t**2)

    def betas(self, T: int) -> Tensor:
        return torch.linspace(self.beta_start, self.beta_end, T, dtype=torch.float64)

    def _params(self) -> dict[str, Any]:
        return {"beta_start": self.beta_start, "beta_end": self.beta_end, "T": self.T}


class ScaledLinearSchedule(VPSchedule):
    r"""Latent diffusion (Rombach et al. 2022): :math:`\sqrt{\beta_i}` linear over T steps.

    Continuous form with :math:`\beta(t) = T(a + b t)^2`, :math:`a = \sqrt{\beta_{start}}`,
    :math:`b = \sqrt{\beta_{end}} - a`: :math:`\log\bar\alpha(t) = -T((a + bt)^3 - a^3)/(3b)`.
    """

    name = "scaled_linear"

    def __init__(self, beta_start: float = 0.00085, beta_end: float = 0.012, T: int = 1000):
        if not 0 < beta_start < beta_end < 1:
            raise DifflabError(f"scaled_linear schedule needs 0 < beta_start < beta_end < 1, got {beta_start}, {beta_end}")
        self.beta_start, self.beta_end, self.T = beta_start, beta_end, T

    def log_alpha_bar(self, t: Tensor) -> Tensor:
        a = math.sqrt(self.beta_start)
        b = math.sqrt(self.beta_end) - a
        return -self.T * ((a + b * t) ** 3 - a**3) / (3 * b)

    def betas(self, T: int) -> Tensor:
        return torch.linspace(self.beta_start**0.5, self.beta_end**0.5, T, dtype=torch.float64) ** 2

    def _params(self) -> dict[str, Any]:
        return {"beta_start": self.beta_start, "beta_end": self.beta_end, "T": self.T}


class CosineSchedule(VPSchedule):
    r"""Nichol & Dhariwal (2021), eq. 17: :math:`\bar\alpha(t) = f(t)/f(0)`,
    :math:`f(t) = \cos^2\big(\frac{t + s}{1 + s}\frac{\pi}{2}\big)`, s = 0.008.

    :math:`\bar\alpha(1) = 0`; it is floored at ``min_alpha_bar`` so that eps and score
    predictions stay finite at t = 1 (the discrete table instead clips betas at 0.999).
    """

    name = "cosine"

    def __init__(self, s: float = 0.008, min_alpha_bar: float = 1e-9):
        if s < 0:
            raise DifflabError(f"cosine schedule needs s >= 0, got {s}")
        self.s, self.min_alpha_bar = s, min_alpha_bar

    def _f(self, t: Tensor) -> Tensor:
        return torch.cos((t + self.s) / (1 + self.s) * math.pi / 2) ** 2

    def log_alpha_bar(self, t: Tensor) -> Tensor:
        f0 = math.cos(self.s / (1 + self.s) * math.pi / 2) ** 2
        return (self._f(t) / f0).clamp(self.min_alpha_bar, 1.0).log()

    def betas(self, T: int) -> Tensor:
        # Nichol's clipped betas from the unfloored f, as in the paper and diffusers'
        # squaredcos_cap_v2.
        t = torch.arange(T + 1, dtype=torch.float64) / T
        f = self._f(t)
        return (1.0 - f[1:] / f[:-1]).clamp(max=0.999)

    def _params(self) -> dict[str, Any]:
        return {"s": self.s, "min_alpha_bar": self.min_alpha_bar}


class SigmoidSchedule(VPSchedule):
    r"""Sigmoid schedule (Jabri et al. 2022; Chen 2023, Algorithm 1):
    :math:`\bar\alpha(t) = \frac{v_{end} - \mathrm{sig}((t(e - s) + s)/\tau)}{v_{end} - v_{start}}`,
    :math:`v_{start} = \mathrm{sig}(s/\tau)`, :math:`v_{end} = \mathrm{sig}(e/\tau)`, floored at ``min_alpha_bar``.
    """

    name = "sigmoid"

    def __init__(self, start: float = -3.0, end: float = 3.0, tau: float = 1.0, min_alpha_bar: float = 1e-9):
        if not (end > start and tau > 0):
            raise DifflabError(f"sigmoid schedule needs end > start and tau > 0, got {start}, {end}, {tau}")
        self.start, self.end, self.tau, self.min_alpha_bar = start, end, tau, min_alpha_bar

    def log_alpha_bar(self, t: Tensor) -> Tensor:
        sig = lambda x: 1.0 / (1.0 + math.exp(-x))  # noqa: E731
        v0, v1 = sig(self.start / self.tau), sig(self.end / self.tau)
        out = torch.sigmoid((t * (self.end - self.start) + self.start) / self.tau)
        return ((v1 - out) / (v1 - v0)).clamp(self.min_alpha_bar, 1.0).log()

    def _params(self) -> dict[str, Any]:
        return {"start": self.start, "end": self.end, "tau": self.tau, "min_alpha_bar": self.min_alpha_bar}


class EDMSchedule(Schedule):
    r"""Karras et al. (2022), eq. 5: :math:`\alpha_t = 1`,
    :math:`\sigma_t = (\sigma_{min}^{1/\rho} + t(\sigma_{max}^{1/\rho} - \sigma_{min}^{1/\rho}))^\rho`.

    A uniform grid in t is the paper's sampling grid; t = 0 is :math:`\sigma_{min}`, not clean data.
    """

    name = "edm"
    variance_preserving = False

    def __init__(self, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0):
        if not 0 < sigma_min < sigma_max or rho <= 0:
            raise DifflabError(f"edm schedule needs 0 < sigma_min < sigma_max and rho > 0, got {sigma_min}, {sigma_max}, {rho}")
        self.sigma_min, self.sigma_max, self.rho = sigma_min, sigma_max, rho

    def _alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        lo, hi = self.sigma_min ** (1 / self.rho), self.sigma_max ** (1 / self.rho)
        return torch.ones_like(t), (lo + t * (hi - lo)) ** self.rho

    def _params(self) -> dict[str, Any]:
        return {"sigma_min": self.sigma_min, "sigma_max": self.sigma_max, "rho": self.rho}


class VEGeometricSchedule(Schedule):
    r"""Song et al. (2021) VE SDE: :math:`\alpha_t = 1`, :math:`\sigma_t = \sigma_{min}(\sigma_{max}/\sigma_{min})^t`
    (a geometric sequence, as in NCSN, Song & Ermon 2019)."""

    name = "ve"
    variance_preserving = False

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0):
        if not 0 < sigma_min < sigma_max:
            raise DifflabError(f"ve schedule needs 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        self.sigma_min, self.sigma_max = sigma_min, sigma_max

    def _alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        return torch.ones_like(t), self.sigma_min * (self.sigma_max / self.sigma_min) ** t

    def _params(self) -> dict[str, Any]:
        return {"sigma_min": self.sigma_min, "sigma_max": self.sigma_max}


class FlowSchedule(Schedule):
    r"""The linear interpolant of flow matching and rectified flow: :math:`x_t = (1 - t)x_0 + t\epsilon`,
    :math:`\alpha_t = 1 - t`, :math:`\sigma_t = t` (Lipman et al., arXiv:2210.02747; Liu et al.,
    arXiv:2209.03003; Esser et al., arXiv:2403.03206).  Its ODE velocity is
    :math:`dx_t/dt = \epsilon - x_0` (the ``velocity`` parameterisation of :mod:`difflab.denoisers.param`).

    Neither variance-preserving nor -exploding: :math:`\alpha_t^2 + \sigma_t^2 = 1 - 2t(1-t)`.  At t = 1
    the signal vanishes (:math:`\alpha = 0`, log-SNR :math:`-\infty`); like the cosine schedule's
    ``min_alpha_bar``, :math:`\alpha_t` is floored at ``alpha_min`` so that the log-SNR, its inversions,
    :math:`\sigma/\alpha` and eps-type conversions stay finite there: the interpolant is exact for
    :math:`t \le 1 - \alpha_{min}`.
    """

    name = "flow"
    variance_preserving = False

    def __init__(self, alpha_min: float = 1e-4):
        if not 0 < alpha_min < 0.5:
            raise DifflabError(f"flow schedule needs 0 < alpha_min < 0.5, got {alpha_min}")
        self.alpha_min = alpha_min

    def _alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        return (1.0 - t).clamp_min(self.alpha_min), t.clone()

    def betas(self, T: int) -> Tensor:
        raise DifflabError(f"schedule {self.name!r} (the linear interpolant) is not variance-preserving and has "
                           f"no beta table; use it in continuous time")

    def _params(self) -> dict[str, Any]:
        return {"alpha_min": self.alpha_min}


class DiscreteSchedule(Schedule):
    r"""A DDPM table: betas :math:`\beta_0..\beta_{T-1}`, :math:`\bar\alpha_i = \prod_{j\le i}(1 - \beta_j)`.

    Step index i sits at :math:`t_i = (i+1)/T`; t = 0 is clean data (:math:`\bar\alpha = 1`).  Between
    knots :math:`\alpha_t` is interpolated linearly (exact at every knot, and well defined when the
    last :math:`\bar\alpha` is 0 after zero-terminal-SNR rescaling); :math:`\sigma_t = \sqrt{1-\alpha_t^2}`.
    """

    name = "discrete"
    discrete = True

    def __init__(self, betas: Tensor | list[float], source: dict[str, Any] | None = None,
                 alpha_bar: Tensor | None = None):
        betas = torch.as_tensor(betas, dtype=torch.float64)
        if betas.ndim != 1 or len(betas) < 2:
            raise DifflabError("a discrete schedule needs a 1-D table of at least 2 betas")
        if not bool(((betas > 0) & (betas <= 1)).all()):
            raise DifflabError("discrete schedule betas must lie in (0, 1]")
        self.betas_table = betas
        self._explicit_alpha_bar = alpha_bar is not None
        self.alpha_bar_table = torch.cumprod(1.0 - betas, 0) if alpha_bar is None else alpha_bar.to(torch.float64)
        self.source = source
        self.T = len(betas)
        # knots t = 0, 1/T, ..., 1 with alpha = 1 at t = 0
        self._alpha_knots = torch.cat([torch.ones(1, dtype=torch.float64), self.alpha_bar_table.sqrt()])

    def _alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        x = t * self.T
        lo = x.floor().clamp(0, self.T - 1)
        w = x - lo
        k = self._alpha_knots.to(t.device)
        a = k[lo.long()] * (1 - w) + k[(lo + 1).long().clamp(max=self.T)] * w
        return a, (1.0 - a * a).clamp_min(0.0).sqrt()

    def betas(self, T: int) -> Tensor:
        if T != self.T:
            raise DifflabError(f"this schedule is a table of {self.T} steps; cannot re-discretise to {T}")
        return self.betas_table

    def discretize(self, T: int | None = None) -> "DiscreteSchedule":
        if T is not None and T != self.T:
            raise DifflabError(f"this schedule is a table of {self.T} steps; cannot re-discretise to {T}")
        return self

    # step index <-> t adapter
    def index_to_t(self, i: Tensor | int) -> Tensor:
        """:math:`t_i = (i + 1)/T` for 0-based step index i."""
        return (torch.as_tensor(i, dtype=torch.float64) + 1) / self.T

    def t_to_index(self, t: Tensor) -> Tensor:
        """Inverse of :meth:`index_to_t` (a float for t between knots)."""
        return t * self.T - 1

    @property
    def t_min(self) -> float:
        return 1.0 / self.T

    def timestep(self, t: Tensor) -> Tensor:
        return self.t_to_index(t)

    def sample_t(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        i = torch.randint(0, self.T, (n,), generator=generator)
        return self.index_to_t(i)

    def _params(self) -> dict[str, Any]:
        p: dict[str, Any] = {"betas": self.betas_table.tolist(), "source": self.source}
        if self._explicit_alpha_bar:
            p["alpha_bar"] = self.alpha_bar_table.tolist()
        return p

    def __repr__(self) -> str:
        return f"DiscreteSchedule(T={self.T}, source={self.source})"


def rescale_zero_terminal_snr(alpha: Tensor, first: float | Tensor, last: float | Tensor) -> Tensor:
    r"""Lin et al. (2023), Algorithm 1: shift and scale :math:`\sqrt{\bar\alpha}` so that its last
    value is 0 and its first is unchanged: :math:`a' = (a - a_T)\, a_0 / (a_0 - a_T)`."""
    return (alpha - last) * first / (first - last)


class ZeroTerminalSNR(Schedule):
    r"""Wraps a VP schedule so that :math:`\alpha_1 = 0` exactly (SNR 0 at t = 1), Lin et al. (2023).

    For a continuous schedule the anchor is t = 0 (unchanged) and t = 1; discrete tables use
    :func:`zero_terminal_snr_table`, which anchors at the first and last table entries as the paper does.
    Eps-prediction is undefined at SNR 0; use v-prediction with it.
    """

    name = "zero_terminal_snr"

    def __init__(self, base: Schedule):
        if not base.variance_preserving:
            raise DifflabError("zero-terminal-SNR rescaling applies to variance-preserving schedules only")
        self.base = base

    def _alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        a = self.base._alpha_sigma(t)[0]
        a0 = self.base._alpha_sigma(torch.zeros((), dtype=torch.float64))[0]
        a1 = self.base._alpha_sigma(torch.ones((), dtype=torch.float64))[0]
        a = rescale_zero_terminal_snr(a, a0, a1).clamp(0.0, 1.0)
        return a, (1.0 - a * a).clamp_min(0.0).sqrt()

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "base": self.base.config()}


def zero_terminal_snr_table(sched: DiscreteSchedule) -> DiscreteSchedule:
    """A discrete table rescaled to zero terminal SNR (Lin et al. 2023, Algorithm 1)."""
    a = sched.alpha_bar_table.sqrt()
    a = rescale_zero_terminal_snr(a, a[0], a[-1])
    ab = a**2
    betas = 1.0 - ab / torch.cat([torch.ones(1, dtype=torch.float64), ab[:-1]])
    return DiscreteSchedule(betas, source={"zero_terminal_snr": sched.source}, alpha_bar=ab)


SCHEDULES: dict[str, type[Schedule]] = {
    cls.name: cls for cls in (LinearSchedule, ScaledLinearSchedule, CosineSchedule, SigmoidSchedule,
                              EDMSchedule, VEGeometricSchedule, FlowSchedule)
}


def get_schedule(name: str, T: int | None = None, zero_terminal_snr: bool = False, **params: Any) -> Schedule:
    """Build a schedule by name; ``T`` makes it a discrete table of T steps.

    >>> get_schedule("cosine", T=1000)        # DDPM-style cosine table
    >>> get_schedule("edm", rho=7)             # continuous Karras sigmas
    """
    if name not in SCHEDULES:
        raise DifflabError(f"unknown schedule {name!r}; choose from {', '.join(SCHEDULES)}")
    try:
        sched: Schedule = SCHEDULES[name](**params)
    except TypeError as e:
        raise DifflabError(f"bad parameters for schedule {name!r}: {e}") from None
    if T is not None:
        if T < 2:
            raise DifflabError(f"number of steps T must be >= 2, got {T}")
        sched = sched.discretize(T)
        if zero_terminal_snr:
            sched = zero_terminal_snr_table(sched)  # type: ignore[arg-type]
    elif zero_terminal_snr:
        sched = ZeroTerminalSNR(sched)
    return sched


def schedule_from_spec(spec: str | dict[str, Any] | Schedule, T: int | None = 1000) -> Schedule:
    """A schedule from what a user writes: a name (``"cosine"``) or a mapping ``{"name": "cosine", "T": 1000,
    "zero_terminal_snr": false, **parameters}``, as the CLI, sweep configs and diffusers scheduler configs
    give it.  Variance-preserving schedules become T-step tables (``T`` from the mapping, else the
    argument; None or 0: continuous time); variance-exploding ones are continuous, and a T given for one
    in the mapping is refused."""
    if isinstance(spec, Schedule):
        return spec
    params = dict(spec) if isinstance(spec, dict) else {"name": spec}
    if "name" not in params:
        raise DifflabError(f"a schedule needs a name, got {spec!r}")
    name = params.pop("name")
    zts = bool(params.pop("zero_terminal_snr", False))
    explicit = "T" in params
    steps = params.pop("T", T)
    vp = name not in SCHEDULES or SCHEDULES[name].variance_preserving
    if not vp and not explicit:
        steps = None
    return get_schedule(name, T=steps or None, zero_terminal_snr=zts, **params)


def schedule_from_config(cfg: dict[str, Any]) -> Schedule:
    """Inverse of :meth:`Schedule.config` (used by checkpoints)."""
    cfg = dict(cfg)
    name = cfg.pop("name", None)
    if name == "discrete":
        ab = cfg.get("alpha_bar")
        return DiscreteSchedule(cfg["betas"], source=cfg.get("source"),
                                alpha_bar=None if ab is None else torch.tensor(ab, dtype=torch.float64))
    if name == "zero_terminal_snr":
        return ZeroTerminalSNR(schedule_from_config(cfg["base"]))
    if name not in SCHEDULES:
        raise DifflabError(f"unknown schedule {name!r} in config")
    return SCHEDULES[name](**cfg)
