"""Seeded noise, one random stream per sample.

Sample i of a run with seed S draws all its noise (x_T and every step) from its own generator,
seeded from (S, i); so sample i is the same whatever the batch size or the batch it falls in
(NVlabs EDM does the same with a stacked generator, Karras et al. 2022).  The generators live on the CPU
and the noise is moved to the sampling device, so a sample drawn on a GPU starts from the CPU's numbers.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["SampleNoise", "randn_like", "sample_seed"]

_MULT = 1_000_003  # a prime, so (seed, index) pairs map to distinct integers for index < _MULT


def sample_seed(seed: int, index: int) -> int:
    return (seed * _MULT + index) % (2**63 - 1)


class SampleNoise:
    """Per-sample CPU generators for samples ``indices`` of run ``seed``; noise delivered on ``device``."""

    def __init__(self, seed: int, indices: range | list[int], device: str | torch.device = "cpu"):
        self.generators = [torch.Generator().manual_seed(sample_seed(seed, int(i))) for i in indices]
        self.device = torch.device(device)

    def randn(self, shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> Tensor:
        """Noise of shape ``(len(indices), *shape)`` on ``device``; row i from generator i (drawn on the CPU)."""
        z = torch.stack([torch.randn(shape, generator=g, dtype=dtype) for g in self.generators])
        return z.to(self.device, non_blocking=True)


def randn_like(x: Tensor, generator: "torch.Generator | SampleNoise | None" = None) -> Tensor:
    """Standard normal noise shaped like ``x`` from a generator, per-sample generators, or the global RNG."""
    if isinstance(generator, SampleNoise):
        if len(generator.generators) != x.shape[0]:
            raise ValueError(f"{len(generator.generators)} sample generators for a batch of {x.shape[0]}")
        return generator.randn(tuple(x.shape[1:]), x.dtype).to(x.device)
    return torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
