"""Encoders between raw data and the space diffusion runs in (identity, log-mel audio, autoencoder latents).

``ENCODERS`` maps a config's ``name`` to its class; :func:`build_encoder` rebuilds an encoder from its
``config()``, and :func:`checkpoint_encoder` the one a checkpoint's training data was encoded with.
"""
from __future__ import annotations

from typing import Any

from ..errors import DifflabError
from ..io import build_registered
from .base import Encoder, IdentityEncoder
from .mel import MelEncoder

__all__ = ["Encoder", "IdentityEncoder", "MelEncoder", "ENCODERS", "build_encoder", "checkpoint_encoder"]

ENCODERS: dict[str, type[Encoder]] = {"identity": IdentityEncoder, "mel": MelEncoder}


def build_encoder(cfg: dict[str, Any]) -> Encoder:
    """The encoder of ``cfg`` (an ``Encoder.config()``: ``{"name": ..., **options}``)."""
    return build_registered(ENCODERS, cfg, "name", "encoder")


def checkpoint_encoder(config: dict[str, Any]) -> Encoder | None:
    """The encoder that made a checkpoint's training data (recorded by the trainer from the data set's
    ``info["encoder"]``, checked against ``info["encoder_digest"]``), or None when the model ran on
    the data itself.  ``config``: the checkpoint's config (``load_checkpoint(path).config``)."""
    data = config.get("training", {}).get("data", {})
    if "encoder" not in data:
        return None
    enc = build_encoder(data["encoder"])
    if data.get("encoder_digest") not in (None, enc.digest()):
        raise DifflabError(f"the checkpoint's {enc.name} encoder does not match its recorded digest: the encoder "
                           f"code or config changed since training")
    return enc
