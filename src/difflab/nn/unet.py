r"""A UNet for images (Ronneberger et al. 2015) as used by DDPM (Ho et al., arXiv:2006.11239, App. B).

It knows nothing of diffusion: ``UNet(x, timestep) -> y`` with ``y.shape == x.shape``.

Topology (matching diffusers' ``UNet2DModel`` so its checkpoints map onto this one name by name):
sinusoidal embedding of the timestep -> 2-layer MLP; a 3x3 stem; for each level, ``layers_per_block``
residual blocks (GroupNorm, SiLU, conv, + time projection, GroupNorm, SiLU, dropout, conv) with
optional single- or multi-head self-attention after each, then a stride-2 downsample (not after
the last level); a middle of residual block, attention, residual block; the mirrored up path with
``layers_per_block + 1`` residual blocks per level, each fed the matching skip activation; GroupNorm,
SiLU and a 3x3 head.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import DifflabError
from .conditioning import LabelEmbedding, embed_label

__all__ = ["UNet", "timestep_embedding"]


def timestep_embedding(t: Tensor, dim: int, flip_sin_to_cos: bool = True, freq_shift: float = 0.0,
                       max_period: float = 10000.0) -> Tensor:
    r"""Transformer sinusoidal features of a (float) timestep, ``(B,) -> (B, dim)``:
    :math:`f_k = \exp(-\log(P)\,k/(d/2 - s))`, features :math:`[\sin(t f), \cos(t f)]`
    (``flip_sin_to_cos``: cos first).  Vaswani et al., arXiv:1706.03762, sec. 3.5."""
    half = dim // 2
    k = torch.arange(half, dtype=torch.float32, device=t.device)
    freqs = torch.exp(-math.log(max_period) * k / (half - freq_shift))
    arg = t.float()[:, None] * freqs[None]
    emb = torch.cat([arg.sin(), arg.cos()], dim=-1)
    if flip_sin_to_cos:
        emb = torch.cat([emb[:, half:], emb[:, :half]], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, c_time: int, groups: int, eps: float, dropout: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, c_in, eps=eps)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.time_proj = nn.Linear(c_time, c_out)
        self.norm2 = nn.GroupNorm(groups, c_out, eps=eps)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class SelfAttention(nn.Module):
    """Multi-head self-attention over the H*W positions, with a pre-GroupNorm and a residual."""

    def __init__(self, channels: int, heads: int, groups: int, eps: float):
        super().__init__()
        if channels % heads:
            raise DifflabError(f"attention: {channels} channels cannot be split into {heads} heads")
        self.heads = heads
        self.norm = nn.GroupNorm(groups, channels, eps=eps)
        self.q = nn.Linear(channels, channels)
        self.k = nn.Linear(channels, channels)
        self.v = nn.Linear(channels, channels)
        self.out = nn.Linear(channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        B, C, H, W = x.shape
        h = self.norm(x).flatten(2).transpose(1, 2)                       # (B, HW, C)
        split = lambda y: y.reshape(B, H * W, self.heads, C // self.heads).transpose(1, 2)  # noqa: E731
        a = F.scaled_dot_product_attention(split(self.q(h)), split(self.k(h)), split(self.v(h)))
        a = self.out(a.transpose(1, 2).reshape(B, H * W, C))
        return x + a.transpose(1, 2).reshape(B, C, H, W)


class Downsample(nn.Module):
    """3x3 convolution with stride 2; ``padding=0`` pads right/bottom by one first (DDPM's TF code)."""

    def __init__(self, channels: int, padding: int = 1):
        super().__init__()
        self.padding = padding
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=padding)

    def forward(self, x: Tensor) -> Tensor:
        if self.padding == 0:
            x = F.pad(x, (0, 1, 0, 1))
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour 2x upsampling followed by a 3x3 convolution."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Level(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.res = nn.ModuleList()
        self.attn = nn.ModuleList()
        self.resample: nn.Module | None = None


