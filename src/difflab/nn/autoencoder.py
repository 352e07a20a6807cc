r"""A convolutional autoencoder with a KL-regularised diagonal Gaussian latent, the first stage of latent
diffusion (Rombach et al., "High-Resolution Image Synthesis with Latent Diffusion Models", arXiv:2112.10752,
sec. 3.1 and app. G).

It knows nothing of diffusion.  The encoder maps an image ``x`` ``(B, C, H, W)`` to the posterior
:math:`q(z \mid x) = N(\mu(x), \mathrm{diag}\,\sigma^2(x))` over a latent ``(B, c, h, w)`` with
:math:`h = H'/f`, :math:`w = W'/f`, ``f = 2 ** (len(channels) - 1)`` the downsampling factor; the decoder
maps a latent back to an image.

Sizes: ``H', W'`` are ``H, W`` padded (edge values repeated, split evenly on both sides) up to a multiple
of ``f * latent_multiple``, so the latent's height and width are multiples of ``latent_multiple``: with the
default 2, a 2-level diffusion UNet (one downsample) fits every latent.  MNIST 28x28 gives a 14x14
latent at f = 2 (no padding) and an 8x8 one at f = 4 (28 padded to 32; 7x7 would not fit the UNet).
The decoder crops its output back to ``H, W``, so padding is invisible outside this module.

Topology per level (mirrored in the decoder): ``layers_per_block`` residual blocks (GroupNorm, SiLU,
3x3 conv, twice, plus a skip), then a stride-2 convolution (:class:`~.unet.Downsample`) or, going up,
nearest-neighbour 2x upsampling and a 3x3 conv (:class:`~.unet.Upsample`); a residual middle block;
GroupNorm, SiLU and a 3x3 conv to ``2 c`` channels (mean and log-variance) or to the image channels.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import DifflabError
from .unet import Downsample, Upsample

__all__ = ["DiagonalGaussian", "KLAutoencoder", "default_autoencoder", "FACTORS"]

# downsampling factor f -> (widths per level, latent channels): about 200-256 latent values for MNIST's 784
FACTORS: dict[int, tuple[tuple[int, ...], int]] = {2: ((16, 32), 1), 4: ((16, 32, 64), 4)}


@dataclass
class DiagonalGaussian:
    r"""The posterior :math:`N(\mu, \mathrm{diag}\,e^{\log\sigma^2})` of a batch of latents ``(B, c, h, w)``.

    ``logvar`` is clamped to [-30, 20] (as Rombach et al.'s ``DiagonalGaussianDistribution``) so that
    :math:`\sigma` neither underflows nor overflows."""

    mean: Tensor
    logvar: Tensor

    def __post_init__(self) -> None:
        self.logvar = self.logvar.clamp(-30.0, 20.0)

    @property
    def std(self) -> Tensor:
        return torch.exp(0.5 * self.logvar)

    def sample(self, eps: Tensor) -> Tensor:
        r""":math:`z = \mu + \sigma \epsilon` (the reparameterisation trick, Kingma & Welling, arXiv:1312.6114)."""
        return self.mean + self.std * eps

    def kl(self) -> Tensor:
        r""":math:`\mathrm{KL}(q \,\|\, N(0, I)) = \tfrac12 \sum_j (\mu_j^2 + \sigma_j^2 - 1 - \log\sigma_j^2)`
        per sample, ``(B,)`` (the closed form for diagonal Gaussians, Kingma & Welling, app. B)."""
        return 0.5 * (self.mean**2 + self.logvar.exp() - 1.0 - self.logvar).flatten(1).sum(1)


class _ResBlock(nn.Module):
    """GroupNorm, SiLU, 3x3 conv, twice, plus a (1x1 if the width changes) skip; no time input."""

    def __init__(self, c_in: int, c_out: int, groups: int):
        super().__init__()
        self.body = nn.Sequential(nn.GroupNorm(groups, c_in), nn.SiLU(), nn.Conv2d(c_in, c_out, 3, padding=1),
                                  nn.GroupNorm(groups, c_out), nn.SiLU(), nn.Conv2d(c_out, c_out, 3, padding=1))
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.skip(x) + self.body(x)


def _head(c_in: int, c_out: int, groups: int) -> nn.Sequential:
    return nn.Sequential(nn.GroupNorm(groups, c_in), nn.SiLU(), nn.Conv2d(c_in, c_out, 3, padding=1))


class KLAutoencoder(nn.Module):
    """Encoder to a diagonal Gaussian latent and decoder, for images of one shape.

    Args:
        data_shape: the images' ``(C, H, W)``.
        channels: width of each level; ``len(channels) - 1`` downsamplings give the factor ``f``.
        latent_channels: ``c`` of the latent ``(c, h, w)``.
        layers_per_block: residual blocks per level.
        latent_multiple: the latent's height and width are padded up to a multiple of this.
        groups: GroupNorm groups (must divide every width).
    """

    def __init__(self, data_shape: Sequence[int], channels: Sequence[int] = (32, 64), latent_channels: int = 4,
                 layers_per_block: int = 1, latent_multiple: int = 2, groups: int = 8):
        super().__init__()
        data_shape, channels = [int(v) for v in data_shape], [int(c) for c in channels]
        if len(data_shape) != 3:
            raise DifflabError(f"the autoencoder takes images (C, H, W), got data shape {tuple(data_shape)}")
        if not channels or layers_per_block < 1 or latent_channels < 1 or latent_multiple < 1:
            raise DifflabError("the autoencoder needs at least one level, layers_per_block >= 1, latent_channels >= 1 "
                               "and latent_multiple >= 1")
        for c in channels:
            if c % groups:
                raise DifflabError(f"autoencoder width {c} is not divisible by groups={groups}")
        self.config: dict[str, Any] = dict(data_shape=data_shape, channels=channels, latent_channels=latent_channels,
                                           layers_per_block=layers_per_block, latent_multiple=latent_multiple,
                                           groups=groups)
        c_img, c_lat = data_shape[0], latent_channels

        enc: list[nn.Module] = [nn.Conv2d(c_img, channels[0], 3, padding=1)]
        c = channels[0]
        for i, co in enumerate(channels):
            for _ in range(layers_per_block):
                enc.append(_ResBlock(c, co, groups))
                c = co
            if i < len(channels) - 1:
                enc.append(Downsample(c))
        enc += [_ResBlock(c, c, groups), _head(c, 2 * c_lat, groups)]
        self.encoder = nn.Sequential(*enc)

        dec: list[nn.Module] = [nn.Conv2d(c_lat, c, 3, padding=1), _ResBlock(c, c, groups)]
        for i in reversed(range(len(channels))):
            for _ in range(layers_per_block):
                dec.append(_ResBlock(c, channels[i], groups))
                c = channels[i]
            if i > 0:
                dec.append(Upsample(c))
        dec.append(_head(c, c_img, groups))
        self.decoder = nn.Sequential(*dec)

    @property
    def factor(self) -> int:
        """The downsampling factor f."""
        return 2 ** (len(self.config["channels"]) - 1)

    def _padding(self) -> tuple[int, int, int, int]:
        """(left, right, top, bottom) padding of the images up to a multiple of ``f * latent_multiple``."""
        m = self.factor * self.config["latent_multiple"]
        _, h, w = self.config["data_shape"]
        ph, pw = math.ceil(h / m) * m - h, math.ceil(w / m) * m - w
        return pw // 2, pw - pw // 2, ph // 2, ph - ph // 2

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """``(c, h, w)`` of a latent."""
        left, right, top, bottom = self._padding()
        _, h, w = self.config["data_shape"]
        f = self.factor
        return self.config["latent_channels"], (h + top + bottom) // f, (w + left + right) // f

    def check_input(self, shape: Sequence[int]) -> None:
        if list(shape) != self.config["data_shape"]:
            raise DifflabError(f"this autoencoder was built for images of shape {tuple(self.config['data_shape'])}, "
                               f"got {tuple(shape)}")

    def encode(self, x: Tensor) -> DiagonalGaussian:
        """Images ``(B, C, H, W)`` -> the posterior over latents ``(B, c, h, w)``."""
        self.check_input(x.shape[1:])
        h = self.encoder(F.pad(x, self._padding(), mode="replicate"))
        mean, logvar = h.chunk(2, dim=1)
        return DiagonalGaussian(mean, logvar)

    def decode(self, z: Tensor) -> Tensor:
        """Latents ``(B, c, h, w)`` -> images ``(B, C, H, W)`` (unbounded; the data lie in [-1, 1])."""
        if tuple(z.shape[1:]) != self.latent_shape:
            raise DifflabError(f"this autoencoder decodes latents of shape {self.latent_shape}, got {tuple(z.shape[1:])}")
        y = self.decoder(z)
        left, _, top, _ = self._padding()
        _, h, w = self.config["data_shape"]
        return y[:, :, top:top + h, left:left + w]

    def forward(self, x: Tensor, eps: Tensor | None = None) -> tuple[Tensor, DiagonalGaussian]:
        """Reconstruction of ``x`` from a posterior sample (``eps``: its standard normal noise; None: the mean)
        and the posterior."""
        q = self.encode(x)
        return self.decode(q.mean if eps is None else q.sample(eps)), q


def default_autoencoder(data_shape: Sequence[int], factor: int = 4, **overrides: Any) -> dict[str, Any]:
    """The keyword arguments of :class:`KLAutoencoder` for images of ``data_shape`` at downsampling factor
    ``factor`` (2 or 4; :data:`FACTORS`), with ``overrides`` laid over them (``channels``, ``latent_channels``, ...)."""
    if factor not in FACTORS:
        raise DifflabError(f"downsampling factor must be one of {', '.join(map(str, FACTORS))}, got {factor}")
    channels, latent_channels = FACTORS[factor]
    cfg = dict(data_shape=list(data_shape), channels=list(channels), latent_channels=latent_channels)
    cfg.update({k: v for k, v in overrides.items() if v is not None})
    if 2 ** (len(cfg["channels"]) - 1) != factor:
        raise DifflabError(f"{len(cfg['channels'])} widths {list(cfg['channels'])} give a downsampling factor "
                           f"{2 ** (len(cfg['channels']) - 1)}, not {factor}")
    return cfg
