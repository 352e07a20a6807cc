r"""Encoders: raw data x <-> the space the diffusion runs in, z.

Diffusion can run on pixels, on log-mel spectrograms of audio, or in the latent space of a trained
autoencoder (Rombach et al., arXiv:2112.10752).  One interface serves all three, so the trainer, the
samplers and the evaluation run unchanged on any of them:

* ``encode(x) -> z``: data (N, *data_shape) to the diffusion space (N, *latent_shape), already multiplied
  by ``scale`` so that z has about unit standard deviation (a wrong or missing scale is the most
  common failure of latent diffusion);
* ``decode(z) -> x``: back to data space (the inverse, or a learned / iterative approximation of it);
* ``latent_shape(data_shape)``; ``config()`` (JSON, enough to rebuild the encoder with its weights) and
  ``digest()`` (SHA-256 of config and weights: a model trained in one encoder's space refuses another).
"""
from __future__ import annotations

import json
from typing import Any

from torch import Tensor, nn

from ..io import sha256_bytes

__all__ = ["Encoder", "IdentityEncoder"]


class Encoder(nn.Module):
    """Base class: subclasses implement :meth:`_encode`, :meth:`_decode`, :meth:`latent_shape`, and set
    ``name``; ``scale`` multiplies the raw code."""

    name = "encoder"

    def __init__(self, scale: float = 1.0):
        super().__init__()
        self.scale = float(scale)

    def encode(self, x: Tensor) -> Tensor:
        return self._encode(x) * self.scale

    def decode(self, z: Tensor) -> Tensor:
        return self._decode(z / self.scale)

    def _encode(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _decode(self, z: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def latent_shape(self, data_shape: tuple[int, ...]) -> tuple[int, ...]:  # pragma: no cover - abstract
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "scale": self.scale}

    def digest(self) -> str:
        """SHA-256 of the config and every weight (names and values)."""
        parts: list[Any] = [json.dumps(self.config(), sort_keys=True)]
        for k, v in sorted(self.state_dict().items()):
            parts += [k, v]
        return sha256_bytes(parts)


class IdentityEncoder(Encoder):
    """Diffusion on the data itself (pixels, points): ``encode`` and ``decode`` are the identity."""

    name = "identity"

    def _encode(self, x: Tensor) -> Tensor:
        return x

    def _decode(self, z: Tensor) -> Tensor:
        return z

    def latent_shape(self, data_shape: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(data_shape)
