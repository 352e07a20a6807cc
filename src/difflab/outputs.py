"""Generated samples as files and pictures, per data kind (:mod:`difflab.data.kinds`).

* :func:`preview`: one picture of a set of samples: an image grid, or points over the data.
* :func:`save_samples`: ``<tag>.png`` (the preview) and ``<tag>.npz`` (key ``samples``: uint8 for
  images, int16 for audio, as ``difflab eval`` reads them; float32 otherwise; key ``labels``: the
  requested classes, when given), and optionally every image as a PNG (audio: always every sample
  as a WAV file).

A new data kind adds its two functions to ``WRITERS``; the trainer and ``difflab sample`` only call
:func:`preview` and :func:`save_samples`.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from torch import Tensor

from .data import AudioData, to_int16, to_uint8
from .errors import DifflabError
from .io import atomic_write_bytes

__all__ = ["preview", "save_samples", "WRITERS", "SampleWriter"]


@dataclass(frozen=True)
class SampleWriter:
    preview: Callable[..., Path | None]       # (samples, path, data=None, title=None, nrow=None) -> path or None
    arrays: Callable[[Tensor], np.ndarray]    # samples -> the array stored in .npz
    files: Callable[[np.ndarray, Path], Path] | None = None   # arrays -> one file per sample, in a folder
    files_by_default: bool = False            # write the per-sample files unless told not to (sound)


def _image_preview(samples: Tensor, path: Path, data: Tensor | None = None, title: str | None = None,
                   nrow: int | None = None) -> Path:
    from .viz import save_grid
    return save_grid(samples, path, nrow=nrow)


def _image_files(arr: np.ndarray, folder: Path) -> Path:
    from PIL import Image
    folder.mkdir(parents=True, exist_ok=True)
    for i, a in enumerate(arr):
        Image.fromarray(a[0] if a.shape[0] == 1 else a.transpose(1, 2, 0)).save(folder / f"{i:06d}.png")
    return folder


def _point_preview(samples: Tensor, path: Path, data: Tensor | None = None, title: str | None = None,
                   nrow: int | None = None) -> Path | None:
    from .viz import points_figure
    if samples.shape[1] != 2:
        return None  # only 2-D points have a picture
    return points_figure(samples, path, data=None if data is None else data[:2000], title=title)


def _audio_preview(samples: Tensor, path: Path, data: Tensor | None = None, title: str | None = None,
                   nrow: int | None = None) -> Path:
    from .viz import audio_figure
    return audio_figure(samples, path, AudioData.sample_rate, title=title)


def _audio_files(arr: np.ndarray, folder: Path) -> Path:
    from .data import write_wav
    folder.mkdir(parents=True, exist_ok=True)
    for i, a in enumerate(arr):
        write_wav(folder / f"{i:06d}.wav", a, AudioData.sample_rate)
    return folder


WRITERS: dict[str, SampleWriter] = {
    "images": SampleWriter(_image_preview, to_uint8, _image_files),
    "points": SampleWriter(_point_preview, lambda x: x.detach().float().cpu().numpy()),
    "audio": SampleWriter(_audio_preview, to_int16, _audio_files, files_by_default=True),
}


def _writer(kind: str) -> SampleWriter:
    if kind not in WRITERS:
        raise DifflabError(f"no sample files are defined for data kind {kind!r}")
    return WRITERS[kind]


def preview(kind: str, samples: Tensor, path: str | Path, data: Tensor | None = None,
            title: str | None = None, nrow: int | None = None) -> Path | None:
    """A picture of ``samples`` of data kind ``kind`` (over ``data`` where that helps; ``nrow`` samples a row
    in a grid), or None if that kind of sample has none."""
    return _writer(kind).preview(samples, Path(path), data=data, title=title, nrow=nrow)


def save_samples(kind: str, samples: Tensor, out: str | Path, tag: str, each: bool | None = None,
                 labels: Tensor | None = None, nrow: int | None = None) -> dict[str, Path]:
    """Write ``out/<tag>.png`` and ``out/<tag>.npz`` (key ``samples``, and ``labels`` when the samples were
    drawn for requested classes; with ``each``, default: the kind's habit, one file per sample in
    ``out/<tag>_<kind>/``); returns what was written by role (``preview``, ``arrays``, ``files``)."""
    w = _writer(kind)
    each = w.files_by_default if each is None else each
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    pic = w.preview(samples, out / f"{tag}.png", title=tag, nrow=nrow)
    if pic is not None:
        written["preview"] = pic
    arr = w.arrays(samples)
    extra = {} if labels is None else {"labels": labels.detach().cpu().numpy().astype(np.int64)}
    buf = io.BytesIO()
    np.savez_compressed(buf, samples=arr, **extra)
    atomic_write_bytes(out / f"{tag}.npz", buf.getvalue())   # difflab eval reads it: whole or absent
    written["arrays"] = out / f"{tag}.npz"
    if each:
        if w.files is None:
            raise DifflabError(f"samples of kind {kind!r} have no one-file-per-sample form")
        written["files"] = w.files(arr, out / f"{tag}_{kind}")
    return written
