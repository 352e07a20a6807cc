"""Training: the loop, EMA and checkpoints."""
from .checkpoint import (FORMAT_VERSION, Checkpoint, build_denoiser, load_checkpoint, model_config,
                         resolve_checkpoint, save_checkpoint)
from .ema import EMA
from .loop import TrainConfig, TrainResult, lr_at, train

__all__ = ["FORMAT_VERSION", "Checkpoint", "build_denoiser", "load_checkpoint", "model_config",
           "resolve_checkpoint", "save_checkpoint", "EMA", "TrainConfig", "TrainResult", "lr_at", "train"]
