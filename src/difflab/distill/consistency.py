r"""Consistency distillation and consistency training (Song et al., "Consistency Models", arXiv:2303.01469;
improved consistency training, Song & Dhariwal, arXiv:2310.14189).

A consistency model :math:`f_\theta(x_t, t)` maps every point of a probability-flow trajectory to its end at
:math:`t_{min}`; the boundary condition :math:`f(x, t_{min}) = x` is built into the ``consistency_*``
parameterisation (:mod:`difflab.denoisers.param`).  Both methods compare the model at two neighbouring
noise levels :math:`\tilde\sigma_n < \tilde\sigma_{n+1}` (:math:`\tilde\sigma = \sigma/\alpha`) of a Karras
discretisation (:math:`\tilde\sigma^{1/\rho}` uniform between :math:`\tilde\sigma(t_{min})` and
:math:`\tilde\sigma_{max} = 80`, :math:`\rho = 7`, as Song et al.), topped by t = 1 where sampling starts (the
schedules reach :math:`\tilde\sigma` of 1e4 there).  Above 80 the denoiser is nearly constant (about the data
mean), so CD's teacher crosses that top interval with one DDIM step, which is exact for a constant denoiser
(:math:`\tilde x_s = \hat x_0 + (\tilde\sigma_s/\tilde\sigma_t)(\tilde x_t - \hat x_0)`); a Heun step there
overshoots: it adds :math:`(\tilde\sigma_t - \tilde\sigma_s)/(2\tilde\sigma_s)` (over 60) times the change of the
denoiser across the interval to that DDIM point, where the exact flow adds about half of it (against the
closed-form flow of Gaussian data, ``tests/test_distill.py``: DDIM misses by 0.6 % of the data's standard
deviation, Heun by 229 %):

.. math:: L = \lambda_n\, d\big(f_\theta(x_{t_{n+1}}, t_{n+1}),\ \mathrm{sg}[f_\theta(\hat x_{t_n}, t_n)]\big),
          \qquad x_{t_{n+1}} = \alpha_{n+1}x_0 + \sigma_{n+1}z,

* distillation (CD, Song et al. Algorithm 2): :math:`\hat x_{t_n}` is one ODE step of the teacher from
  :math:`x_{t_{n+1}}` (Heun, or DDIM; DDIM on the top interval above 80); N = 18 Karras levels (and t = 1),
  n uniform, iCT's :math:`\lambda_n = 1/(\tilde\sigma_{n+1} - \tilde\sigma_n)` (``weighting="inverse_interval"``,
  the default) or Song et al.'s :math:`\lambda = 1` (``"unit"``);
* training (CT, the improved recipe of Song & Dhariwal 2023): :math:`\hat x_{t_n} = \alpha_n x_0 + \sigma_n z`
  with the same z; the discretisation curriculum :math:`N(k) = \min(s_0 2^{\lfloor k/K'\rfloor}, s_1) + 1`
  (their eq. 8, :math:`s_0 = 10`, :math:`s_1 = 1280`, :math:`K' = \lfloor K/(\log_2\lfloor s_1/s_0\rfloor + 1)\rfloor`,
  here as the fraction k/K of the budget), n drawn by the discretised lognormal
  :math:`p(n) \propto \mathrm{erf}\frac{\log\tilde\sigma_{n+1} - P_{mean}}{\sqrt2 P_{std}} - \mathrm{erf}\frac{\log\tilde\sigma_n - P_{mean}}{\sqrt2 P_{std}}`
  (eq. 10, :math:`P_{mean} = -1.1`, :math:`P_{std} = 2`), :math:`\lambda_n = 1/(\tilde\sigma_{n+1} - \tilde\sigma_n)` (eq. 9).

The metric d is, for CD, the mean squared error (Song et al.'s L2; their LPIPS needs ImageNet features
difflab does not have) and, for CT, the pseudo-Huber :math:`\sqrt{\lVert x - y\rVert^2 + c^2} - c`,
:math:`c = 0.00054\sqrt{D}` (Song & Dhariwal, sec. 3.3); ``metric`` chooses.  (On the 2-D checkerboard,
distilling a flow for 3000 steps at learning rate 2e-4, the squared error gave one-step samples at the
data's own sliced-Wasserstein floor, 0.028 against 0.024, the pseudo-Huber 0.059: with D = 2 its c is 8e-4
and it acts as an L1 loss.)  Neither method keeps a target EMA: :math:`\theta^- = \theta` (Song & Dhariwal,
sec. 3.2; Song et al. used an EMA for CD).  The student starts from the teacher's weights
(``init="teacher"``), which the ``consistency_<base>`` parameterisation makes a good start (Geng et al.,
arXiv:2406.14548); CT can also start from scratch.  The trainer's EMA of the student is what is sampled.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..data.kinds import Dataset
from ..denoisers.denoiser import Denoiser, DenoiserFn, as_time
from ..errors import DifflabError
from ..process.forward import q_sample
from ..sampling.grids import time_grid
from ..sampling.ode import sample_ode
from ..train.loop import TrainConfig, TrainResult, train
from .common import RunRecord, ddim_step, heun_step, load_teacher, make_student, student_x0

__all__ = ["SOLVERS", "METRICS", "PROPOSALS", "WEIGHTINGS", "karras_boundaries", "ict_steps", "lognormal_interval_weights",
           "pseudo_huber", "ConsistencyObjective", "consistency_distillation", "ODEConsistencyFunction",
           "CONSISTENCY_SAMPLING"]

SOLVERS = {"heun": heun_step, "ddim": ddim_step}
METRICS = ("pseudo_huber", "l2")
PROPOSALS = ("uniform", "lognormal")
WEIGHTINGS = ("unit", "inverse_interval")
DEFAULT_WEIGHTING = "inverse_interval"
CONSISTENCY_SAMPLING = {"sampler": "consistency", "steps": 1, "grid": "trailing"}


def karras_boundaries(schedule: Any, n: int, sigma_max: float | None = 80.0) -> tuple[Tensor, Tensor]:
    r"""Increasing times :math:`t_{min} = t_1 < \dots < t_n` with :math:`\tilde\sigma^{1/7}` uniform up to
    ``sigma_max`` (the ``karras`` time grid, :func:`~difflab.sampling.grids.time_grid`), then t = 1 if that is
    above (n + 1 times), and their :math:`\tilde\sigma`.  ``sigma_max=None``: up to t = 1."""
    ts = time_grid(schedule, n, "karras", sigma_max=sigma_max)[:-1].flip(0)
    if float(ts[-1]) < 1.0:
        ts = torch.cat([ts, torch.ones(1, dtype=torch.float64)])
    return ts, schedule.sigma_ratio(ts)


def ict_steps(progress: float, s0: int = 10, s1: int = 1280) -> int:
    r"""Boundaries of the improved-CT curriculum at the fraction ``progress`` of training:
    :math:`\min(s_0 2^{\lfloor p\,(\log_2\lfloor s_1/s_0\rfloor + 1)\rfloor}, s_1) + 1`
    (Song & Dhariwal 2023, eq. 8)."""
    stages = math.floor(math.log2(s1 // s0)) + 1
    return min(s0 * 2 ** math.floor(min(max(progress, 0.0), 1.0) * stages), s1) + 1


def lognormal_interval_weights(sig: Tensor, p_mean: float = -1.1, p_std: float = 2.0) -> Tensor:
    """Unnormalised probabilities of the intervals ``(sig[n], sig[n+1])`` under the discretised lognormal
    (Song & Dhariwal 2023, eq. 10)."""
    cdf = torch.erf((sig.log() - p_mean) / (math.sqrt(2) * p_std))
    return cdf[1:] - cdf[:-1]


def pseudo_huber(x: Tensor, y: Tensor, c: float) -> Tensor:
    r""":math:`\sqrt{\lVert x - y\rVert^2 + c^2} - c` per sample (Charbonnier; Song & Dhariwal 2023, eq. 11)."""
    return ((x - y).pow(2).flatten(1).sum(1) + c * c).sqrt() - c


class ConsistencyObjective:
    r"""The CD or CT loss of the module docstring (an :class:`~difflab.train.loop.Objective`).

    Args:
        teacher: the denoiser whose ODE steps give CD's targets; None: consistency training.
        boundaries: CD's N (fixed); CT follows the curriculum from ``s0`` to ``s1``.
        solver: CD's teacher step, ``heun`` (2 evaluations) or ``ddim``.
        metric: ``l2`` (mean squared error; CD default) or ``pseudo_huber`` (CT default).
        proposal: how the interval n is drawn: ``uniform`` (CD default) or ``lognormal`` (CT default).
        weighting: the loss weight of interval n: ``inverse_interval`` (default),
            :math:`1/(\tilde\sigma_{n+1} - \tilde\sigma_n)` (Song & Dhariwal 2023, eq. 9), which weighs the narrow
            low-noise intervals most and so keeps the student consistent there, or ``unit`` (Song et al. 2023's
            CD).  Unit-weighted CD of the 10-minute MNIST teacher drifted at low noise: at sigma/alpha 0.45 its
            f was 0.21 (RMS) from the teacher's own ODE endpoint where the teacher's denoiser, its starting
            point, is 0.04; inverse-interval weighting keeps it at 0.036 (BENCHMARKS.md, few-step).
        sigma_max: the top of the Karras levels (sigma/alpha, 80 as Song et al.); above it one interval up to
            t = 1, where sampling starts.  None: Karras levels up to t = 1.
    """

    def __init__(self, teacher: DenoiserFn | None = None, *, boundaries: int = 18, s0: int = 10, s1: int = 1280,
                 solver: str = "heun", metric: str | None = None, proposal: str | None = None,
                 p_mean: float = -1.1, p_std: float = 2.0, sigma_max: float | None = 80.0,
                 weighting: str | None = None):
        if solver not in SOLVERS:
            raise DifflabError(f"unknown ODE solver {solver!r} for consistency distillation; choose from "
                               f"{', '.join(SOLVERS)}")
        metric = metric or ("l2" if teacher is not None else "pseudo_huber")
        if metric not in METRICS:
            raise DifflabError(f"unknown consistency metric {metric!r}; choose from {', '.join(METRICS)}")
        proposal = proposal or ("uniform" if teacher is not None else "lognormal")
        if proposal not in PROPOSALS:
            raise DifflabError(f"unknown noise-level proposal {proposal!r}; choose from {', '.join(PROPOSALS)}")
        weighting = weighting or DEFAULT_WEIGHTING
        if weighting not in WEIGHTINGS:
            raise DifflabError(f"unknown consistency weighting {weighting!r}; choose from {', '.join(WEIGHTINGS)}")
        if boundaries < 3 or not 2 <= s0 <= s1:
            raise DifflabError(f"consistency models need >= 3 boundaries and 2 <= s0 <= s1, got {boundaries}, "
                               f"{s0}, {s1}")
        self.teacher, self.boundaries, self.s0, self.s1 = teacher, boundaries, s0, s1
        self.solver, self.metric, self.proposal, self.weighting = solver, metric, proposal, weighting
        self.p_mean, self.p_std, self.sigma_max = p_mean, p_std, sigma_max
        self._grids: dict[tuple[int, int], tuple[Tensor, Tensor]] = {}

    def _grid(self, student: Denoiser, n: int) -> tuple[Tensor, Tensor]:
        key = (id(student.schedule), n)
        if key not in self._grids:
            self._grids[key] = karras_boundaries(student.schedule, n, self.sigma_max)
        return self._grids[key]

    def teacher_step(self, x_hi: Tensor, t_hi: Tensor, t_lo: Tensor, top: Tensor, **cond: Any) -> Tensor:
        """CD's target point: one step of the teacher's ODE from ``t_hi`` to ``t_lo`` (per sample, ``(B,)``), with
        the chosen solver, and with DDIM where ``top`` (the interval from t = 1 down to ``sigma_max``)."""
        solver = SOLVERS[self.solver]
        if not bool(top.any()) or solver is ddim_step:
            return solver(self.teacher, x_hi, t_hi, t_lo, **cond)
        out = torch.empty_like(x_hi)
        for mask, step in ((top, ddim_step), (~top, solver)):
            if bool(mask.any()):
                part = {k: v[mask] if torch.is_tensor(v) and v.shape[:1] == mask.shape else v for k, v in cond.items()}
                out[mask] = step(self.teacher, x_hi[mask], t_hi[mask], t_lo[mask], **part).to(out.dtype)
        return out

    def __call__(self, student: Denoiser, x0: Tensor, generator: torch.Generator, step: int,
                 progress: float, **cond: Any) -> Tensor:
        n = self.boundaries if self.teacher is not None else ict_steps(progress, self.s0, self.s1)
        ts, sig = self._grid(student, n)
        if self.proposal == "uniform":
            probs = torch.ones(len(ts) - 1, dtype=torch.float64)
        else:
            probs = lognormal_interval_weights(sig, self.p_mean, self.p_std)
        j = torch.multinomial(probs, x0.shape[0], replacement=True, generator=generator)
        t_lo, t_hi = ts[j], ts[j + 1]
        z = torch.randn(x0.shape, generator=generator)
        x_hi = q_sample(student.schedule, x0, t_hi, z)
        if self.teacher is not None:
            appended = self.sigma_max is not None and len(ts) == n + 1   # karras_boundaries added t = 1
            top = (j == len(ts) - 2) if appended else torch.zeros_like(j, dtype=torch.bool)
            x_lo = self.teacher_step(x_hi, t_hi, t_lo, top, **cond)
        else:
            x_lo = q_sample(student.schedule, x0, t_lo, z)   # CT: the same noise at the neighbouring level
        with torch.no_grad():
            target = student_x0(student, x_lo, t_lo, **cond)
        pred = student_x0(student, x_hi, t_hi, **cond)
        if self.metric == "pseudo_huber":
            d = pseudo_huber(pred, target, 0.00054 * math.sqrt(x0[0].numel()))
        else:
            d = (pred - target).pow(2).flatten(1).mean(1)
        if self.weighting == "unit":
            return d
        return d / (sig[j + 1] - sig[j]).to(d.dtype)

    def config(self) -> dict[str, Any]:
        kind = "distillation" if self.teacher is not None else "training"
        cfg = {"method": f"consistency_{kind}", "metric": self.metric, "proposal": self.proposal,
               "weighting": self.weighting, "sigma_max": self.sigma_max}
        if self.teacher is not None:
            cfg.update(boundaries=self.boundaries, solver=self.solver)
        else:
            cfg.update(s0=self.s0, s1=self.s1, p_mean=self.p_mean, p_std=self.p_std)
        return cfg


def consistency_distillation(teacher_path: str | os.PathLike, data: Dataset, out: str | os.PathLike, *,
                             training: bool = False, init: str = "teacher", config: TrainConfig | None = None,
                             resume: bool = False, **options: Any) -> TrainResult:
    """Distil the run ``teacher_path`` into a consistency model in ``out`` (CD), or with ``training=True``
    train one on ``data`` with the teacher's architecture and schedule and, by default, its weights as the
    start (CT).  ``options`` go to :class:`ConsistencyObjective`.  The student's prediction is
    ``consistency_<teacher's>`` and its checkpoints record the consistency sampler, 1 step, trailing grid."""
    cfg = config or TrainConfig(steps=1000)
    method = "consistency_training" if training else "consistency"
    if not training:   # recorded, so that a CD run begun under the old unit default is not resumed under the new
        options = {"weighting": DEFAULT_WEIGHTING, **options}
    record = RunRecord(out, method, str(Path(teacher_path).resolve()), {"init": init, **options}, resume)
    teacher = load_teacher(teacher_path)
    if teacher.prediction.startswith("consistency_"):
        raise DifflabError(f"{teacher_path} is a consistency model already; give a denoiser teacher")
    objective = ConsistencyObjective(None if training else teacher, **options)
    student = make_student(teacher, prediction=f"consistency_{teacher.prediction}", sampling=CONSISTENCY_SAMPLING,
                           init=init, seed=cfg.seed)
    record.start()
    res = train(student, data, out, cfg, resume=resume and (record.path.parent / "checkpoints" / "latest").is_file(),
                objective=objective)
    if not res.interrupted:
        record.finish("training")
    return res


