r"""A trained KL autoencoder as an :class:`~.base.Encoder` (latent diffusion, Rombach et al., arXiv:2112.10752),
and as a generator (a VAE: decode samples of its prior).

* ``encode(x) = scale * mu(x)``: the posterior mean, times the latent scale factor estimated from the
  training data, :math:`s = 1/\mathrm{std}(\mu(x))` over all latent entries of the training set
  (Rombach et al., sec. 4.3.2 and app. G, "rescale the latent by the component-wise standard deviation");
* ``decode(z) = D(z / scale)``;
* the autoencoder checkpoint (format ``difflab-autoencoder``, written by :mod:`difflab.train.autoencoder`)
  is a folder with ``config.json`` (the network, the scale, SHA-256 of the weights) and ``model.safetensors``.
  A checkpoint without a valid scale is refused: a missing or wrong scale is the most common failure of
  latent diffusion.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..errors import DifflabError
from ..io import check_format, load_bundle_tensors, read_json
from ..nn.autoencoder import KLAutoencoder
from .base import Encoder

__all__ = ["FORMAT", "FORMAT_VERSION", "AutoencoderEncoder", "VAEGenerator", "read_autoencoder_config"]

FORMAT = "difflab-autoencoder"
FORMAT_VERSION = 1


def read_autoencoder_config(folder: str | os.PathLike) -> dict[str, Any]:
    """The checked ``config.json`` of an autoencoder checkpoint folder."""
    path = Path(folder) / "config.json"
    cfg = read_json(path, "autoencoder checkpoint config")
    check_format(cfg, FORMAT, (FORMAT_VERSION,), path)
    if "autoencoder" not in cfg:
        raise DifflabError(f"{path} lacks the field 'autoencoder' (the network)")
    return cfg


class AutoencoderEncoder(Encoder):
    """Diffusion space = the scaled posterior mean of a :class:`~difflab.nn.autoencoder.KLAutoencoder`.

    ``folder`` is the checkpoint it was loaded from (recorded by a latent diffusion checkpoint)."""

    name = "autoencoder"
    data_kind = "images"

    def __init__(self, net: KLAutoencoder, scale: float, folder: str | os.PathLike | None = None):
        if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
            raise DifflabError(f"latent scale must be a positive number, got {scale!r}")
        super().__init__(scale)
        self.net = net.eval()
        self.folder = None if folder is None else Path(folder)

    @property
    def data_shape(self) -> tuple[int, ...]:
        return tuple(self.net.config["data_shape"])

    def _encode(self, x: Tensor) -> Tensor:
        return self.net.encode(x).mean

    def _decode(self, z: Tensor) -> Tensor:
        return self.net.decode(z)

    def latent_shape(self, data_shape: tuple[int, ...] | None = None) -> tuple[int, ...]:
        if data_shape is not None:
            self.net.check_input(data_shape)
        return self.net.latent_shape

    def config(self) -> dict[str, Any]:
        return {**super().config(), "autoencoder": self.net.config}

    @classmethod
    def from_folder(cls, folder: str | os.PathLike) -> "AutoencoderEncoder":
        """The encoder of one autoencoder checkpoint folder (its weights checked against their SHA-256)."""
        folder = Path(folder)
        cfg = read_autoencoder_config(folder)
        if cfg.get("scale") is None:
            raise DifflabError(f"{folder / 'config.json'} records no latent scale; an autoencoder checkpoint "
                               f"without it cannot encode for diffusion")
        try:
            net = KLAutoencoder(**cfg["autoencoder"])
        except TypeError as e:
            raise DifflabError(f"bad autoencoder config in {folder / 'config.json'}: {e}") from None
        try:
            net.load_state_dict(load_bundle_tensors(folder, cfg, "model.safetensors", what="autoencoder weights"))
        except RuntimeError as e:
            raise DifflabError(f"weights in {folder / 'model.safetensors'} do not fit the autoencoder in "
                               f"config.json: {str(e).splitlines()[0]}") from None
        return cls(net, cfg["scale"], folder)


class VAEGenerator:
    r"""The autoencoder as a VAE: :math:`x = D(z)`, :math:`z \sim N(0, I)` (the prior its KL term pulls the
    posterior towards).  Sample i depends only on (seed, i): its z is drawn from the per-sample stream
    of :class:`~difflab.sampling.noise.SampleNoise`.  One decoder evaluation per sample (``nfe = 1``).

    With the small KL weights latent diffusion uses, the aggregate posterior is far from N(0, I) and
    prior samples are poor; that gap is what the diffusion model in the latent space closes."""

    def __init__(self, encoder: AutoencoderEncoder, batch_size: int = 256):
        self.encoder, self.batch_size, self.nfe = encoder, batch_size, 0
        self.data_kind = encoder.data_kind
        self.data_shape = encoder.data_shape

    @torch.no_grad()
    def sample(self, n: int, seed: int = 0) -> Tensor:
        from ..sampling.noise import SampleNoise
        if n < 1:
            raise DifflabError(f"number of samples must be >= 1, got {n}")
        net = self.encoder.net.eval()
        out = [net.decode(SampleNoise(seed, range(b0, min(n, b0 + self.batch_size))).randn(net.latent_shape))
               for b0 in range(0, n, self.batch_size)]
        self.nfe = 1
        return torch.cat(out).float()
