r"""A DiffWave-style network for waveforms: non-causal dilated 1-D convolutions with gated units.

It knows nothing of diffusion: ``WaveNet(x, timestep, label=None) -> y`` with ``x`` and ``y`` ``(B, C, L)``.

Kong et al., "DiffWave: a versatile diffusion model for audio synthesis", arXiv:2009.09761, sec. 3 and
fig. 2 (after van den Oord et al., "WaveNet", arXiv:1609.03499): a 1x1 input convolution to ``channels``,
``layers`` residual layers, layer i with a kernel-3 convolution of dilation :math:`2^{i \bmod cycle}`
(``cycle`` layers double the receptive field each, then start again), applied to the state plus a
per-layer projection of the timestep embedding; the gate :math:`\tanh(a) \odot \sigma(b)`; a 1x1
convolution split into a residual (added back, scaled by :math:`1/\sqrt2`) and a skip output; the skips
summed and scaled by :math:`1/\sqrt{layers}`, then a 1x1 with ReLU and a zero-initialised 1x1 to the
output.  The receptive field is :math:`1 + 2\sum_i 2^{i \bmod cycle}` samples.

Class conditioning (``num_classes`` > 0) adds a learned embedding of the label to the timestep embedding
(:class:`~.conditioning.LabelEmbedding`: index ``num_classes`` is the null label, ``label=None``), as DiffWave's
conditional digit model does and as the UNet does.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import DifflabError
from .conditioning import LabelEmbedding, embed_label
from .unet import timestep_embedding

__all__ = ["WaveNet"]


class _ResidualLayer(nn.Module):
    def __init__(self, channels: int, dilation: int, c_time: int):
        super().__init__()
        self.time_proj = nn.Linear(c_time, channels)
        self.dilated = nn.Conv1d(channels, 2 * channels, 3, padding=dilation, dilation=dilation)
        self.out = nn.Conv1d(channels, 2 * channels, 1)

    def forward(self, x: Tensor, temb: Tensor) -> tuple[Tensor, Tensor]:
        a, b = self.dilated(x + self.time_proj(temb)[:, :, None]).chunk(2, dim=1)
        residual, skip = self.out(torch.tanh(a) * torch.sigmoid(b)).chunk(2, dim=1)
        return (x + residual) / math.sqrt(2.0), skip


class WaveNet(nn.Module):
    """DiffWave's network.

    Args:
        in_channels: audio channels (1: mono); ``out_channels`` defaults to the same.
        channels: residual channels C.
        layers, cycle: residual layers, and how many of them double the dilation before it restarts at 1.
        time_embed_dim: width of the timestep MLP (DiffWave: 512 from 128 sinusoidal features).
        num_classes: class-conditional on ``label`` in [0, num_classes] (the last: null); 0 = unconditional.
    """

    network_type = "wavenet"

    def __init__(self, in_channels: int = 1, out_channels: int | None = None, channels: int = 64, layers: int = 20,
                 cycle: int = 10, time_embed_dim: int = 512, num_classes: int = 0):
        super().__init__()
        out_channels = out_channels or in_channels
        if channels < 1 or layers < 1 or cycle < 1:
            raise DifflabError(f"WaveNet needs channels, layers and cycle >= 1, got {channels}, {layers}, {cycle}")
        self.config: dict[str, Any] = dict(in_channels=in_channels, out_channels=out_channels, channels=channels,
                                           layers=layers, cycle=cycle, time_embed_dim=time_embed_dim,
                                           num_classes=num_classes)
        self.time_mlp = nn.Sequential(nn.Linear(128, time_embed_dim), nn.SiLU(),
                                      nn.Linear(time_embed_dim, time_embed_dim), nn.SiLU())
        self.label_embed = LabelEmbedding(num_classes, time_embed_dim) if num_classes else None
        self.stem = nn.Conv1d(in_channels, channels, 1)
        self.res = nn.ModuleList(_ResidualLayer(channels, 2 ** (i % cycle), time_embed_dim) for i in range(layers))
        self.skip_proj = nn.Conv1d(channels, channels, 1)
        self.head = nn.Conv1d(channels, out_channels, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    @property
    def receptive_field(self) -> int:
        """Samples of input that one output sample depends on."""
        return 1 + 2 * sum(2 ** (i % self.config["cycle"]) for i in range(self.config["layers"]))

    def check_input(self, shape: Sequence[int]) -> None:
        if len(shape) != 2 or shape[0] != self.config["in_channels"]:
            raise DifflabError(f"WaveNet takes waveforms of shape ({self.config['in_channels']}, L), "
                               f"got {tuple(shape)}")

    def forward(self, x: Tensor, timestep: Tensor, label: Tensor | None = None) -> Tensor:
        self.check_input(x.shape[1:])
        t = timestep.reshape(-1).expand(x.shape[0]) if timestep.numel() == 1 else timestep
        temb = self.time_mlp(timestep_embedding(t, 128).to(x.dtype))
        lemb = embed_label(self.label_embed, label, x.shape[0])
        if lemb is not None:
            temb = temb + lemb
        h = F.relu(self.stem(x))
        skips = torch.zeros_like(h)
        for layer in self.res:
            h, skip = layer(h, temb)
            skips = skips + skip
        h = F.relu(self.skip_proj(skips / math.sqrt(len(self.res))))
        return self.head(h)
