"""Encoders between raw data and the space diffusion runs in (identity, log-mel audio, autoencoder latents)."""
from .base import Encoder, IdentityEncoder

__all__ = ["Encoder", "IdentityEncoder"]
