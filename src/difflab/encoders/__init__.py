"""Encoders between raw data and the space diffusion runs in (identity, log-mel audio, autoencoder latents)."""
from .attached import ENCODER_LOADERS, data_space, decode_samples, encoder_record, load_encoder
from .autoencoder import AutoencoderEncoder, VAEGenerator
from .base import Encoder, IdentityEncoder
from .mel import MelEncoder

# the mel encoder has no weights: its recorded config alone rebuilds it
ENCODER_LOADERS[MelEncoder.name] = lambda record, run_dir: MelEncoder.from_config(record["config"])

__all__ = ["Encoder", "IdentityEncoder", "AutoencoderEncoder", "VAEGenerator", "MelEncoder", "data_space",
           "decode_samples", "encoder_record", "load_encoder"]
