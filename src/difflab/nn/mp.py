r"""A magnitude-preserving UNet: EDM2's network (Karras et al., "Analyzing and Improving the Training Dynamics
of Diffusion Models", arXiv:2312.02696, sec. 2-3 and App. B, config G) at difflab's sizes.

Every layer keeps unit-variance activations unit-variance, so nothing drifts in magnitude during training and
no normalisation layer is needed:

* weights are *forced* to unit norm per output channel: the stored weight is renormalised before every
  training step's forward, and the layer uses :math:`w_i / \lVert w_i \rVert` (eq. 47 and 66, "forced weight
  normalisation"), so the effective learning rate does not decay as weights grow;
* no biases; a constant-one input channel in the stem gives the network a bias-like signal (App. B);
* :func:`mp_silu`, :func:`mp_sum` (residuals, weight 0.3) and :func:`mp_cat` (skips, weight 0.5) rescale
  their outputs back to unit variance (eq. 81, 88, 103);
* the encoder *pixel-normalises* activations (each position's channel vector to unit RMS) instead of
  GroupNorm; attention is cosine attention (q and k normalised per head);
* the time (and class) embedding modulates each block multiplicatively, :math:`1 + g\,\mathrm{Linear}(e)` with
  a learned gain :math:`g` that starts at 0, and the output layer's gain starts at 0 too.

Topology (EDM2's ``UNet``): a 3x3 stem; per level (``channels``), a downsampling residual block (not on the
first level) and ``layers_per_block`` encoder blocks, with cosine self-attention at ``attention_levels``; at the
lowest level two more blocks (the first with attention); then per level upward an upsampling block (not on the
lowest) and ``layers_per_block + 1`` decoder blocks, each fed the matching skip by :func:`mp_cat`; a 3x3 head.
Resampling is 2x2 average pooling and nearest-neighbour upsampling.  The timestep goes in through the same
sinusoidal features as :class:`~.unet.UNet` (scaled to unit RMS), so it drops into any difflab schedule.

EDM2 trains these networks with a larger learning rate than a GroupNorm UNet (Adam, 1e-2 at batch 2048):
the weights cannot grow, so the learning rate *is* the angular step size.  On MNIST at batch 64 the held-out
loss after 600 steps kept falling as the rate rose from 2e-3 to 5e-2 (BENCHMARKS.md, "Guidance
interval"): train it with ``lr=0.05``.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import DifflabError
from .conditioning import batch_labels, check_labels
from .unet import UNet, timestep_embedding

__all__ = ["MPUNet", "MPConv", "normalize", "mp_silu", "mp_sum", "mp_cat"]

SILU_STD = 0.596   # sqrt(E[silu(z)^2]) for z ~ N(0, 1) (EDM2 eq. 81)


def normalize(x: Tensor, dim: int | Sequence[int] | None = None, eps: float = 1e-4) -> Tensor:
    r""":math:`x / (\epsilon + \lVert x \rVert / \sqrt{n})` over ``dim`` (default: all but the first): unit RMS
    over those entries (:math:`\epsilon` keeps zero vectors finite)."""
    if dim is None:
        dim = list(range(1, x.ndim))
    norm = torch.linalg.vector_norm(x, dim=dim, keepdim=True, dtype=torch.float32)
    n = norm.numel() / x.numel()          # 1 / (entries per norm)
    return x / (eps + math.sqrt(n) * norm).to(x.dtype)


def mp_silu(x: Tensor) -> Tensor:
    r""":math:`\mathrm{silu}(x) / 0.596`: unit variance in for unit variance out (EDM2 eq. 81)."""
    return F.silu(x) / SILU_STD


def mp_sum(a: Tensor, b: Tensor, t: float = 0.5) -> Tensor:
    r""":math:`((1 - t) a + t b) / \sqrt{(1 - t)^2 + t^2}`: a weighted sum of two independent unit-variance
    tensors with unit variance (EDM2 eq. 88); ``t`` is the weight of ``b``."""
    return a.lerp(b, t) / math.sqrt((1 - t) ** 2 + t ** 2)


def mp_cat(a: Tensor, b: Tensor, dim: int = 1, t: float = 0.5) -> Tensor:
    r"""Concatenate ``a`` (:math:`N_a` channels) and ``b`` (:math:`N_b`) so that ``b`` contributes a fraction
    ``t`` of the magnitude a following layer sees and the result has unit RMS:
    :math:`C = \sqrt{(N_a + N_b) / ((1 - t)^2 + t^2)}`, weights :math:`C (1 - t)/\sqrt{N_a}` and
    :math:`C t / \sqrt{N_b}` (EDM2 eq. 103)."""
    na, nb = a.shape[dim], b.shape[dim]
    c = math.sqrt((na + nb) / ((1 - t) ** 2 + t ** 2))
    return torch.cat([a * (c / math.sqrt(na) * (1 - t)), b * (c / math.sqrt(nb) * t)], dim=dim)


class MPConv(nn.Module):
    r"""A bias-free convolution (``kernel`` a pair) or linear layer (``kernel=()``) with forced weight
    normalisation: in training the stored weight is first reset to :func:`normalize` of itself (each output
    channel's fan-in vector to unit RMS), and the layer always uses
    :math:`w_i\, g / (\lVert w_i \rVert)` — unit norm per output channel times a gain :math:`g`
    (EDM2 eq. 47 and 66)."""

    def __init__(self, c_in: int, c_out: int, kernel: Sequence[int] = ()):
        super().__init__()
        self.c_out = c_out
        self.weight = nn.Parameter(torch.randn(c_out, c_in, *kernel))

    def forward(self, x: Tensor, gain: float | Tensor = 1.0) -> Tensor:
        w = self.weight.float()
        if self.training:
            with torch.no_grad():
                self.weight.copy_(normalize(w))
        w = normalize(w) * (gain / math.sqrt(w[0].numel()))
        w = w.to(x.dtype)
        if w.ndim == 2:
            return x @ w.t()
        return F.conv2d(x, w, padding=w.shape[-1] // 2)


class MPBlock(nn.Module):
    """EDM2's residual block: (resample) -> [encoder: 1x1 skip conv if the width changes, pixel norm] ->
    conv(mp_silu) -> x (1 + g Linear(emb)) -> mp_silu -> conv -> [decoder: 1x1 skip conv] -> mp_sum(x, y, 0.3)
    -> optional cosine self-attention, added by mp_sum(x, y, 0.3) -> clip to +-256."""

    def __init__(self, c_in: int, c_out: int, c_emb: int, flavor: str, resample: str = "keep",
                 attention: bool = False, head_dim: int = 64, dropout: float = 0.0, res_balance: float = 0.3,
                 attn_balance: float = 0.3, clip_act: float = 256.0):
        super().__init__()
        self.flavor, self.resample, self.dropout = flavor, resample, dropout
        self.res_balance, self.attn_balance, self.clip_act = res_balance, attn_balance, clip_act
        self.emb_gain = nn.Parameter(torch.zeros([]))
        self.conv1 = MPConv(c_out if flavor == "enc" else c_in, c_out, (3, 3))
        self.emb_proj = MPConv(c_emb, c_out)
        self.conv2 = MPConv(c_out, c_out, (3, 3))
        self.skip = MPConv(c_in, c_out, (1, 1)) if c_in != c_out else None
        self.heads = max(c_out // head_dim, 1) if attention else 0
        if attention:
            self.qkv = MPConv(c_out, 3 * c_out, (1, 1))
            self.attn_out = MPConv(c_out, c_out, (1, 1))

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        if self.resample == "down":
            x = F.avg_pool2d(x, 2)
        elif self.resample == "up":
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        if self.flavor == "enc":
            if self.skip is not None:
                x = self.skip(x)
            x = normalize(x, dim=1)                                       # pixel norm
        y = self.conv1(mp_silu(x))
        c = self.emb_proj(emb, gain=self.emb_gain) + 1
        y = mp_silu(y * c[:, :, None, None].to(y.dtype))
        if self.training and self.dropout:
            y = F.dropout(y, p=self.dropout)
        y = self.conv2(y)
        if self.flavor == "dec" and self.skip is not None:
            x = self.skip(x)
        x = mp_sum(x, y, self.res_balance)
        if self.heads:
            B, C, H, W = x.shape
            qkv = self.qkv(x).reshape(B, self.heads, C // self.heads, 3, H * W)
            q, k, v = normalize(qkv, dim=2).unbind(3)                    # cosine attention
            a = F.scaled_dot_product_attention(*(z.transpose(-1, -2) for z in (q, k, v)))
            y = self.attn_out(a.transpose(-1, -2).reshape(B, C, H, W))
            x = mp_sum(x, y, self.attn_balance)
        return x.clamp(-self.clip_act, self.clip_act) if self.clip_act else x


class MPUNet(nn.Module):
    """The magnitude-preserving image UNet (module docstring): ``MPUNet(x, timestep, label=None) -> y``.

    Args:
        in_channels, out_channels: image channels (``out_channels`` defaults to ``in_channels``).
        channels: width of each resolution level, e.g. ``(16, 32, 64)``: 3 levels, 2 downsamplings.
        layers_per_block: encoder blocks per level (decoder: one more).
        attention_levels: levels whose blocks have cosine self-attention (and the two blocks at the bottom).
        head_dim: channels per attention head.
        dropout: dropout inside residual blocks.
        time_embed_dim: width of the embedding (default ``4 * channels[0]``).
        num_classes: > 0 makes it class-conditional: the one-hot label (index ``num_classes`` the null label,
            as :class:`~.conditioning.LabelEmbedding`) times its square-root size, through a linear layer, is
            mixed into the time embedding by :func:`mp_sum` with ``label_balance``.
        flip_sin_to_cos, freq_shift: conventions of the sinusoidal timestep features.
    """

    network_type = "unet_mp"
    factor = UNet.factor
    check_input = UNet.check_input

    def __init__(self, in_channels: int = 1, out_channels: int | None = None,
                 channels: Sequence[int] = (16, 32, 64), layers_per_block: int = 1,
                 attention_levels: Sequence[int] = (2,), head_dim: int = 64, dropout: float = 0.0,
                 time_embed_dim: int | None = None, num_classes: int = 0, label_balance: float = 0.5,
                 flip_sin_to_cos: bool = True, freq_shift: float = 0.0):
        super().__init__()
        channels = list(channels)
        out_channels = out_channels or in_channels
        if not channels or layers_per_block < 1:
            raise DifflabError("MPUNet needs at least one level and layers_per_block >= 1")
        if any(not 0 <= i < len(channels) for i in attention_levels):
            raise DifflabError(f"attention_levels {list(attention_levels)} out of range for {len(channels)} levels")
        if num_classes < 0:
            raise DifflabError(f"num_classes must be >= 0, got {num_classes}")
        self.config: dict[str, Any] = dict(
            in_channels=in_channels, out_channels=out_channels, channels=channels,
            layers_per_block=layers_per_block, attention_levels=sorted(attention_levels), head_dim=head_dim,
            dropout=dropout, time_embed_dim=time_embed_dim, num_classes=num_classes, label_balance=label_balance,
            flip_sin_to_cos=flip_sin_to_cos, freq_shift=freq_shift)
        c_emb = time_embed_dim or 4 * channels[0]
        block = lambda ci, co, flavor, **kw: MPBlock(ci, co, c_emb, flavor, head_dim=head_dim,  # noqa: E731
                                                     dropout=dropout, **kw)
        self.emb_noise = MPConv(channels[0], c_emb)
        self.emb_label = MPConv(num_classes + 1, c_emb) if num_classes else None
        self.stem = MPConv(in_channels + 1, channels[0], (3, 3))

        self.enc = nn.ModuleList()
        skips, c = [channels[0]], channels[0]
        for i, co in enumerate(channels):
            if i > 0:
                self.enc.append(block(c, c, "enc", resample="down"))
                skips.append(c)
            for _ in range(layers_per_block):
                self.enc.append(block(c, co, "enc", attention=i in attention_levels))
                c = co
                skips.append(c)
        self.dec = nn.ModuleList()
        self.dec_skip: list[bool] = []            # which decoder blocks take a skip
        for i in reversed(range(len(channels))):
            co = channels[i]
            if i == len(channels) - 1:
                self.dec.extend([block(c, c, "dec", attention=True), block(c, c, "dec")])
            else:
                self.dec.append(block(c, c, "dec", resample="up"))
            self.dec_skip += [False] * (len(self.dec) - len(self.dec_skip))
            for _ in range(layers_per_block + 1):
                self.dec.append(block(c + skips.pop(), co, "dec", attention=i in attention_levels))
                self.dec_skip.append(True)
                c = co
        self.head = MPConv(c, out_channels, (3, 3))
        self.head_gain = nn.Parameter(torch.zeros([]))

    def forward(self, x: Tensor, timestep: Tensor, label: Tensor | None = None) -> Tensor:
        self.check_input(x.shape[1:])
        cfg = self.config
        t = timestep.reshape(-1).expand(x.shape[0]) if timestep.numel() == 1 else timestep
        fourier = timestep_embedding(t, cfg["channels"][0], cfg["flip_sin_to_cos"], cfg["freq_shift"])
        emb = self.emb_noise(fourier.to(x.dtype) * math.sqrt(2))           # sin/cos features at unit RMS
        if self.emb_label is not None:
            n = cfg["num_classes"]
            label = batch_labels(label, n, x.shape[0], x.device)
            onehot = F.one_hot(label, n + 1).to(x.dtype) * math.sqrt(n + 1)
            emb = mp_sum(emb, self.emb_label(onehot), cfg["label_balance"])
        elif label is not None:
            check_labels(label, 0)
        emb = mp_silu(emb)
        h = self.stem(torch.cat([x, torch.ones_like(x[:, :1])], dim=1))
        skips = [h]
        for blk in self.enc:
            h = blk(h, emb)
            skips.append(h)
        for blk, takes_skip in zip(self.dec, self.dec_skip):
            if takes_skip:
                h = mp_cat(h, skips.pop())
            h = blk(h, emb)
        return self.head(h, gain=self.head_gain)
