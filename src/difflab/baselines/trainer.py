r"""The GAN trainer, with the conventions of :mod:`difflab.train.loop`: a step or wall-clock budget, one
seeded ``torch.Generator`` for every batch index and latent, fused AdamW, EMA of the generator, a JSONL
log, sample grids, atomic checkpoints (``difflab-gan``), exact resume and Ctrl-C.

One step (Goodfellow et al., arXiv:1406.2661, Algorithm 1, with one D update per G update):

1. D: real batch :math:`x`, latents :math:`z`; minimise :math:`L_D(D(x), D(G(z)))` plus, every
   ``r1_every`` steps, :math:`\tfrac{\gamma}{2} \cdot r1\_every \cdot E\|\nabla_x D(x)\|^2` (R1,
   Mescheder et al., arXiv:1801.04406; applied lazily every k steps with the weight scaled by k, as
   StyleGAN2 does, Karras et al., arXiv:1912.04958, sec. 3.1).
2. G: new latents :math:`z'`; minimise :math:`L_G(D(G(z')))` (D frozen).
3. EMA of G's weights (:class:`~difflab.train.EMA`), which is what samples.

Every ``log_every`` steps the log gets the window's mean losses, R1 term, D(real) and D(fake) (mean
sigmoid of the logits), the diversity ratio of a fixed latent batch (:mod:`.monitor`) and any failure
warnings, which are also printed.  The detectors watch from step ``monitor_from`` (500) on: a generator
starts out collapsed (on MNIST the diversity ratio was 0.02 at step 100 and above 0.6 by step 200).  ``milestones`` (fractions of the budget) keep checkpoints out of the
``keep`` rotation, for quality against training time (:mod:`difflab.train.milestones`).
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from ..data.kinds import Dataset
from ..errors import DifflabError
from ..io import atomic_write_json
from ..train.checkpoint import training_state
from ..train.ema import EMA
from ..train.loop import lr_at
from ..train.session import LoopConfig, RunResult, Session, adamw, with_overrides
from .checkpoint import load_gan_checkpoint, save_gan_checkpoint
from .generator import GANGenerator
from .losses import GAN_LOSSES, d_loss, g_loss, r1_penalty
from .monitor import FailureMonitor, diversity_ratio
from .networks import Discriminator, GANGeneratorNet

__all__ = ["GANConfig", "GANResult", "train_gan"]

MONITOR_BATCH = 64   # fixed latents and real images of the diversity check


@dataclass
class GANConfig(LoopConfig):
    """Options of :func:`train_gan` (those of every trainer in :class:`~difflab.train.session.LoopConfig`; a step
    is one D and one G update)."""

    lr: float = 2e-4                  # generator learning rate
    adam_betas: tuple[float, float] = (0.5, 0.99)
    warmup: int = 0                   # linear warm-up of both learning rates (0: none)
    grad_clip: float = 0.0            # gradient-norm clipping of both networks (0: none)
    lr_d: float | None = None         # discriminator learning rate (None: lr)
    loss: str = "nonsaturating"       # or "hinge"
    r1_gamma: float = 1.0             # gamma of R1 (0: off)
    r1_every: int = 4                 # lazy R1: every k steps, weight scaled by k
    ema_decay: float = 0.999
    latent_dim: int = 64
    width: int = 16                   # channels of the finest stage of G and D
    sample_n: int = 64
    d_win_loss: float = 0.1           # failure detectors (see .monitor)
    min_diversity: float = 0.3
    monitor_patience: int = 5
    monitor_from: int = 500           # first step the detectors watch (a GAN starts out collapsed)

    def check(self) -> None:
        super().check()
        if not 0 <= self.ema_decay < 1:
            raise DifflabError(f"EMA decay must be in [0, 1), got {self.ema_decay}")
        if self.lr_d is not None and not self.lr_d > 0:
            raise DifflabError(f"discriminator learning rate must be > 0, got {self.lr_d}")
        if self.loss not in GAN_LOSSES:
            raise DifflabError(f"unknown GAN loss {self.loss!r}; choose from {', '.join(GAN_LOSSES)}")
        if self.r1_gamma < 0 or self.r1_every < 1:
            raise DifflabError(f"R1 needs gamma >= 0 and every >= 1, got {self.r1_gamma} and {self.r1_every}")


@dataclass
class GANResult(RunResult):
    generator: GANGenerator | None = None   # the EMA generator, ready to sample from


def _descend(optimizer: torch.optim.Optimizer, loss: torch.Tensor, net: torch.nn.Module, grad_clip: float) -> None:
    """One optimiser step on ``loss`` for ``net``, its gradient norm clipped to ``grad_clip`` (0: no clip)."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(net.parameters(), grad_clip)
    optimizer.step()


