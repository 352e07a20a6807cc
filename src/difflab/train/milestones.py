"""Checkpoints kept along a run, for quality against training time.

A trainer keeps only its newest ``keep`` checkpoints in ``RUN/checkpoints/``; a *milestone* is a
checkpoint also kept in ``RUN/milestones/step_<step>/``, out of reach of that rotation.  Its files are
hard links to the checkpoint's (copies where links are not possible): checkpoint files are never
modified in place, so the two folders cannot diverge.  :func:`run_checkpoints` lists every checkpoint
of a run, rotated or kept, by step.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Sequence

from ..errors import DifflabError
from ..io import fsync_dir

__all__ = ["keep_milestone", "run_checkpoints", "milestones_due"]


def keep_milestone(checkpoint: str | os.PathLike) -> Path:
    """Keep the checkpoint folder ``RUN/checkpoints/step_X`` as ``RUN/milestones/step_X`` (built in a
    temporary folder and renamed into place, so a milestone is complete or absent)."""
    src = Path(checkpoint)
    root = src.parent.parent / "milestones"
    root.mkdir(parents=True, exist_ok=True)
    final = root / src.name
    if final.exists():
        shutil.rmtree(final)
    tmp = root / f".tmp-{src.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    for f in src.iterdir():
        try:
            os.link(f, tmp / f.name)
        except OSError:
            shutil.copy2(f, tmp / f.name)
    os.rename(tmp, final)
    fsync_dir(root)
    return final


def milestones_due(fractions: Sequence[float], progress: float, done: int) -> int:
    """How many of the increasing budget ``fractions`` a run at ``progress`` (fraction of its budget
    spent) has reached; ``done`` of them were already kept."""
    reached = done
    while reached < len(fractions) and progress >= fractions[reached] - 1e-12:
        reached += 1
    return reached


def run_checkpoints(run: str | os.PathLike) -> list[Path]:
    """Every complete checkpoint folder of a run (``checkpoints/step_*`` and ``milestones/step_*``), one
    per step, ordered by step."""
    run = Path(run)
    if not run.is_dir():
        raise DifflabError(f"run folder not found: {run}")
    found: dict[str, Path] = {}
    for sub in ("milestones", "checkpoints"):   # a checkpoint wins over its milestone copy
        for p in sorted((run / sub).glob("step_*")):
            if (p / "config.json").is_file():
                found[p.name] = p
    return [found[k] for k in sorted(found)]
