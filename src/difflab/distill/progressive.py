r"""Progressive distillation (Salimans & Ho, "Progressive Distillation for Fast Sampling of Diffusion
Models", arXiv:2202.00512, Algorithm 2): a student learns to do in one DDIM step what its teacher does in
two; the student becomes the next teacher and the number of steps halves each round.

Round k distils the teacher's 2N-step DDIM into an N-step student on the grid :math:`t_0 > \dots > t_N = 0`
(``trailing``: :math:`t_i = 1 - i/N` in continuous time, the nearest knots on a table).  For
:math:`t = t_i`, :math:`t'' = t_{i+1}` and the midpoint :math:`t' = (t + t'')/2`, from :math:`z_t = \alpha_t x + \sigma_t\epsilon`:

.. math:: z_{t'} = \mathrm{DDIM}_\eta(z_t; t \to t'), \quad z_{t''} = \mathrm{DDIM}_\eta(z_{t'}; t' \to t''), \qquad
          \tilde x = \frac{z_{t''} - (\sigma_{t''}/\sigma_t) z_t}{\alpha_{t''} - (\sigma_{t''}/\sigma_t)\alpha_t},

the :math:`\tilde x` with which one student DDIM step from :math:`z_t` lands on :math:`z_{t''}`; the loss is
:math:`w(t)\lVert\tilde x - \hat x_\theta(z_t)\rVert^2` with the paper's "truncated SNR" weighting
:math:`w = \max(\alpha_t^2/\sigma_t^2, 1)` (sec. 4; ``snr_plus_one``: :math:`1 + \alpha_t^2/\sigma_t^2`, the
v-MSE of their eq. 10).  The student starts from the teacher's weights.  On a table whose T the grid does
not divide, :math:`t'` falls between knots, where the schedule interpolates.
"""
from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..data.kinds import Dataset
from ..denoisers.denoiser import Denoiser, DenoiserFn
from ..errors import DifflabError
from ..process.forward import expand
from ..sampling.grids import time_grid
from ..train.loop import TrainConfig, TrainResult, train
from .common import RunRecord, alpha_sigma_or_clean, ddim_step, load_teacher, make_student, student_x0

__all__ = ["PD_WEIGHTINGS", "progressive_target", "ProgressiveObjective", "progressive_distillation",
           "round_dir"]

PD_WEIGHTINGS = ("truncated_snr", "snr_plus_one")
MAX_ROUNDS = 12


def progressive_target(teacher: DenoiserFn, z_t: Tensor, t: Tensor, t_next: Tensor, **cond: Any
                       ) -> tuple[Tensor, Tensor]:
    r"""``(x_tilde, z_t'')``: two teacher DDIM steps :math:`t \to (t + t'')/2 \to t''` and the x0 target that makes
    one DDIM step :math:`t \to t''` reach the same point (Salimans & Ho 2022, Algorithm 2)."""
    t_mid = (t + t_next) / 2
    z_mid = ddim_step(teacher, z_t, t, t_mid, **cond)
    z_next = ddim_step(teacher, z_mid, t_mid, t_next, **cond)
    a, s = alpha_sigma_or_clean(teacher.schedule, t)
    a2, s2 = alpha_sigma_or_clean(teacher.schedule, t_next)
    ratio = s2 / s
    x_tilde = (z_next - expand(ratio, z_t) * z_t) / expand(a2 - ratio * a, z_t)
    return x_tilde, z_next


