"""8-bit pixels <-> the model's range [-1, 1]: the one place this mapping is written.

Pixel values v in {0, ..., 255} map to :math:`x = v/127.5 - 1`, and back by rounding to the nearest
level after clamping to [-1, 1], so ``to_uint8(to_unit(v)) == v``.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["to_unit", "to_uint8", "from_uint8"]


def to_unit(x: Tensor | np.ndarray, dtype: torch.dtype = torch.float32) -> Tensor:
    """uint8 in [0, 255] -> ``dtype`` in [-1, 1]; float input is taken to be in [-1, 1] already."""
    x = torch.as_tensor(x)
    if x.dtype == torch.uint8:
        return x.to(dtype) / 127.5 - 1.0
    return x.to(dtype)


def from_uint8(a: np.ndarray) -> Tensor:
    """uint8 array ``(N, C, H, W)`` -> float32 tensor in [-1, 1]."""
    return to_unit(torch.from_numpy(np.array(a, dtype=np.uint8)))   # a copy: IDX buffers are read-only


def to_uint8(x: Tensor) -> np.ndarray:
    """[-1, 1] -> uint8 with rounding to nearest (the inverse of :func:`to_unit` on the grid)."""
    return ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu().numpy()
