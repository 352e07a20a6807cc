r"""An MLP denoiser network for low-dimensional data (2-D toy sets).

Input features: each coordinate :math:`x_j` and its Fourier features
:math:`\sin(2^k\pi x_j/s), \cos(2^k\pi x_j/s)` for :math:`k < K` (scale s = 4; Tancik et al. 2020,
arXiv:2006.10739, which lets a small MLP fit sharp densities such as the checkerboard), plus the
sinusoidal embedding of the timestep (plus a class embedding with ``num_classes``).  Then ``layers`` residual
blocks ``h + Linear(SiLU(Linear(SiLU(h))))`` of width ``hidden``, with the time embedding added to each.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from ..errors import DifflabError
from .conditioning import LabelEmbedding, embed_label
from .unet import timestep_embedding

__all__ = ["MLP"]


class MLP(nn.Module):
    network_type = "mlp"

    def __init__(self, dim: int = 2, hidden: int = 128, layers: int = 3, fourier: int = 6, time_dim: int = 64,
                 num_classes: int = 0):
        super().__init__()
        if dim < 1 or hidden < 1 or layers < 1 or fourier < 0:
            raise DifflabError("MLP needs dim, hidden, layers >= 1 and fourier >= 0")
        self.config: dict[str, Any] = dict(dim=dim, hidden=hidden, layers=layers, fourier=fourier, time_dim=time_dim,
                                           num_classes=num_classes)
        self.register_buffer("freqs", (2.0 ** torch.arange(fourier)) * math.pi / 4, persistent=False)
        self.inp = nn.Linear(dim * (1 + 2 * fourier), hidden)
        self.time = nn.Sequential(nn.Linear(time_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.label_embed = LabelEmbedding(num_classes, hidden) if num_classes else None
        self.blocks = nn.ModuleList(nn.Sequential(nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                                  nn.Linear(hidden, hidden)) for _ in range(layers))
        self.out = nn.Sequential(nn.SiLU(), nn.Linear(hidden, dim))
        nn.init.zeros_(self.out[1].weight)
        nn.init.zeros_(self.out[1].bias)

    def check_input(self, shape: Sequence[int]) -> None:
        if tuple(shape) != (self.config["dim"],):
            raise DifflabError(f"MLP takes points of dimension {self.config['dim']}, got data of shape {tuple(shape)}")

    def forward(self, x: Tensor, timestep: Tensor, label: Tensor | None = None) -> Tensor:
        feats = [x]
        if self.config["fourier"]:
            arg = x[..., None] * self.freqs
            feats += [arg.sin().flatten(1), arg.cos().flatten(1)]
        h = self.inp(torch.cat(feats, 1))
        temb = self.time(timestep_embedding(timestep.expand(x.shape[0]), self.config["time_dim"]))
        lemb = embed_label(self.label_embed, label, x.shape[0])
        if lemb is not None:
            temb = temb + lemb.to(temb.dtype)
        for block in self.blocks:
            h = h + block(h + temb)
        return self.out(h)