class ProgressiveObjective:
    """One round: the student's N-step DDIM imitates the teacher's 2N-step DDIM (an :class:`~difflab.train.
    loop.Objective`)."""

    def __init__(self, teacher: Denoiser, steps: int, weighting: str = "truncated_snr"):
        if weighting not in PD_WEIGHTINGS:
            raise DifflabError(f"unknown progressive-distillation weighting {weighting!r}; choose from "
                               f"{', '.join(PD_WEIGHTINGS)}")
        self.teacher, self.steps, self.weighting = teacher, steps, weighting
        self.grid = time_grid(teacher.schedule, steps, "trailing")

    def __call__(self, student: Denoiser, x0: Tensor, generator: torch.Generator, step: int,
                 progress: float, **cond: Any) -> Tensor:
        i = torch.randint(0, self.steps, (x0.shape[0],), generator=generator)
        t, t_next = self.grid[i], self.grid[i + 1]
        eps = torch.randn(x0.shape, generator=generator)
        a, s = student.schedule.alpha_sigma(t)
        z_t = expand(a, x0) * x0 + expand(s, x0) * eps
        x_tilde, _ = progressive_target(self.teacher, z_t, t, t_next, **cond)
        snr = (a / s) ** 2
        w = snr.clamp_min(1.0) if self.weighting == "truncated_snr" else snr + 1.0
        mse = (student_x0(student, z_t, t, **cond) - x_tilde).pow(2).flatten(1).mean(1)
        return w.to(mse.dtype) * mse

    def config(self) -> dict[str, Any]:
        return {"method": "progressive", "student_steps": self.steps, "teacher_steps": 2 * self.steps,
                "weighting": self.weighting}


def round_dir(out: str | os.PathLike, k: int, rounds: int) -> Path:
    """Run folder of round k (1-based): ``OUT/rounds/round_k``, the last round ``OUT`` itself, so that OUT is
    the final student."""
    return Path(out) if k == rounds else Path(out) / "rounds" / f"round_{k}"


def progressive_distillation(teacher_path: str | os.PathLike, data: Dataset, out: str | os.PathLike, *,
                             rounds: int = 4, student_steps: int = 1, weighting: str = "truncated_snr",
                             config: TrainConfig | None = None, resume: bool = False) -> list[TrainResult]:
    """Distil the run ``teacher_path`` in ``rounds`` halvings, from ``student_steps * 2**rounds`` DDIM steps
    down to ``student_steps``.  The budget of ``config`` (steps or minutes) is split evenly over the rounds;
    each round is a training run (checkpoints, log, resume) whose student records its sampler (DDIM,
    trailing grid, its N).  Returns the rounds' results (the finished ones skipped on resume)."""
    if not 1 <= rounds <= MAX_ROUNDS:
        raise DifflabError(f"rounds must be between 1 and {MAX_ROUNDS}, got {rounds}")
    if student_steps < 1:
        raise DifflabError(f"the final student needs >= 1 step, got {student_steps}")
    cfg = config or TrainConfig(steps=100 * rounds)
    cfg.check()
    if cfg.steps is not None and cfg.steps < rounds:
        raise DifflabError(f"a budget of {cfg.steps} steps cannot be split over {rounds} rounds")
    per_round = replace(cfg, steps=None if cfg.steps is None else cfg.steps // rounds,
                        minutes=None if cfg.minutes is None else cfg.minutes / rounds)
    options = {"rounds": rounds, "student_steps": student_steps, "weighting": weighting}
    record = RunRecord(out, "progressive", str(Path(teacher_path).resolve()), options, resume)
    teacher = load_teacher(teacher_path)
    if teacher.prediction.startswith("consistency_"):
        raise DifflabError("progressive distillation needs a denoiser teacher, not a consistency model")
    record.start()
    results = []
    for k in range(1, rounds + 1):
        folder = round_dir(out, k, rounds)
        if not record.done(f"round_{k}"):
            n = student_steps * 2 ** (rounds - k)
            student = make_student(teacher, sampling={"sampler": "ddim", "steps": n, "grid": "trailing"})
            cont = resume and (folder / "checkpoints" / "latest").is_file()
            results.append(train(student, data, folder, per_round, resume=cont,
                                 objective=ProgressiveObjective(teacher, n, weighting)))
            if results[-1].interrupted:
                return results
            record.finish(f"round_{k}")
        teacher = load_teacher(folder)
    return results
