r"""What the distillation methods share: the teacher, the student built from it, per-sample ODE steps,
and the run record (``distill.json``) that makes a distillation resumable.

Per-sample steps: a batch of training pairs has its own times per sample, so the sampler functions
(one grid per batch) do not apply; :func:`ddim_step` and :func:`heun_step` are the same formulas over
the denoiser contract with times of shape ``(B,)``.  A time of exactly 0 means clean data
(:math:`\alpha = 1`, :math:`\sigma = 0`), as on a sampling grid.
"""
from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..denoisers import param
from ..denoisers.denoiser import Denoiser, DenoiserFn
from ..errors import DifflabError
from ..io import atomic_write_json, check_format, read_json
from ..process.forward import expand
from ..process.schedules import Schedule
from ..sampling.karras import ode_derivative

__all__ = ["load_teacher", "make_student", "alpha_sigma_or_clean", "student_x0", "ddim_step", "heun_step",
           "RunRecord"]

RECORD = "distill.json"
RECORD_FORMAT = "difflab-distillation"


def load_teacher(path: str | os.PathLike) -> Denoiser:
    """The EMA denoiser of a run or checkpoint, frozen (no gradients) and in eval mode.  A model in an
    encoder's latent space is refused (its students would need the encoded data set)."""
    from ..train.checkpoint import load_checkpoint
    den = load_checkpoint(path).denoiser("ema")
    if getattr(den, "encoder", None) is not None:
        what = getattr(den.encoder, "kind", None) or type(den.encoder).__name__
        raise DifflabError(f"{path} is a model in the space of an encoder ({what}); distilling such models is not "
                           f"supported (the students would need the encoded data set)")
    return den.requires_grad_(False).eval()


def make_student(teacher: Denoiser, *, schedule: Schedule | None = None, prediction: str | None = None,
                 sampling: dict[str, Any] | None = None, init: str = "teacher", seed: int = 0) -> Denoiser:
    """A trainable denoiser with the teacher's network architecture: its weights copied (``init="teacher"``)
    or freshly initialised with ``seed`` (``"scratch"``); the teacher's schedule and prediction unless given;
    ``sampling`` is the sampler setting it is made for (recorded in its checkpoints)."""
    from ..nn import build_network
    if init == "teacher":
        net = copy.deepcopy(teacher.net)
    elif init == "scratch":
        torch.manual_seed(seed)
        net = build_network({"type": getattr(teacher.net, "network_type", "unet"), **teacher.net.config})
    else:
        raise DifflabError(f"unknown student initialisation {init!r}; choose from teacher, scratch")
    student = Denoiser(net.requires_grad_(True).train(), schedule or teacher.schedule,
                       prediction or teacher.prediction, teacher.clip_x0, teacher.sigma_data)
    student.data_shape, student.data_kind, student.sampling = teacher.data_shape, teacher.data_kind, sampling
    student.classes = getattr(teacher, "classes", None)
    return student


def alpha_sigma_or_clean(schedule: Schedule, t: Tensor) -> tuple[Tensor, Tensor]:
    """Float64 :math:`(\\alpha_t, \\sigma_t)` per sample, with (1, 0) where t = 0 (clean data)."""
    a, s = schedule.alpha_sigma(t.to(torch.float64))
    clean = t == 0
    return torch.where(clean, torch.ones_like(a), a), torch.where(clean, torch.zeros_like(s), s)


def student_x0(student: Denoiser, x_t: Tensor, t: Tensor, **cond: Any) -> Tensor:
    """The student's :math:`\\hat x_0` (or consistency function) at per-sample times ``t``, differentiable and
    without the sampling-time clipping of ``clip_x0``."""
    a, s = student.schedule.alpha_sigma(t)
    out = student.raw(x_t, t, alpha_sigma=(a, s), **cond).float()
    return param.to_x0(student.prediction, out, x_t, expand(a, x_t), expand(s, x_t), student.sigma_data,
                       student.sigma_min)


