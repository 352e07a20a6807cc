"""Data sets yielding clean x0 (+ labels), typed by their kind (:mod:`.kinds`).

:func:`load_dataset` is the one entry point; ``DATASETS`` maps each source name to its loader.
"""
from __future__ import annotations

import inspect
import os
from typing import Any, Callable

from ..errors import DifflabError
from .audio import FSDD_CLASSES, from_int16, load_fsdd, read_wav, to_int16, write_wav
from .images import load_digits, load_image_files, load_image_folder, load_mnist, parse_range, read_idx
from .kinds import DATA_KINDS, AudioData, Dataset, ImageData, MelData, PointData, kind_of_shape
from .latents import LatentData, encode_dataset
from .pixels import from_uint8, to_uint8, to_unit
from .stacked import load_stacked_mnist
from .toy2d import TOY2D, load_toy2d, sample_toy2d

__all__ = ["DATASETS", "DATA_KINDS", "Dataset", "ImageData", "PointData", "kind_of_shape", "from_uint8", "to_uint8",
           "to_unit", "load_dataset", "load_digits", "load_image_files", "load_image_folder", "load_mnist",
           "parse_range", "read_idx", "TOY2D", "load_toy2d", "sample_toy2d", "load_stacked_mnist",
           "LatentData", "encode_dataset", "AudioData", "MelData", "FSDD_CLASSES", "from_int16", "load_fsdd",
           "read_wav", "to_int16", "write_wav"]


def _mnist(data_dir, index_range, **kw) -> Dataset:
    if data_dir is None:
        raise DifflabError("--data mnist needs --data-dir (a folder with t10k-images-idx3-ubyte.gz)")
    return load_mnist(data_dir, index_range="0:8000" if index_range is None else index_range, **kw)


def _stacked_mnist(data_dir, index_range, n: int = 10_000, seed: int = 0) -> Dataset:
    if data_dir is None:
        raise DifflabError("--data stacked_mnist needs --data-dir (a folder with the MNIST IDX files)")
    return load_stacked_mnist(data_dir, "0:8000" if index_range is None else index_range, n, seed)


def _folder(data_dir, index_range, **kw) -> Dataset:
    if data_dir is None:
        raise DifflabError("--data folder needs --data-dir (a folder of PNG/JPEG images)")
    return load_image_folder(data_dir, index_range=index_range, **kw)


def _digits(data_dir, index_range, **kw) -> Dataset:
    return load_digits(index_range)


def _toy2d(data_dir, index_range, name: str = "checkerboard", n: int = 20000, seed: int = 0) -> Dataset:
    return load_toy2d(name, int(n), int(seed))


def _fsdd(data_dir, index_range, **kw) -> Dataset:
    if data_dir is None:
        raise DifflabError("--data fsdd needs --data-dir (FSDD's recordings/ folder of digit_speaker_take.wav files)")
    unknown = set(kw) - set(inspect.signature(load_fsdd).parameters)
    if unknown:
        raise DifflabError(f"data set 'fsdd' has no option {', '.join(sorted(unknown))}")
    return load_fsdd(data_dir, index_range=index_range, **kw)


# source name -> loader(data_dir, index_range, **options)
DATASETS: dict[str, Callable[..., Dataset]] = {"mnist": _mnist, "folder": _folder, "digits": _digits, "toy2d": _toy2d,
                                               "stacked_mnist": _stacked_mnist, "fsdd": _fsdd}


def load_dataset(source: str, data_dir: str | os.PathLike | None = None,
                 index_range: str | tuple[int, int] | None = None, **kw: Any) -> Dataset:
    """Load a data set by source: ``mnist`` (needs ``data_dir``; images 0:8000 by default), ``folder``
    (needs ``data_dir``), ``digits`` (scikit-learn's 8x8), ``toy2d`` (``name=``, ``n=``, ``seed=``),
    ``stacked_mnist`` (needs ``data_dir``; ``n=``, ``seed=``; three MNIST digits as channels), ``fsdd``
    (spoken digits; needs ``data_dir``; options of :func:`~.audio.load_fsdd`)."""
    if source not in DATASETS:
        raise DifflabError(f"unknown data set {source!r}; choose from {', '.join(DATASETS)}")
    loader = DATASETS[source]
    params = inspect.signature(loader).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        unknown = set(kw) - set(params)
        if unknown:
            raise DifflabError(f"data set {source!r} has no option {', '.join(sorted(unknown))}")
    return loader(data_dir, index_range, **kw)