class ODEConsistencyFunction(nn.Module):
    r"""The exact consistency function of a denoiser,
    :math:`f(x_t, t) = \tilde x(t_{min}) = x(t_{min})/\alpha_{t_{min}}`: the probability-flow ODE solved from t down to the schedule's ``t_min`` (the adaptive ``ode`` sampler,
    tolerance ``rtol``); the identity at :math:`t \le t_{min}`.  Slow (one adaptive solve per distinct t in a
    batch): an oracle for tests, and the function consistency distillation approximates."""

    def __init__(self, denoiser: DenoiserFn, rtol: float = 1e-6):
        super().__init__()
        self.denoiser, self.schedule, self.rtol = denoiser, denoiser.schedule, rtol

    def forward(self, x_t: Tensor, t: Tensor | float, **cond: Any) -> Tensor:
        t = as_time(t, x_t)
        t_min = self.schedule.t_min
        a_min = self.schedule.alpha_sigma(torch.tensor(t_min, dtype=torch.float64))[0]
        out = torch.empty_like(x_t)
        for tv in torch.unique(t):
            rows = t == tv
            x, a = x_t[rows], self.schedule.alpha_sigma(tv)[0]
            if float(tv) > t_min:
                ts = torch.tensor([float(tv), t_min], dtype=torch.float64)
                x = sample_ode(self.denoiser, x, ts, rtol=self.rtol, atol=self.rtol,
                               **{k: v[rows] for k, v in cond.items()})
                a = a_min
            out[rows] = x / a.to(x.dtype)
        return out
