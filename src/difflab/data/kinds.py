"""Data kinds: what a data set's clean x0 *is*, so that the trainer, the sampler's files and the figures
ask the kind instead of branching on shapes.

A data set is ``x`` (N, *shape) in the model's space plus optional integer ``labels`` (N,); its kind
(a subclass of :class:`Dataset`, named by ``kind``) carries the facts the rest of difflab needs: the
natural value range (``clip_x0``), how many samples a preview shows and a sensible sampling batch.
Kinds are classes with class-level facts, so a checkpoint that only records its kind's name
(``DATA_KINDS[name]``) has them without the data at hand; :mod:`difflab.outputs` writes each kind's
samples to files and pictures.

* :class:`ImageData` (``"images"``): (C, H, W) in [-1, 1].
* :class:`PointData` (``"points"``): (D,) real vectors (the 2-D toy distributions).
* :class:`AudioData` (``"audio"``): (1, L) mono waveforms in [-1, 1] at ``sample_rate`` (:mod:`.audio`).
* :class:`MelData` (``"mel"``): (1, n_mels, frames) log-mel images of audio in [-1, 1], with the
  encoder that made them (and decodes samples back to audio).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from torch import Tensor

from ..errors import DifflabError

__all__ = ["Dataset", "ImageData", "PointData", "AudioData", "MelData", "DATA_KINDS", "kind_of_shape"]


@dataclass
class Dataset:
    """Clean samples ``x`` ``(N, *shape)`` and optional integer ``labels`` ``(N,)`` (with ``classes``, their
    names).  ``noise`` ``(N, *shape)``, when given, pairs each sample with the noise the trainer uses for it
    instead of fresh noise (reflow's (noise, sample) couplings, :mod:`difflab.distill.reflow`)."""

    x: Tensor
    labels: Tensor | None = None
    name: str = "data"
    info: dict = field(default_factory=dict)
    classes: list[str] | None = None
    noise: Tensor | None = None

    kind: ClassVar[str] = "data"
    clip_x0: ClassVar[float | None] = None     # the data's range, [-c, c], if it has one
    preview_n: ClassVar[int | None] = None     # samples in a training preview (None: the trainer's sample_n)
    sample_batch_size: ClassVar[int] = 256     # batch size for drawing samples of this kind

    def __post_init__(self) -> None:
        if self.labels is not None and self.labels.shape != self.x.shape[:1]:
            raise DifflabError(f"{self.name}: {self.labels.shape[0]} labels for {self.x.shape[0]} samples")
        if self.noise is not None and self.noise.shape != self.x.shape:
            raise DifflabError(f"{self.name}: noise of shape {tuple(self.noise.shape)} for samples of shape "
                               f"{tuple(self.x.shape)}")

    def __len__(self) -> int:
        return self.x.shape[0]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    @property
    def num_classes(self) -> int:
        """Number of classes (0 without labels)."""
        if self.labels is None:
            return 0
        return len(self.classes) if self.classes else int(self.labels.max()) + 1

    def describe(self) -> str:
        return f"{self.name}: {len(self)} {self.kind} of shape {self.shape}"


@dataclass
class ImageData(Dataset):
    """Clean images ``x`` in [-1, 1] ``(N, C, H, W)``, optional integer ``labels`` ``(N,)``."""

    name: str = "images"
    kind: ClassVar[str] = "images"
    clip_x0: ClassVar[float | None] = 1.0


@dataclass
class PointData(Dataset):
    """Real vectors ``x`` ``(N, D)`` (the 2-D toy distributions), optional labels (mixture components)."""

    name: str = "points"
    kind: ClassVar[str] = "points"
    preview_n: ClassVar[int | None] = 1000     # a scatter plot needs many points
    sample_batch_size: ClassVar[int] = 100_000   # one batch: tiny networks are dominated by per-call overhead


@dataclass
class AudioData(Dataset):
    """Mono waveforms ``x`` ``(N, 1, L)`` in [-1, 1] at ``sample_rate`` Hz (difflab's audio is 8 kHz, FSDD's
    rate), optional labels; ``names`` of the recordings."""

    name: str = "audio"
    names: list[str] | None = None
    kind: ClassVar[str] = "audio"
    clip_x0: ClassVar[float | None] = 1.0
    preview_n: ClassVar[int | None] = 8        # a figure of 8 spectrograms and waveforms
    sample_batch_size: ClassVar[int] = 64
    sample_rate: ClassVar[int] = 8000


@dataclass
class MelData(Dataset):
    """Log-mel images ``x`` ``(N, 1, n_mels, frames)`` in [-1, 1] of audio, with the ``encoder`` that made them
    from ``waveforms`` ``(N, 1, L)``; a model trained on them records it and decodes its samples to audio
    (as for latents, :mod:`difflab.encoders.attached`).  Unlike latents they have a range, [-1, 1]."""

    name: str = "mel"
    names: list[str] | None = None
    waveforms: Any = None
    encoder: Any = None
    kind: ClassVar[str] = "mel"
    clip_x0: ClassVar[float | None] = 1.0
    preview_n: ClassVar[int | None] = 8        # decoded to audio for the training previews


DATA_KINDS: dict[str, type[Dataset]] = {k.kind: k for k in (ImageData, PointData, AudioData, MelData)}


def kind_of_shape(shape: tuple[int, ...] | list[int]) -> str:
    """The data kind of a sample shape, for files that predate the recorded kind: (C, H, W) images,
    (1, L) audio, (D,) points."""
    rank = len(shape)
    if rank == 3:
        return ImageData.kind
    if rank == 2:
        return AudioData.kind
    if rank == 1:
        return PointData.kind
    raise DifflabError(f"no data kind has samples of shape {tuple(shape)}")

