"""Training the KL autoencoder of latent diffusion, with the conventions of the diffusion trainer
(:mod:`.loop`): a step or wall-clock budget, one seeded generator for batches and posterior noise,
fused AdamW with linear LR warm-up, gradient clipping, a progress bar with rate and ETA, ``log.jsonl``,
reconstruction grids, atomic checkpoints (:func:`.checkpoint.write_checkpoint`, format
``difflab-autoencoder``), Ctrl-C saves, and an exact resume (weights, optimizer moments, random streams).

The KL weight rises linearly from 0 to ``kl_weight`` over ``kl_warmup`` steps (so the autoencoder first
learns to reconstruct, then its latent is pulled towards N(0, I)).  Every checkpoint stores the latent
scale factor estimated on the training data, :math:`1/\\mathrm{std}` of the posterior-mean latents over
the whole training set (:func:`estimate_scale`), so every checkpoint is a usable encoder.
"""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

from ..data.kinds import Dataset
from ..encoders.autoencoder import FORMAT, FORMAT_VERSION, AutoencoderEncoder, read_autoencoder_config
from ..errors import DifflabError
from ..io import atomic_write_json
from ..losses.autoencoder import RECONSTRUCTION_LOSSES, autoencoder_loss
from ..nn.autoencoder import KLAutoencoder
from .checkpoint import (Checkpoint, optimizer_tensors, resolve_checkpoint, restore_training_state, training_state,
                         write_checkpoint)
from .loop import lr_at
from .session import LoopConfig, RunResult, Session, adamw, with_overrides

__all__ = ["AutoencoderTrainConfig", "AutoencoderTrainResult", "autoencoder_checkpoint", "load_autoencoder",
           "estimate_scale", "kl_weight_at", "train_autoencoder"]


@dataclass
class AutoencoderTrainConfig(LoopConfig):
    """Options of :func:`train_autoencoder` (those of every trainer in :class:`~.session.LoopConfig`)."""

    lr: float = 1e-3
    warmup: int = 100
    sample_every: int = 500           # steps between reconstruction grids (0: only at the end)
    loss: str = "l1"                  # reconstruction loss: l1 or l2
    kl_weight: float = 1e-4           # beta of the KL term (per pixel, see losses.autoencoder)
    kl_warmup: int = 500              # steps of the linear KL warm-up from 0
    feature_weight: float = 0.0       # weight of the classifier-feature loss (needs a feature network)

    def check(self) -> None:
        super().check()
        if self.loss not in RECONSTRUCTION_LOSSES:
            raise DifflabError(f"unknown reconstruction loss {self.loss!r}; choose from {', '.join(RECONSTRUCTION_LOSSES)}")
        if self.kl_weight < 0 or self.feature_weight < 0 or self.kl_warmup < 0:
            raise DifflabError("kl_weight, kl_warmup and feature_weight must be >= 0")


@dataclass
class AutoencoderTrainResult(RunResult):
    final_loss: float = float("nan")
    encoder: AutoencoderEncoder | None = None   # the trained autoencoder with its scale, loaded from ``checkpoint``


def kl_weight_at(cfg: AutoencoderTrainConfig, step: int) -> float:
    """beta of optimisation step ``step`` (0-based): ``kl_weight * min(1, (step + 1) / kl_warmup)``."""
    return cfg.kl_weight * min(1.0, (step + 1) / cfg.kl_warmup) if cfg.kl_warmup else cfg.kl_weight


@torch.no_grad()
def estimate_scale(net: KLAutoencoder, x: Tensor, batch_size: int = 256) -> float:
    """:math:`1/\\mathrm{std}` of the posterior means of ``x`` over all their entries (Rombach et al.,
    arXiv:2112.10752, sec. 4.3.2), in float64."""
    was_training = net.training
    net.eval()
    mu = torch.cat([net.encode(x[i:i + batch_size]).mean for i in range(0, x.shape[0], batch_size)]).double()
    net.train(was_training)
    std = float(mu.std())
    if not std > 0:
        raise DifflabError(f"the latents of the training data have standard deviation {std}; cannot scale them")
    return 1.0 / std


def autoencoder_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """An autoencoder run folder or checkpoint folder, opened and checked (format ``difflab-autoencoder``)."""
    folder, _ = resolve_checkpoint(path)
    return Checkpoint(folder, read_autoencoder_config(folder))


def load_autoencoder(path: str | os.PathLike) -> AutoencoderEncoder:
    """The trained autoencoder of a run folder (its latest checkpoint) or checkpoint folder, as an encoder."""
    return AutoencoderEncoder.from_folder(autoencoder_checkpoint(path).path)


