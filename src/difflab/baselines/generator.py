r"""A GAN run as a :class:`~difflab.generators.Generator`: one network evaluation per sample.

Sample i of ``sample(n, seed)`` is ``G(z_i)`` with :math:`z_i \sim N(0, I)` drawn from its own generator
seeded from (seed, i) (:class:`~difflab.sampling.SampleNoise`, as the diffusion samplers draw x_T), and
G has no batch statistics, so it depends only on (seed, i).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import Tensor

from ..sampling.noise import SampleNoise
from .checkpoint import load_gan_checkpoint
from .networks import GANGeneratorNet

__all__ = ["GANGenerator", "load_gan_generator"]


@dataclass
class GANGenerator:
    net: GANGeneratorNet
    data_kind: str = "images"
    batch_size: int = 256
    nfe: int = 1

    @property
    def data_shape(self) -> tuple[int, ...]:
        return tuple(self.net.config["image_shape"])

    @torch.no_grad()
    def sample(self, n: int, seed: int = 0) -> Tensor:
        """``n`` images ``(n, C, H, W)`` in [-1, 1]."""
        self.net.eval()
        d = self.net.config["latent_dim"]
        out = [self.net(SampleNoise(seed, range(i, min(n, i + self.batch_size))).randn((d,)))
               for i in range(0, n, self.batch_size)]
        return torch.cat(out) if out else torch.empty(0, *self.data_shape)


def load_gan_generator(path: str | os.PathLike, weights: str = "ema", batch_size: int = 256) -> GANGenerator:
    """The generator of a GAN run or checkpoint (EMA weights by default)."""
    ck = load_gan_checkpoint(path)
    return GANGenerator(ck.generator(weights), ck.config["data_kind"], batch_size)
