"""Stacked MNIST: three MNIST digits as the three channels of one image, 1,000 modes.

The standard test of mode collapse (Metz et al., "Unrolled Generative Adversarial Networks",
arXiv:1611.02163, sec. 3.3.2; Srivastava et al., "VEEGAN", arXiv:1705.07761, sec. 5.2): image k is
``(x[i_k1], x[i_k2], x[i_k3])`` stacked along the channels, its mode (label) ``100 d1 + 10 d2 + d3`` from
the three digits' labels.  The index triples are drawn uniformly with replacement from the MNIST images
``index_range`` (difflab's training images 0-7999 by default; 8000-9999 for a held-out set) by a
generator seeded with ``seed``, so the set is a function of (images, index_range, n, seed).
"""
from __future__ import annotations

import os

import torch

from ..errors import DifflabError
from .images import load_mnist
from .kinds import ImageData

__all__ = ["load_stacked_mnist", "NUM_MODES"]

NUM_MODES = 1000


def load_stacked_mnist(data_dir: str | os.PathLike, index_range: str | tuple[int, int] | None = "0:8000",
                       n: int = 10_000, seed: int = 0) -> ImageData:
    """``n`` Stacked MNIST images ``(n, 3, 28, 28)`` in [-1, 1] with mode labels in 0..999 (``classes``
    ``"000"``..``"999"``).  The default 10,000 images leave each of the 1,000 modes about 10 examples
    (a mode is missing with probability about ``exp(-10)``)."""
    n, seed = int(n), int(seed)
    if n < 1:
        raise DifflabError(f"Stacked MNIST needs n >= 1 images, got {n}")
    mnist = load_mnist(data_dir, index_range=index_range)
    if mnist.labels is None:
        raise DifflabError(f"Stacked MNIST needs the MNIST labels file beside {mnist.info['path']}")
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, len(mnist), (n, 3), generator=g)
    x = mnist.x[idx][:, :, 0]                                    # (n, 3, 1, 28, 28) -> (n, 3, 28, 28)
    digits = mnist.labels[idx]                                   # (n, 3)
    labels = digits @ torch.tensor([100, 10, 1])
    return ImageData(x, labels, name="stacked_mnist", classes=[f"{m:03d}" for m in range(NUM_MODES)],
                     info={**mnist.info, "n": n, "seed": seed})