@torch.no_grad()
def ddim_step(denoiser: DenoiserFn, x: Tensor, t: Tensor, s: Tensor, **cond: Any) -> Tensor:
    r"""One deterministic DDIM step from t to the earlier s (Song et al., arXiv:2010.02502, eq. 12, eta = 0):
    :math:`x_s = \alpha_s\hat x_0 + \sigma_s\hat\epsilon`, :math:`\hat\epsilon = (x_t - \alpha_t\hat x_0)/\sigma_t`;
    ``t`` and ``s`` are ``(B,)`` float64."""
    a_t, s_t = alpha_sigma_or_clean(denoiser.schedule, t)
    a_s, s_s = alpha_sigma_or_clean(denoiser.schedule, s)
    x0 = denoiser(x, t, **cond)
    eps = param.eps_from_x0(x0, x, expand(a_t, x), expand(s_t, x))
    return expand(a_s, x) * x0 + expand(s_s, x) * eps


@torch.no_grad()
def heun_step(denoiser: DenoiserFn, x: Tensor, t: Tensor, s: Tensor, **cond: Any) -> Tensor:
    r"""One Heun step of the probability-flow ODE from t to s in the VE-equivalent variables (Karras et al.,
    arXiv:2206.00364, Algorithm 1; an Euler step where :math:`\sigma_s = 0`), per sample: 2 evaluations."""
    sch = denoiser.schedule
    a_t, s_t = alpha_sigma_or_clean(sch, t)
    a_s, s_s = alpha_sigma_or_clean(sch, s)
    sig_t, sig_s = s_t / a_t, s_s / a_s
    x_tld = x / expand(a_t, x)
    d, _ = ode_derivative(denoiser, x_tld, t, a_t, sig_t, cond)
    x_next = x_tld + expand(sig_s - sig_t, x) * d
    if bool((sig_s > 0).any()):
        d2, _ = ode_derivative(denoiser, x_next, s, a_s, sig_s, cond)
        d2 = torch.where(expand(sig_s, x) > 0, d2, d)
        x_next = x_tld + expand(sig_s - sig_t, x) * (d + d2) / 2
    return expand(a_s, x) * x_next


class RunRecord:
    """``OUT/distill.json``: the method, its teacher and options, and the finished stages (rounds) of a
    distillation, so that ``resume`` continues the same one and refuses a different one.  Made before the
    work (it refuses a mismatched resume at once), written by :meth:`start` after the inputs are checked."""

    def __init__(self, out: str | os.PathLike, method: str, teacher: str | None, options: dict[str, Any],
                 resume: bool):
        self.path = Path(out) / RECORD
        self.data: dict[str, Any] = {"format": RECORD_FORMAT, "format_version": 1, "method": method,
                                     "teacher": teacher, "options": json.loads(json.dumps(options)), "finished": []}
        if resume:
            if not self.path.is_file():
                raise DifflabError(f"cannot resume: {self.path} not found (start without --resume)")
            old = read_json(self.path, "distillation record")
            check_format(old, RECORD_FORMAT, (1,), self.path)
            for key in ("method", "teacher", "options"):
                if old.get(key) != self.data[key]:
                    raise DifflabError(f"cannot resume {self.path.parent}: it was made with {key} {old.get(key)!r}, "
                                       f"not {self.data[key]!r}")
            self.data["finished"] = old.get("finished", [])
        elif self.path.is_file():
            raise DifflabError(f"{self.path.parent} already holds a distillation; use --resume or another --out")

    def start(self) -> None:
        """Write the record: called once the teacher and options are checked, so a refused distillation
        leaves no record behind that would block its own ``--out``."""
        self.write()

    def write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.path, self.data)

    def done(self, stage: str) -> bool:
        return stage in self.data["finished"]

    def finish(self, stage: str) -> None:
        self.data["finished"].append(stage)
        self.write()
