"""GAN checkpoints (format ``difflab-gan``), written by :func:`difflab.train.checkpoint.write_checkpoint`::

    RUN/checkpoints/step_0001000/config.json          format, generator and discriminator configs,
                                                      data kind and shape, classes, step, training
                                                      options and seconds, both optimizers' groups,
                                                      SHA-256 of every file
    RUN/checkpoints/step_0001000/generator.safetensors      G
    RUN/checkpoints/step_0001000/discriminator.safetensors  D
    RUN/checkpoints/step_0001000/ema.safetensors            the EMA of G (used for sampling)
    RUN/checkpoints/step_0001000/train_state.safetensors    both optimizers' moments (``g.state.*``,
                                                      ``d.state.*``), random streams, EMA count,
                                                      failure-detector streaks
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data import DATA_KINDS
from ..errors import DifflabError
from ..io import check_format, load_bundle_tensors, read_json
from ..train.checkpoint import Checkpoint, optimizer_tensors, resolve_checkpoint, write_checkpoint
from .networks import Discriminator, GANGeneratorNet

__all__ = ["FORMAT", "FORMAT_VERSION", "GANCheckpoint", "save_gan_checkpoint", "load_gan_checkpoint"]

FORMAT = "difflab-gan"
FORMAT_VERSION = 1
_OPTIMIZERS = {"g": "generator", "d": "discriminator"}


def save_gan_checkpoint(run_dir: str | os.PathLike, step: int, G: GANGeneratorNet, D: Discriminator, ema: nn.Module,
                        optimizers: dict[str, torch.optim.Optimizer], state: dict[str, torch.Tensor],
                        info: dict[str, Any], keep: int = 3) -> Path:
    """Write checkpoint ``step`` atomically; ``optimizers`` are ``{"g": ..., "d": ...}``, ``state`` the
    random streams and counters, ``info`` the data kind, shape, classes, training options and seconds."""
    tensors = dict(state)
    groups = {}
    for key, opt in optimizers.items():
        t, groups[key] = optimizer_tensors(opt)
        tensors.update({f"{key}.{k}": v for k, v in t.items()})
    cfg = {"format": FORMAT, "format_version": FORMAT_VERSION, "generator": G.config, "discriminator": D.config,
           **info, "optimizer_param_groups": groups}
    files = {"generator.safetensors": G.state_dict(), "discriminator.safetensors": D.state_dict(),
             "ema.safetensors": ema.state_dict(), "train_state.safetensors": tensors}
    return write_checkpoint(run_dir, step, cfg, files, keep)


@dataclass
class GANCheckpoint:
    path: Path
    config: dict[str, Any]

    @property
    def step(self) -> int:
        return int(self.config.get("step", 0))

    @property
    def data_shape(self) -> tuple[int, ...]:
        return tuple(self.config["data_shape"])

    def tensors(self, fname: str) -> dict[str, torch.Tensor]:
        """The tensors of one file, checked against the SHA-256 in config.json."""
        return load_bundle_tensors(self.path, self.config, fname, what="GAN checkpoint file")

    def _load(self, net: nn.Module, fname: str) -> nn.Module:
        try:
            net.load_state_dict(self.tensors(fname))
        except RuntimeError as e:
            raise DifflabError(f"weights in {self.path / fname} do not fit the network in config.json: "
                               f"{str(e).splitlines()[0]}") from None
        return net

    def networks(self) -> tuple[GANGeneratorNet, Discriminator]:
        """Fresh G and D built from the config (not loaded)."""
        try:
            return GANGeneratorNet(**self.config["generator"]), Discriminator(**self.config["discriminator"])
        except (KeyError, TypeError) as e:
            raise DifflabError(f"GAN checkpoint config {self.path / 'config.json'} is corrupt: {e}") from None

    def generator(self, weights: str = "ema") -> GANGeneratorNet:
        """G with the ``ema`` (default) or ``generator`` weights, in eval mode."""
        if weights not in ("ema", "generator"):
            raise DifflabError(f"GAN weights are 'ema' or 'generator', got {weights!r}")
        return self._load(self.networks()[0], f"{weights}.safetensors").eval()

    def restore_training(self, G: nn.Module, D: nn.Module, ema: Any, optimizers: dict[str, torch.optim.Optimizer],
                         generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Put a run back where this checkpoint left it (weights, EMA, both optimizers with this invocation's
        settings, random streams); returns the train-state tensors (for the trainer's own counters)."""
        state = self.tensors("train_state.safetensors")
        self._load(G, "generator.safetensors")
        self._load(D, "discriminator.safetensors")
        self._load(ema.model, "ema.safetensors")
        ema.updates = int(state["ema.updates"])
        for key, opt in optimizers.items():
            prefix = f"{key}."
            own = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            groups = self.config.get("optimizer_param_groups", {}).get(key)
            if groups is None:
                raise DifflabError(f"GAN checkpoint {self.path} holds no {_OPTIMIZERS[key]} optimizer state")
            Checkpoint(self.path, {"optimizer_param_groups": groups}).restore_optimizer(opt, own)
        generator.set_state(state["rng.train"])
        torch.set_rng_state(state["rng.global"])
        return state


def load_gan_checkpoint(path: str | os.PathLike) -> GANCheckpoint:
    """Open a GAN checkpoint (a run folder, checkpoint folder or its config.json) and check it."""
    folder, _ = resolve_checkpoint(path)
    cfg_path = folder / "config.json"
    cfg = read_json(cfg_path, "GAN checkpoint config")
    check_format(cfg, FORMAT, (FORMAT_VERSION,), f"checkpoint {folder}")
    for key in ("generator", "discriminator", "data_shape", "data_kind"):
        if key not in cfg:
            raise DifflabError(f"GAN checkpoint config {cfg_path} lacks the field {key!r}")
    if cfg["data_kind"] not in DATA_KINDS:
        raise DifflabError(f"GAN checkpoint config {cfg_path} names an unknown data kind {cfg['data_kind']!r}")
    return GANCheckpoint(folder, cfg)
