"""Training the KL autoencoder of latent diffusion, with the conventions of the diffusion trainer
(:mod:`.loop`): a step or wall-clock budget, one seeded generator for batches and posterior noise,
AdamW with linear LR warm-up, gradient clipping, a progress bar with rate and ETA, ``log.jsonl``,
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
from dataclasses import asdict, dataclass, field
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
from .checkpoint import Checkpoint, optimizer_tensors, resolve_checkpoint, write_checkpoint
from .loop import TrainConfig, lr_at
from .session import Session

__all__ = ["AutoencoderTrainConfig", "AutoencoderTrainResult", "autoencoder_checkpoint", "load_autoencoder",
           "estimate_scale", "kl_weight_at", "train_autoencoder"]


@dataclass
class AutoencoderTrainConfig:
    steps: int | None = None          # total optimisation steps (counted across resumes)
    minutes: float | None = None      # wall-clock budget of this invocation
    batch_size: int = 64
    lr: float = 1e-3
    adam_betas: tuple[float, float] = (0.9, 0.999)
    warmup: int = 100                 # linear LR warm-up steps
    lr_schedule: str = "constant"     # "constant" or "cosine" (as the diffusion trainer, :func:`.loop.lr_at`)
    grad_clip: float = 1.0
    loss: str = "l1"                  # reconstruction loss: l1 or l2
    kl_weight: float = 1e-4           # beta of the KL term (per pixel, see losses.autoencoder)
    kl_warmup: int = 500              # steps of the linear KL warm-up from 0
    feature_weight: float = 0.0       # weight of the classifier-feature loss (needs a feature network)
    seed: int = 0
    log_every: int = 25
    sample_every: int = 500           # steps between reconstruction grids (0: only at the end)
    ckpt_every_minutes: float = 5.0   # also saved at the end and on Ctrl-C
    keep: int = 3
    progress: bool = True

    def check(self) -> None:
        """The fields shared with the diffusion trainer are checked by :meth:`.loop.TrainConfig.check`."""
        TrainConfig(**{k: getattr(self, k) for k in ("steps", "minutes", "batch_size", "lr", "adam_betas", "warmup",
                                                     "lr_schedule", "grad_clip")}).check()
        if self.loss not in RECONSTRUCTION_LOSSES:
            raise DifflabError(f"unknown reconstruction loss {self.loss!r}; choose from {', '.join(RECONSTRUCTION_LOSSES)}")
        if self.kl_weight < 0 or self.feature_weight < 0 or self.kl_warmup < 0:
            raise DifflabError("kl_weight, kl_warmup and feature_weight must be >= 0")


@dataclass
class AutoencoderTrainResult:
    step: int
    seconds: float
    it_per_s: float
    final_loss: float
    interrupted: bool
    checkpoint: Path
    encoder: AutoencoderEncoder       # the trained autoencoder with its scale, loaded from ``checkpoint``
    history: list[dict[str, Any]] = field(default_factory=list)


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
    cfg = config or AutoencoderTrainConfig()
    if overrides:
        unknown = set(overrides) - set(AutoencoderTrainConfig.__dataclass_fields__)
        if unknown:
            raise DifflabError(f"unknown autoencoder training options: {', '.join(sorted(unknown))}")
        cfg = AutoencoderTrainConfig(**{**asdict(cfg), **overrides})
    cfg.check()
    if cfg.feature_weight > 0 and features is None:
        raise DifflabError("a feature loss weight needs a feature network (a difflab train-classifier folder)")
    net.check_input(data.shape)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    x_all = data.x
    preview = x_all[:16] if preview is None else preview[:16]

    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, betas=tuple(map(float, cfg.adam_betas)), weight_decay=0.0)
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
        gen.set_state(state["rng.train"])
        torch.set_rng_state(state["rng.global"])
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
        state = {**opt_tensors, "rng.train": gen.get_state(), "rng.global": torch.get_rng_state()}
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
    with Session(out, cfg, step, save, picture, "autoencoder") as run:
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
    return AutoencoderTrainResult(step, run.seconds, run.it_per_s, last_loss, run.interrupted, run.checkpoint,
                                  AutoencoderEncoder.from_folder(run.checkpoint), run.history)