def train_gan(data: Dataset, out: str | os.PathLike, config: GANConfig | None = None, resume: bool = False,
              **overrides: Any) -> GANResult:
    """Train a GAN on the images of ``data`` into the run folder ``out``.

    ``overrides`` are :class:`GANConfig` fields (``train_gan(data, "runs/gan", minutes=10)``).  The networks
    are built after seeding the global RNG with ``seed``; with ``resume=True`` they, the EMA, both
    optimizers, the random streams and the detectors' streaks come from the latest checkpoint in ``out``
    (the network options of this call are then ignored)."""
    cfg = with_overrides(GANConfig, config, overrides, "GAN training")
    if data.kind != "images":
        raise DifflabError(f"the GAN trains on images, not on {data.kind} ({data.describe()})")
    out = Path(out)
    shape = data.shape
    torch.manual_seed(cfg.seed)
    ck = load_gan_checkpoint(out) if resume else None
    if ck is not None:
        if ck.data_shape != shape:
            raise DifflabError(f"cannot resume: checkpoint data shape {list(ck.data_shape)} != data {list(shape)}")
        G, D = ck.networks()
    else:
        G = GANGeneratorNet(shape, cfg.latent_dim, cfg.width)
        D = Discriminator(shape, cfg.width)
    out.mkdir(parents=True, exist_ok=True)
    optimizers = {"g": adamw(G.parameters(), cfg.lr, cfg.adam_betas),
                  "d": adamw(D.parameters(), cfg.lr_d or cfg.lr, cfg.adam_betas)}
    ema = EMA(G, cfg.ema_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    monitor = FailureMonitor(cfg.d_win_loss, cfg.min_diversity, cfg.monitor_patience)
    step, seconds_before = 0, 0.0
    if ck is not None:
        monitor.load_state(ck.restore_training(G, D, ema, optimizers, gen))
        step, seconds_before = ck.step, float(ck.config.get("training_seconds", 0.0))
        print(f"resumed from {ck.path} at step {step}")
    if cfg.steps is not None and step >= cfg.steps:
        raise DifflabError(f"run {out} is already at step {step} >= steps={cfg.steps}; raise --steps to continue")

    x_all = data.x
    latent_dim = G.config["latent_dim"]
    # the diversity check's fixed latents and real images come from their own streams, not the trainer's
    g_mon = torch.Generator().manual_seed(cfg.seed + 1)
    z_mon = torch.randn(MONITOR_BATCH, latent_dim, generator=g_mon)
    real_mon = x_all[torch.randperm(len(x_all), generator=g_mon)[:MONITOR_BATCH]]
    ema_gen = GANGenerator(ema.model, data.kind)
    train_info = {k: v for k, v in asdict(cfg).items() if k != "progress"}
    train_info.update(latent_dim=latent_dim, width=G.config["width"])   # a resume keeps the checkpoint's networks
    train_info["data"] = {"name": data.name, "n": len(data), **data.info}
    atomic_write_json(out / "run.json", {"training": train_info, "parameters": {
        "generator": sum(p.numel() for p in G.parameters()), "discriminator": sum(p.numel() for p in D.parameters())}})

    def save(step: int) -> Path:
        info = {"data_kind": data.kind, "data_shape": list(shape), "classes": data.classes, "training": train_info,
                "training_seconds": session.total_seconds}
        state = {**training_state(gen, ema), **monitor.state()}
        return save_gan_checkpoint(out, step, G, D, ema.model, optimizers, state, info, cfg.keep)

    def write_samples(tag: str) -> None:
        from ..outputs import preview
        preview(data.kind, ema_gen.sample(data.preview_n or cfg.sample_n, cfg.seed), out / "samples" / f"{tag}.png",
                data=x_all, title=tag)

    def watch(rec: dict[str, Any]) -> None:
        """At each log record: the diversity of fixed latents, and the failure detectors' warnings."""
        rec.setdefault("r1", None)   # no R1 step in this window (lazy R1)
        with torch.no_grad():
            rec["diversity"] = diversity_ratio(G(z_mon), real_mon)
        warnings = monitor.check(rec["loss_d"], rec["diversity"]) if rec["step"] >= cfg.monitor_from else []
        if warnings:
            rec["warnings"] = warnings
            for w in warnings:
                session.write(f"warning: step {rec['step']}: {w['message']}")

    r1_weight = 0.5 * cfg.r1_gamma * cfg.r1_every
    G.train()
    D.train()
    with Session(out, cfg, step, save, write_samples, "training GAN", seconds_before, cfg.milestones,
                 on_log=watch) as session:
        lr_ratio = (cfg.lr_d or cfg.lr) / cfg.lr
        while session.running(step):
            lr = lr_at(cfg, step, session.fraction(step))   # warm-up and schedule as the diffusion trainer
            for key, opt in optimizers.items():
                for g in opt.param_groups:
                    g["lr"] = lr * (lr_ratio if key == "d" else 1.0)
            # 1. discriminator
            x_real = x_all[torch.randint(0, len(x_all), (cfg.batch_size,), generator=gen)]
            z = torch.randn(cfg.batch_size, latent_dim, generator=gen)
            with torch.no_grad():
                x_fake = G(z)
            use_r1 = cfg.r1_gamma > 0 and step % cfg.r1_every == 0
            x_real.requires_grad_(use_r1)
            l_real, l_fake = D(x_real), D(x_fake)
            loss_d = d_loss(cfg.loss, l_real, l_fake)
            total = loss_d
            terms = {}
            if use_r1:
                r1 = r1_penalty(l_real, x_real)
                total = loss_d + r1_weight * r1
                terms["r1"] = r1.item()
            _descend(optimizers["d"], total, D, cfg.grad_clip)
            # 2. generator
            D.requires_grad_(False)
            loss_g = g_loss(cfg.loss, D(G(torch.randn(cfg.batch_size, latent_dim, generator=gen))))
            _descend(optimizers["g"], loss_g, G, cfg.grad_clip)
            D.requires_grad_(True)
            ema.update(G)
            step += 1
            if not (torch.isfinite(loss_d) and torch.isfinite(loss_g)):
                raise RuntimeError(f"GAN losses became {loss_d.item()}, {loss_g.item()} at step {step}; "
                                   f"lower the learning rate or raise r1_gamma")
            terms = {"loss_d": loss_d.item(), "loss_g": loss_g.item(),
                     "d_real": torch.sigmoid(l_real.detach()).mean().item(),
                     "d_fake": torch.sigmoid(l_fake.detach()).mean().item(), **terms}
            session.after_step(step, terms, extra={"lr": lr},
                               postfix={"d": f"{terms['loss_d']:.3f}", "g": f"{terms['loss_g']:.3f}"})
    return GANResult(step, session.seconds, session.it_per_s, session.interrupted, session.checkpoint, session.history,
                     generator=GANGenerator(ema.model.eval(), data.kind))
