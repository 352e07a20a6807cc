"""Few-step generation from a trained teacher: a teacher in, a student checkpoint out.

* :mod:`.progressive`: progressive distillation (Salimans & Ho 2022), DDIM steps halved per round;
* :mod:`.consistency`: consistency distillation and (improved) consistency training (Song et al. 2023;
  Song & Dhariwal 2023), sampled by the ``consistency`` sampler;
* :mod:`.reflow`: rectified flow's reflow (Liu et al. 2022) and the straightness of trajectories.

Each student is an ordinary difflab checkpoint (``Denoiser`` + ``train/checkpoint.py``) that records the
sampler it was made for (``config.json`` ``"sampling"``), which ``difflab sample`` uses by default; every
method runs in the trainer (:func:`difflab.train.train` with an objective), so budgets, seeds, atomic
checkpoints, exact resume, progress and ``log.jsonl`` are the trainer's.  :func:`distill` is the one entry.
"""
from __future__ import annotations

import inspect
import os
from typing import Any

from ..data.kinds import Dataset
from ..errors import DifflabError
from ..train.loop import TrainConfig
from .common import RunRecord, alpha_sigma_or_clean, ddim_step, heun_step, load_teacher, make_student, student_x0
from .consistency import (CONSISTENCY_SAMPLING, ConsistencyObjective, ODEConsistencyFunction,
                          consistency_distillation, ict_steps, karras_boundaries, lognormal_interval_weights,
                          pseudo_huber)
from .progressive import ProgressiveObjective, progressive_distillation, progressive_target, round_dir
from .reflow import REFLOW_SAMPLING, generate_pairs, load_pairs, paired_dataset, reflow, save_pairs, straightness

__all__ = ["METHODS", "distill", "RunRecord", "alpha_sigma_or_clean", "ddim_step", "heun_step", "load_teacher",
           "make_student", "student_x0", "CONSISTENCY_SAMPLING", "ConsistencyObjective", "ODEConsistencyFunction",
           "consistency_distillation", "ict_steps", "karras_boundaries", "lognormal_interval_weights",
           "pseudo_huber", "ProgressiveObjective", "progressive_distillation", "progressive_target", "round_dir",
           "REFLOW_SAMPLING", "generate_pairs", "load_pairs", "paired_dataset", "reflow", "save_pairs",
           "straightness"]

# method -> (needs training data, what it makes)
METHODS = {
    "progressive": (True, "progressive distillation: DDIM steps halved per round (Salimans & Ho 2022)"),
    "consistency": (True, "consistency distillation from the teacher's ODE steps (Song et al. 2023)"),
    "consistency_training": (True, "improved consistency training, teacher weights as start (Song & Dhariwal 2023)"),
    "reflow": (False, "reflow: a straighter flow on the teacher's (noise, sample) pairs (Liu et al. 2022)"),
}


def distill(teacher: str | os.PathLike, out: str | os.PathLike, method: str, data: Dataset | None = None,
            config: TrainConfig | None = None, resume: bool = False, **options: Any) -> Any:
    """Run distillation ``method`` (a key of :data:`METHODS`) from the run or checkpoint ``teacher`` into the
    run folder ``out``; ``options`` are the method's (``rounds=`` for progressive, ``pairs=`` for reflow, ...)."""
    if method not in METHODS:
        raise DifflabError(f"unknown distillation method {method!r}; choose from {', '.join(METHODS)}")
    if METHODS[method][0] and data is None:
        raise DifflabError(f"method {method!r} needs the training data (--data ...)")
    known = set(_options(method))
    unknown = sorted(set(options) - known)
    if unknown:
        raise DifflabError(f"method {method!r} has no option {', '.join(unknown)}; "
                           f"its options: {', '.join(sorted(known))}")
    if method == "progressive":
        return progressive_distillation(teacher, data, out, config=config, resume=resume, **options)
    if method in ("consistency", "consistency_training"):
        return consistency_distillation(teacher, data, out, training=method == "consistency_training",
                                        config=config, resume=resume, **options)
    return reflow(teacher, out, config=config, resume=resume, **options)


def _options(method: str) -> list[str]:
    """The keyword options of a method (its function's, and for the consistency methods its objective's)."""
    fns = {"progressive": [progressive_distillation], "reflow": [reflow],
           "consistency": [consistency_distillation, ConsistencyObjective.__init__]}
    fixed = {"teacher_path", "data", "out", "config", "resume", "training", "self", "teacher"}
    return [p.name for fn in fns[method.replace("_training", "")] for p in inspect.signature(fn).parameters.values()
            if p.kind is p.KEYWORD_ONLY and p.name not in fixed]
