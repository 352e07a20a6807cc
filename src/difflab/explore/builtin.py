"""The explorer's built-in models, trained on first use and cached.

* ``digits``: the demo's UNet (cosine schedule, v-prediction) on scikit-learn's 1,797 real 8x8 digits,
  the model of the forward, reverse and sampler panels when no run is given;
* ``checkerboard``: an MLP on the 2-D checkerboard (the toy sweep's network and cosine schedule), the model
  of the score-field panel.

Neither is committed to the repository: each is trained by a fixed recipe (seed 0) the first time the
explorer needs it, into ``$DIFFLAB_CACHE/explore`` (default ``~/.cache/difflab/explore``).  Why train
rather than ship a checkpoint: no binary blob in git, the recipe is the documentation (what you see is
what ``difflab train`` would give you), and the forward panel, which needs no model, is usable at once
while the page shows the training's progress.  Budgets are a number of steps capped by wall clock
(``minutes``), so first use takes at most about 2 + 1 minutes on a laptop CPU; a fast machine gets the
full step count.

Training runs in a separate process (``python -m difflab.explore NAME OUT``, :func:`main`), so that the page
stays responsive and *Cancel* stops it at once; it writes into a temporary folder that is renamed into
place only when complete, so a killed or cancelled run never leaves a half-trained model in the cache.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..io import cache_dir as _cache_dir

__all__ = ["Recipe", "BUILTINS", "cache_dir", "builtin_folder", "train_builtin", "finish_builtin"]


@dataclass(frozen=True)
class Recipe:
    """Data (:func:`~difflab.data.load_dataset` arguments), denoiser (:func:`~difflab.create_denoiser`
    arguments) and training budget (:func:`~difflab.train` overrides) of a built-in model."""

    summary: str
    data: dict[str, Any]
    model: dict[str, Any]
    train: dict[str, Any] = field(default_factory=dict)

    def with_budget(self, **budget: Any) -> "Recipe":
        return Recipe(self.summary, self.data, self.model, {**self.train, **budget})

    def key(self) -> str:
        """A short hash of the recipe: a changed recipe (or a test's tiny budget) gets its own cache folder."""
        text = json.dumps({"data": self.data, "model": self.model, "train": self.train}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:10]


BUILTINS: dict[str, Recipe] = {
    "digits": Recipe(
        "UNet on scikit-learn's 8x8 digits (the demo's model)",
        data={"source": "digits"},
        model={"schedule": "cosine", "timesteps": 1000, "prediction": "v", "clip_x0": 1.0, "seed": 0},
        train={"steps": 1500, "minutes": 2.0, "milestones": (), "seed": 0}),
    "checkerboard": Recipe(
        "MLP on the 2-D checkerboard",
        data={"source": "toy2d", "name": "checkerboard"},
        model={"network": {"type": "mlp", "hidden": 128, "layers": 3, "fourier": 6}, "schedule": "cosine",
               "timesteps": 1000, "prediction": "eps", "clip_x0": None, "seed": 0},
        train={"steps": 2000, "minutes": 1.0, "batch_size": 256, "lr": 2e-3, "warmup": 100, "ema_decay": 0.995,
               "weighting": "uniform", "seed": 0}),
}


def cache_dir() -> Path:
    """``$DIFFLAB_CACHE/explore`` (default ``~/.cache/difflab/explore``)."""
    return _cache_dir("explore")


def builtin_folder(name: str, recipe: Recipe, root: str | os.PathLike | None = None) -> Path:
    """Where the run of built-in ``name`` trained with ``recipe`` lives in the cache."""
    return Path(root or cache_dir()) / f"{name}-{recipe.key()}"


def load_data(recipe: Recipe):
    """The recipe's data set."""
    from ..data import load_dataset
    kw = dict(recipe.data)
    return load_dataset(kw.pop("source"), **kw)


def train_builtin(recipe: Recipe, out: str | os.PathLike) -> Path:
    """Train ``recipe`` into the run folder ``out`` (logging every 10 steps to ``out/log.jsonl``, which the
    explorer reads for its progress bar)."""
    from ..denoisers import create_denoiser
    from ..train import train

    data = load_data(recipe)
    den = create_denoiser(data.shape, **recipe.model)
    train(den, data, out, **{"sample_every": 0, "log_every": 10, "progress": False, **recipe.train})
    return Path(out)


def finish_builtin(tmp: Path, final: Path) -> Path:
    """Move a completed run from ``tmp`` to ``final`` in one rename (another process may have won the race:
    then its copy is kept and ``tmp`` removed)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(tmp, final)
    except OSError:
        if not (final / "checkpoints" / "latest").is_file():
            raise
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def main(argv: list[str] | None = None) -> int:
    """``python -m difflab.explore NAME OUT [--budget JSON]``: what the explorer's training job runs."""
    from ..errors import DifflabError
    ap = argparse.ArgumentParser(prog="python -m difflab.explore", description="train a built-in model of the "
                                 "explorer into a run folder (the explorer runs this on first use)")
    ap.add_argument("name", choices=sorted(BUILTINS))
    ap.add_argument("out")
    ap.add_argument("--budget", default="{}", help="training overrides as JSON, e.g. {\"steps\": 50}")
    args = ap.parse_args(argv)
    if "OMP_NUM_THREADS" not in os.environ:
        # leave a core to the server that serves the page meanwhile (on 2 cores, two busy processes with two
        # threads each run several times slower than with one each)
        import torch
        torch.set_num_threads(max(1, (os.cpu_count() or 2) - 1))
    try:
        train_builtin(BUILTINS[args.name].with_budget(**json.loads(args.budget)), args.out)
    except DifflabError as e:
        print(f"difflab: error: {e}", file=sys.stderr)
        return 2
    return 0
