"""The models the explorer shows, and the clean examples its forward panel noises.

:func:`load_model` opens any difflab checkpoint (run folder, checkpoint folder or weights file) of images
or 2-D points; :func:`run_data` finds the data set the run was trained on from what its checkpoint
recorded (digits, MNIST, an image folder, a 2-D toy set), for the forward panel.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..errors import DifflabError

__all__ = ["ExploreModel", "load_model", "run_data", "FORWARD_IMAGES", "FORWARD_POINTS"]

FORWARD_IMAGES = 256     # examples the forward panel can pick from
FORWARD_POINTS = 2000    # points of a 2-D data set shown at once


@dataclass
class ExploreModel:
    """A loaded denoiser and what the page needs to know of it."""

    denoiser: Any                    # D(x_t, t, **cond) -> x0_hat with .schedule, .data_shape, .data_kind
    label: str                       # what the page calls it
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return self.denoiser.data_kind

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.denoiser.data_shape)

    @property
    def num_classes(self) -> int:
        """Classes of a class-conditional model (0: unconditional)."""
        return int(getattr(self.denoiser, "num_classes", 0) or self.config.get("num_classes") or 0)

    @property
    def classes(self) -> list[str]:
        names = self.config.get("classes") or getattr(self.denoiser, "classes", None)
        return [str(c) for c in names] if names else [str(i) for i in range(self.num_classes)]

    def info(self) -> dict[str, Any]:
        """The model's facts for the page."""
        s = self.denoiser.schedule
        src = s.config().get("source") or {}
        return {"label": self.label, "kind": self.kind, "shape": list(self.shape),
                "schedule": src.get("name", s.name) + (" table" if s.discrete else ""),
                "prediction": getattr(self.denoiser, "prediction", None), "step": self.config.get("step"),
                "num_classes": self.num_classes, "classes": self.classes if self.num_classes else []}


def check_showable(kind: str, shape: tuple[int, ...]) -> None:
    """The explorer draws images and 2-D points; anything else is refused with a message."""
    if kind == "images" and len(shape) == 3 and shape[0] in (1, 3):
        return
    if kind == "points" and shape == (2,):
        return
    raise DifflabError(f"the explorer shows grey or RGB images and 2-D points; this model holds {kind} of shape "
                       f"{tuple(shape)}")


def load_model(path: str | os.PathLike, label: str | None = None) -> ExploreModel:
    """The EMA denoiser of a checkpoint, checked to be something the page can draw."""
    from ..train import load_checkpoint

    ck = load_checkpoint(path)
    den = ck.denoiser("ema")
    check_showable(den.data_kind, tuple(den.data_shape))
    return ExploreModel(den, label or str(path), ck.config)


def run_data(config: dict[str, Any], shape: tuple[int, ...]) -> Tensor:
    """Clean examples of the data set a checkpoint was trained on, from the ``training.data`` record the
    trainer writes (name, path, range): at most :data:`FORWARD_IMAGES` images or :data:`FORWARD_POINTS` points.
    Raises :class:`DifflabError` when the record is missing or the data are no longer where they were."""
    from ..data import load_dataset

    rec = (config.get("training") or {}).get("data") or {}
    name = str(rec.get("name", ""))
    if name == "digits":
        data = load_dataset("digits", index_range=tuple(rec["range"]) if rec.get("range") else None)
    elif name == "mnist" and rec.get("path"):
        start = (rec.get("range") or [0])[0]
        data = load_dataset("mnist", Path(rec["path"]).parent, (start, start + FORWARD_IMAGES))
    elif name.startswith("toy2d:"):
        data = load_dataset("toy2d", name=rec.get("distribution", name[6:]), n=FORWARD_POINTS,
                            seed=int(rec.get("seed", 0)))
    elif rec.get("path") and len(shape) == 3:
        data = load_dataset("folder", rec["path"], None, channels=shape[0], size=shape[-1])
    else:
        raise DifflabError("the checkpoint does not record its training data")
    if data.shape != tuple(shape):
        raise DifflabError(f"its data set now has samples of shape {data.shape}, the model {tuple(shape)}")
    return data.x[:FORWARD_POINTS if len(shape) == 1 else FORWARD_IMAGES]


def model_samples(model: ExploreModel, n: int, seed: int = 0) -> Tensor:
    """Samples of the model itself (DDIM, 20 steps), clean examples when its data set cannot be found."""
    from ..sampling import sample
    with torch.no_grad():
        return sample(model.denoiser, n=n, sampler="ddim", steps=20, seed=seed, progress=False).x
