"""Encoders between raw data and the space diffusion runs in (identity, log-mel audio, autoencoder latents)."""
from .attached import data_space, decode_samples, encoder_record, load_encoder
from .autoencoder import AutoencoderEncoder, VAEGenerator
from .base import Encoder, IdentityEncoder

__all__ = ["Encoder", "IdentityEncoder", "AutoencoderEncoder", "VAEGenerator", "data_space", "decode_samples",
           "encoder_record", "load_encoder"]