class UNet(nn.Module):
    """Image UNet.

    Args:
        in_channels: image channels (1 or 3); ``out_channels`` defaults to the same.
        channels: width of each resolution level, e.g. ``(32, 64, 64)``: 3 levels, 2 downsamples.
        layers_per_block: residual blocks per level on the way down (one more on the way up).
        attention_levels: indices of the levels with self-attention (the low resolutions).
        heads: attention heads, or ``head_dim`` to derive heads from the width.
        mid_attention: self-attention in the middle block.
        dropout: dropout inside residual blocks.
        groups, norm_eps: GroupNorm groups (must divide every width) and epsilon.
        flip_sin_to_cos, freq_shift: conventions of the timestep embedding.
        downsample_padding: 1 (symmetric) or 0 (pad right/bottom, DDPM's original).
        num_classes: > 0 makes the network class-conditional: ``forward(x, timestep, label)`` adds a learned
            label embedding (:class:`~.conditioning.LabelEmbedding`, with a null label) to the time embedding.
    """

    network_type = "unet"

    def __init__(self, in_channels: int = 1, out_channels: int | None = None,
                 channels: Sequence[int] = (32, 64, 64), layers_per_block: int = 2,
                 attention_levels: Sequence[int] = (2,), heads: int = 1, head_dim: int | None = None,
                 mid_attention: bool = True, dropout: float = 0.0, groups: int = 8, norm_eps: float = 1e-5,
                 flip_sin_to_cos: bool = True, freq_shift: float = 0.0, downsample_padding: int = 1,
                 time_embed_dim: int | None = None, num_classes: int = 0):
        super().__init__()
        channels = list(channels)
        out_channels = out_channels or in_channels
        if not channels or layers_per_block < 1:
            raise DifflabError("UNet needs at least one level and layers_per_block >= 1")
        for c in channels:
            if c % groups:
                raise DifflabError(f"UNet width {c} is not divisible by groups={groups}")
        if any(not 0 <= i < len(channels) for i in attention_levels):
            raise DifflabError(f"attention_levels {list(attention_levels)} out of range for {len(channels)} levels")
        self.config: dict[str, Any] = dict(
            in_channels=in_channels, out_channels=out_channels, channels=channels,
            layers_per_block=layers_per_block, attention_levels=sorted(attention_levels), heads=heads,
            head_dim=head_dim, mid_attention=mid_attention, dropout=dropout, groups=groups,
            norm_eps=norm_eps, flip_sin_to_cos=flip_sin_to_cos, freq_shift=freq_shift,
            downsample_padding=downsample_padding, time_embed_dim=time_embed_dim, num_classes=num_classes)
        n_heads = (lambda c: c // head_dim) if head_dim else (lambda c: heads)
        c_time = time_embed_dim or 4 * channels[0]
        res = lambda ci, co: ResBlock(ci, co, c_time, groups, norm_eps, dropout)  # noqa: E731
        attn = lambda c: SelfAttention(c, n_heads(c), groups, norm_eps)  # noqa: E731

        self.time_mlp = nn.Sequential(nn.Linear(channels[0], c_time), nn.SiLU(), nn.Linear(c_time, c_time))
        self.label_embed = LabelEmbedding(num_classes, c_time) if num_classes else None
        self.stem = nn.Conv2d(in_channels, channels[0], 3, padding=1)

        self.down = nn.ModuleList()
        skips, c = [channels[0]], channels[0]
        for i, co in enumerate(channels):
            level = Level()
            for _ in range(layers_per_block):
                level.res.append(res(c, co))
                c = co
                if i in attention_levels:
                    level.attn.append(attn(c))
                skips.append(c)
            if i < len(channels) - 1:
                level.resample = Downsample(c, downsample_padding)
                skips.append(c)
            self.down.append(level)

        self.mid_res1 = res(c, c)
        self.mid_attn = attn(c) if mid_attention else nn.Identity()
        self.mid_res2 = res(c, c)

        self.up = nn.ModuleList()
        for i in reversed(range(len(channels))):
            level, co = Level(), channels[i]
            for _ in range(layers_per_block + 1):
                level.res.append(res(c + skips.pop(), co))
                c = co
                if i in attention_levels:
                    level.attn.append(attn(c))
            if i > 0:
                level.resample = Upsample(c)
            self.up.append(level)

        self.head_norm = nn.GroupNorm(groups, c, eps=norm_eps)
        self.head = nn.Conv2d(c, out_channels, 3, padding=1)

    @property
    def factor(self) -> int:
        """Height and width must be divisible by this."""
        return 2 ** (len(self.config["channels"]) - 1)

    def check_input(self, shape: Sequence[int]) -> None:
        """Raise a :class:`DifflabError` if images of ``(C, H, W)`` cannot go through this network."""
        if len(shape) != 3:
            raise DifflabError(f"UNet takes images of shape (C, H, W), got {tuple(shape)}")
        c, h, w = shape
        if c != self.config["in_channels"]:
            raise DifflabError(f"UNet takes {self.config['in_channels']}-channel images, got {c} channels")
        f = self.factor
        if h % f or w % f:
            raise DifflabError(f"image size {h}x{w} does not fit a UNet with {len(self.config['channels'])} "
                               f"levels: height and width must be divisible by {f}")

    def forward(self, x: Tensor, timestep: Tensor, label: Tensor | None = None) -> Tensor:
        self.check_input(x.shape[1:])
        t = timestep.reshape(-1).expand(x.shape[0]) if timestep.numel() == 1 else timestep
        emb = timestep_embedding(t, self.config["channels"][0], self.config["flip_sin_to_cos"],
                                 self.config["freq_shift"])
        temb = self.time_mlp(emb.to(x.dtype))
        lemb = embed_label(self.label_embed, label, x.shape[0])
        if lemb is not None:
            temb = temb + lemb.to(temb.dtype)
        h = self.stem(x)
        skips = [h]
        for level in self.down:
            for j, block in enumerate(level.res):
                h = block(h, temb)
                if len(level.attn):
                    h = level.attn[j](h)
                skips.append(h)
            if level.resample is not None:
                h = level.resample(h)
                skips.append(h)
        h = self.mid_res2(self.mid_attn(self.mid_res1(h, temb)), temb)
        for level in self.up:
            for j, block in enumerate(level.res):
                h = block(torch.cat([h, skips.pop()], dim=1), temb)
                if len(level.attn):
                    h = level.attn[j](h)
            if level.resample is not None:
                h = level.resample(h)
        return self.head(F.silu(self.head_norm(h)))
