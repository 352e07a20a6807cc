"""Image data sets that yield clean x0 in [-1, 1], shape ``(N, C, H, W)`` float32.

* MNIST in the original IDX format (gzip or plain), read with numpy: ``load_mnist``.
* A folder of PNG/JPEG images: ``load_image_folder``.
* scikit-learn's 8x8 digits (1,797 real images shipped inside the package): ``load_digits``.

Pixels v in [0, vmax] map to ``2 v / vmax - 1`` (:mod:`.pixels`).  All loaders return an
:class:`~.kinds.ImageData`.
"""
from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import torch

from ..errors import DifflabError
from .kinds import ImageData
from .pixels import from_uint8

__all__ = ["load_mnist", "read_idx", "load_image_folder", "load_image_files", "load_digits", "parse_range"]

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}
DIGIT_CLASSES = [str(d) for d in range(10)]


def parse_range(spec: str | tuple[int, int] | None, n: int) -> slice:
    """``"0:8000"`` (or ``(0, 8000)``) -> slice, checked against the data size ``n``."""
    if spec is None:
        return slice(0, n)
    if isinstance(spec, str):
        try:
            a, b = (int(v) if v else None for v in spec.split(":"))
        except ValueError:
            raise DifflabError(f"index range must look like START:STOP, got {spec!r}") from None
    else:
        a, b = spec
    a = 0 if a is None else a
    b = n if b is None else b
    if not 0 <= a < b <= n:
        raise DifflabError(f"index range {a}:{b} is outside the {n} items of the data set")
    return slice(a, b)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (LeCun's MNIST format; ``.gz`` or plain) into a numpy array.

    Header: two zero bytes, a type code (0x08 = uint8), the number of dimensions, then each
    dimension as a big-endian int32.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise DifflabError(f"file not found: {path}") from None
    except (OSError, EOFError) as e:
        raise DifflabError(f"cannot read {path}: {e}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DifflabError(f"{path} is not an IDX file of unsigned bytes")
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    if len(raw) != header + int(np.prod(dims)):
        raise DifflabError(f"{path} is truncated or corrupt: header says {dims}, "
                           f"file has {len(raw) - header} data bytes")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


MNIST_FILES = {
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
}


def _find(folder: Path, stem: str) -> Path | None:
    for suffix in (".gz", ""):
        p = folder / (stem + suffix)
        if p.exists():
            return p
    return None


def load_mnist(data_dir: str | os.PathLike, split: str | None = None,
               index_range: str | tuple[int, int] | None = "0:8000") -> ImageData:
    """MNIST from a folder with the standard IDX file names.

    ``split``: ``test`` (t10k), ``train``, or None: the first present of test, train.
    ``index_range``: which images to take; the default ``0:8000`` is difflab's training part of the
    10,000-image test split (8000-9999 held out for evaluation).
    """
    folder = Path(data_dir)
    if not folder.is_dir():
        raise DifflabError(f"MNIST folder not found: {folder}")
    splits = [split] if split else ["test", "train"]
    for s in splits:
        if s not in MNIST_FILES:
            raise DifflabError(f"unknown MNIST split {s!r}; choose test or train")
        img = _find(folder, MNIST_FILES[s][0])
        if img is not None:
            break
    else:
        names = " or ".join(MNIST_FILES[s][0] + "[.gz]" for s in splits)
        raise DifflabError(f"no MNIST images in {folder}: expected {names}")
    images = read_idx(img)
    if images.ndim != 3:
        raise DifflabError(f"{img} holds an array of shape {images.shape}, expected (N, 28, 28)")
    lab_path = _find(folder, MNIST_FILES[s][1])
    labels = read_idx(lab_path) if lab_path else None
    if labels is not None and labels.shape != images.shape[:1]:
        raise DifflabError(f"{lab_path} has {labels.shape[0]} labels for {images.shape[0]} images")
    sl = parse_range(index_range, images.shape[0])
    x = from_uint8(images[sl][:, None])
    y = torch.from_numpy(labels[sl].astype(np.int64)) if labels is not None else None
    return ImageData(x, y, name="mnist", info={"path": str(img), "range": [sl.start, sl.stop]},
                     classes=DIGIT_CLASSES if y is not None else None)


def load_image_folder(folder: str | os.PathLike, channels: int | None = None, size: int | None = None,
                      index_range: str | tuple[int, int] | None = None) -> ImageData:
    """All images under ``folder`` (sorted by path), as grey (``channels=1``) or RGB (3).

    Without ``size`` every image must have the same size; with it, images are resized (bicubic)
    to ``size x size``.  ``channels`` defaults to 1 if every image is greyscale, else 3.  When every image lies
    in a subfolder of ``folder`` and there are at least two, each subfolder is a class: the labels index the
    sorted subfolder names, which become the data set's ``classes``.
    """
    root = Path(folder)
    if not root.is_dir():
        raise DifflabError(f"image folder not found: {root}")
    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise DifflabError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {root}")
    paths = paths[parse_range(index_range, len(paths))]
    data = load_image_files(paths, channels, size, name=root.name, info={"path": str(root)})
    parents = [p.relative_to(root).parts for p in paths]
    if all(len(parts) == 2 for parts in parents) and len({parts[0] for parts in parents}) >= 2:
        data.classes = sorted({parts[0] for parts in parents})
        data.labels = torch.tensor([data.classes.index(parts[0]) for parts in parents], dtype=torch.int64)
    return data


def load_image_files(paths: list[Path], channels: int | None = None, size: int | None = None,
                     name: str = "images", info: dict | None = None) -> ImageData:
    """The given image files, converted and sized as :func:`load_image_folder` describes."""
    from PIL import Image, UnidentifiedImageError

    paths = [Path(p) for p in paths]
    for p in paths:
        if not p.is_file():
            raise DifflabError(f"image not found: {p}")
    imgs = []
    for p in paths:
        try:
            with Image.open(p) as im:
                im.load()
                imgs.append(im.copy())
        except (UnidentifiedImageError, OSError) as e:
            raise DifflabError(f"cannot read image {p}: {e}") from None
    if channels is None:
        channels = 1 if all(im.mode in ("L", "1", "I", "I;16") for im in imgs) else 3
    if channels not in (1, 3):
        raise DifflabError(f"channels must be 1 or 3, got {channels}")
    mode = "L" if channels == 1 else "RGB"
    arrays = []
    for p, im in zip(paths, imgs):
        im = im.convert(mode)
        if size is not None:
            im = im.resize((size, size), Image.BICUBIC)
        a = np.asarray(im, dtype=np.uint8)
        a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
        if arrays and a.shape != arrays[0].shape:
            raise DifflabError(f"{p} is {a.shape[2]}x{a.shape[1]} but {paths[0]} is "
                               f"{arrays[0].shape[2]}x{arrays[0].shape[1]}; pass a size to resize")
        arrays.append(a)
    return ImageData(from_uint8(np.stack(arrays)), None, name=name, info=info or {})


def load_digits(index_range: str | tuple[int, int] | None = None) -> ImageData:
    """scikit-learn's 8x8 digits (1,797 real images, pixel values 0-16) in [-1, 1]."""
    try:
        from sklearn.datasets import load_digits as _sk_digits
    except ImportError:
        raise DifflabError("the digits data set needs scikit-learn: pip install scikit-learn") from None
    d = _sk_digits()
    sl = parse_range(index_range, len(d.images))
    x = torch.from_numpy(d.images[sl].astype(np.float32) / 8.0 - 1.0)[:, None]
    return ImageData(x, torch.from_numpy(d.target[sl].astype(np.int64)), name="digits",
                     info={"range": [sl.start, sl.stop]}, classes=DIGIT_CLASSES)