def train_autoencoder(net: KLAutoencoder, data: Dataset, out: str | os.PathLike,
                      config: AutoencoderTrainConfig | None = None, resume: bool = False,
                      features: Callable[[Tensor], Tensor] | None = None, preview: Tensor | None = None,
                      feature_info: dict[str, Any] | None = None, **overrides: Any) -> AutoencoderTrainResult:
    """Train ``net`` on the images of ``data`` into the run folder ``out``.

    Args:
        features: a frozen feature map for the feature loss (e.g. ``SmallCNN.features``), used when
            ``feature_weight > 0``; ``feature_info`` is recorded with it (its folder).
        preview: images whose reconstructions are drawn in ``out/samples/recon_step_*.png`` (default: the
            first 16 training images).
        resume: continue from the latest checkpoint in ``out`` (weights, optimizer, step, random streams).
        overrides: :class:`AutoencoderTrainConfig` fields.
    """
    cfg = with_overrides(AutoencoderTrainConfig, config, overrides, "autoencoder training")
    if cfg.feature_weight > 0 and features is None:
        raise DifflabError("a feature loss weight needs a feature network (a difflab train-classifier folder)")
    net.check_input(data.shape)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    x_all = data.x
    preview = x_all[:16] if preview is None else preview[:16]

    opt = adamw(net.parameters(), cfg.lr, cfg.adam_betas)
    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    step = 0
    if resume:
        ck = autoencoder_checkpoint(out)
        if ck.config["autoencoder"] != net.config:
            raise DifflabError(f"cannot resume: the autoencoder in {ck.path} differs from the one given")
        state = ck.tensors("train_state.safetensors")
        net.load_state_dict(ck.tensors("model.safetensors"))
        ck.restore_optimizer(opt, state)
        restore_training_state(state, gen)
        step = ck.step
        print(f"resumed from {ck.path} at step {step}")
    if cfg.steps is not None and step >= cfg.steps:
        raise DifflabError(f"run {out} is already at step {step} >= steps={cfg.steps}; raise --steps to continue")

    train_info = {k: v for k, v in asdict(cfg).items() if k != "progress"}
    train_info["data"] = {"name": data.name, "n": len(data), **data.info}
    if feature_info:
        train_info["features"] = feature_info
    atomic_write_json(out / "run.json", {"training": train_info})

    def save(step: int) -> Path:
        opt_tensors, groups = optimizer_tensors(opt)
        state = {**opt_tensors, **training_state(gen)}
        conf = {"format": FORMAT, "format_version": FORMAT_VERSION, "autoencoder": net.config,
                "scale": estimate_scale(net, x_all), "data_kind": data.kind, "data_shape": list(data.shape),
                "training": train_info, "optimizer_param_groups": groups}
        return write_checkpoint(out, step, conf, {"model.safetensors": net.state_dict(),
                                                  "train_state.safetensors": state}, cfg.keep)

    def picture(tag: str) -> None:
        from ..metrics.reconstruction import reconstruct
        from ..viz import save_grid
        save_grid(torch.cat([preview, reconstruct(net, preview)]).clamp(-1, 1), out / "samples" / f"recon_{tag}.png",
                  nrow=len(preview))

    last_loss = float("nan")
    net.train()
    with Session(out, cfg, step, save, picture, "autoencoder", milestones=cfg.milestones) as run:
        while run.running(step):
            x = x_all[torch.randint(0, len(x_all), (cfg.batch_size,), generator=gen)]
            eps = torch.randn((cfg.batch_size, *net.latent_shape), generator=gen)
            lr, beta = lr_at(cfg, step, run.fraction(step)), kl_weight_at(cfg, step)
            for g in opt.param_groups:
                g["lr"] = lr
            terms = {k: v.mean() for k, v in autoencoder_loss(net, x, eps, cfg.loss, beta, features,
                                                               cfg.feature_weight).items()}
            if not torch.isfinite(terms["loss"]):
                raise RuntimeError(f"loss became {terms['loss'].item()} at step {step}; lower the learning rate")
            opt.zero_grad(set_to_none=True)
            terms["loss"].backward()
            gnorm = torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else math.inf)
            opt.step()
            step += 1
            last_loss = terms["loss"].item()
            run.after_step(step, {k: v.item() for k, v in terms.items()},
                           {"kl_weight": beta, "lr": lr, "grad_norm": float(gnorm)})
    return AutoencoderTrainResult(step, run.seconds, run.it_per_s, run.interrupted, run.checkpoint, run.history,
                                  final_loss=last_loss, encoder=AutoencoderEncoder.from_folder(run.checkpoint))
