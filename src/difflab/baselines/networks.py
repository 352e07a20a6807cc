r"""DCGAN-style generator and discriminator for small images, their layers derived from the data shape.

DCGAN (Radford et al., "Unsupervised Representation Learning with Deep Convolutional Generative
Adversarial Networks", arXiv:1511.06434): the generator maps a latent :math:`z \sim N(0, I_d)` through a
linear layer to a ``(C_0, h_0, w_0)`` feature map and doubles the resolution ``k`` times with stride-2
transposed 4x4 convolutions, halving the width each time, to a 3x3 convolution and ``tanh`` (images in
[-1, 1]); the discriminator mirrors it with stride-2 4x4 convolutions and LeakyReLU(0.2) to one logit.

The number of doublings ``k`` comes from the image size: halve (H, W) while both are even and above 7,
so 28 -> 14 -> 7 (k = 2), 32 -> 16 -> 8 -> 4 (k = 3), 8 -> 4 (k = 1); any size works.

Two departures from DCGAN, both for the comparison's contract: the generator normalises features with
*pixel norm* (Karras et al., "Progressive Growing of GANs", arXiv:1710.10196, sec. 4.2:
:math:`b = a / \sqrt{\tfrac1C\sum_j a_j^2 + 10^{-8}}` over the channels of each pixel) instead of batch
norm, so that sample i depends only on its own latent (the ``Generator`` contract) and the EMA of the
generator needs no running statistics; and the discriminator has no normalisation, so that the R1
penalty (a per-sample input gradient) is well defined (Mescheder et al., arXiv:1801.04406).
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import DifflabError

__all__ = ["GANGeneratorNet", "Discriminator", "doublings"]


def doublings(height: int, width: int) -> tuple[int, int, int]:
    """``(k, h_0, w_0)``: how many stride-2 stages an ``height x width`` image gets, and the base map size."""
    if height < 1 or width < 1:
        raise DifflabError(f"GAN images need a positive size, got {height}x{width}")
    k = 0
    while height % 2 == 0 and width % 2 == 0 and min(height, width) > 7:
        height, width, k = height // 2, width // 2, k + 1
    return k, height, width


class PixelNorm(nn.Module):
    """Each pixel's feature vector scaled to unit root-mean-square over the channels (ProGAN, sec. 4.2)."""

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.rsqrt(x.pow(2).mean(1, keepdim=True) + 1e-8)


class GANGeneratorNet(nn.Module):
    """``G(z) -> x``: latent ``(B, latent_dim)`` -> images ``(B, C, H, W)`` in [-1, 1].

    Widths: ``width * 2**(k - i)`` channels after stage ``i`` (``k`` stages, :func:`doublings`)."""

    def __init__(self, image_shape: Sequence[int], latent_dim: int = 64, width: int = 16):
        super().__init__()
        c, h, w = (int(v) for v in image_shape)
        if latent_dim < 1 or width < 1:
            raise DifflabError(f"GAN latent_dim and width must be >= 1, got {latent_dim}, {width}")
        self.config: dict[str, Any] = {"image_shape": [c, h, w], "latent_dim": latent_dim, "width": width}
        k, h0, w0 = doublings(h, w)
        widths = [width * 2 ** (k - i) for i in range(k + 1)]
        self.base = (widths[0], h0, w0)
        self.fc = nn.Linear(latent_dim, widths[0] * h0 * w0)
        self.stages = nn.ModuleList(nn.ConvTranspose2d(widths[i], widths[i + 1], 4, stride=2, padding=1)
                                    for i in range(k))
        self.norm = PixelNorm()
        self.out = nn.Conv2d(widths[-1], c, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        h = F.relu(self.norm(self.fc(self.norm(z)).view(-1, *self.base)))
        for conv in self.stages:
            h = F.relu(self.norm(conv(h)))
        return torch.tanh(self.out(h))


class Discriminator(nn.Module):
    """``D(x) -> logit`` ``(B,)``: a 3x3 convolution, ``k`` stride-2 4x4 convolutions (doubling the width),
    LeakyReLU(0.2) after each, and a linear layer on the flattened map."""

    def __init__(self, image_shape: Sequence[int], width: int = 16):
        super().__init__()
        c, h, w = (int(v) for v in image_shape)
        if width < 1:
            raise DifflabError(f"discriminator width must be >= 1, got {width}")
        self.config: dict[str, Any] = {"image_shape": [c, h, w], "width": width}
        k, h0, w0 = doublings(h, w)
        widths = [width * 2 ** i for i in range(k + 1)]
        self.inp = nn.Conv2d(c, widths[0], 3, padding=1)
        self.stages = nn.ModuleList(nn.Conv2d(widths[i], widths[i + 1], 4, stride=2, padding=1) for i in range(k))
        self.fc = nn.Linear(widths[-1] * h0 * w0, 1)

    def forward(self, x: Tensor) -> Tensor:
        h = F.leaky_relu(self.inp(x), 0.2)
        for conv in self.stages:
            h = F.leaky_relu(conv(h), 0.2)
        return self.fc(h.flatten(1)).squeeze(1)
