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

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..data.kinds import Dataset
from ..errors import DifflabError
from ..io import atomic_write_json
from ..train.budget import Budget
from ..train.checkpoint import training_state
from ..train.ema import EMA
from ..train.loop import TrainConfig, _Interrupt
from ..train.milestones import keep_milestone, milestones_due
from .checkpoint import load_gan_checkpoint, save_gan_checkpoint
from .generator import GANGenerator
from .losses import GAN_LOSSES, d_loss, g_loss, r1_penalty
from .monitor import FailureMonitor, diversity_ratio
from .networks import Discriminator, GANGeneratorNet

__all__ = ["GANConfig", "GANResult", "train_gan"]

MONITOR_BATCH = 64   # fixed latents and real images of the diversity check


@dataclass
class GANConfig:
    steps: int | None = None          # total steps (one D and one G update each; counted across resumes)
    minutes: float | None = None      # wall-clock budget of this invocation
    batch_size: int = 64
    lr: float = 2e-4                  # generator learning rate
    lr_d: float | None = None         # discriminator learning rate (None: lr)
    adam_betas: tuple[float, float] = (0.5, 0.99)
    loss: str = "nonsaturating"       # or "hinge"
    r1_gamma: float = 1.0             # gamma of R1 (0: off)
    r1_every: int = 4                 # lazy R1: every k steps, weight scaled by k
    ema_decay: float = 0.999
    latent_dim: int = 64
    width: int = 16                   # channels of the finest stage of G and D
    seed: int = 0
    log_every: int = 25
    sample_every: int = 1000          # steps between sample grids (0: only at the end)
    sample_n: int = 64
    ckpt_every_minutes: float = 5.0   # also saved at the end and on Ctrl-C
    keep: int = 3
    milestones: tuple[float, ...] = ()  # budget fractions whose checkpoints are kept (e.g. 0.25, 0.5, 0.75)
    d_win_loss: float = 0.1           # failure detectors (see .monitor)
    min_diversity: float = 0.3
    monitor_patience: int = 5
    monitor_from: int = 500           # first step the detectors watch (a GAN starts out collapsed)
    progress: bool = True

    def check(self) -> None:
        # what both trainers share (budget, batch size, learning rate, betas, EMA) is checked by TrainConfig
        TrainConfig(steps=self.steps, minutes=self.minutes, batch_size=self.batch_size, lr=self.lr,
                    adam_betas=tuple(self.adam_betas), ema_decay=self.ema_decay).check()
        if self.lr_d is not None and not self.lr_d > 0:
            raise DifflabError(f"discriminator learning rate must be > 0, got {self.lr_d}")
        if self.loss not in GAN_LOSSES:
            raise DifflabError(f"unknown GAN loss {self.loss!r}; choose from {', '.join(GAN_LOSSES)}")
        if self.r1_gamma < 0 or self.r1_every < 1:
            raise DifflabError(f"R1 needs gamma >= 0 and every >= 1, got {self.r1_gamma} and {self.r1_every}")
        if self.keep < 1 or self.log_every < 1:
            raise DifflabError(f"keep and log_every must be >= 1, got {self.keep} and {self.log_every}")
        m = list(self.milestones)
        if m != sorted(set(m)) or any(not 0 < f <= 1 for f in m):
            raise DifflabError(f"milestones must be increasing fractions of the budget in (0, 1], got {m}")


@dataclass
class GANResult:
    step: int
    seconds: float
    it_per_s: float
    interrupted: bool
    checkpoint: Path | None
    generator: GANGenerator | None = None   # the EMA generator, ready to sample from
    history: list[dict[str, Any]] = field(default_factory=list)


def _config(config: GANConfig | None, overrides: dict[str, Any]) -> GANConfig:
    cfg = config or GANConfig()
    if overrides:
        unknown = set(overrides) - set(GANConfig.__dataclass_fields__)
        if unknown:
            raise DifflabError(f"unknown GAN training options: {', '.join(sorted(unknown))}")
        cfg = GANConfig(**{**asdict(cfg), **overrides})
    cfg.check()
    return cfg


def train_gan(data: Dataset, out: str | os.PathLike, config: GANConfig | None = None, resume: bool = False,
              **overrides: Any) -> GANResult:
    """Train a GAN on the images of ``data`` into the run folder ``out``.

    ``overrides`` are :class:`GANConfig` fields (``train_gan(data, "runs/gan", minutes=10)``).  The networks
    are built after seeding the global RNG with ``seed``; with ``resume=True`` they, the EMA, both
    optimizers, the random streams and the detectors' streaks come from the latest checkpoint in ``out``
    (the network options of this call are then ignored)."""
    cfg = _config(config, overrides)
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
    betas = tuple(map(float, cfg.adam_betas))
    fused = all(p.device.type in ("cpu", "cuda") for p in [*G.parameters(), *D.parameters()])
    optimizers = {"g": torch.optim.AdamW(G.parameters(), lr=cfg.lr, betas=betas, weight_decay=0.0, fused=fused),
                  "d": torch.optim.AdamW(D.parameters(), lr=cfg.lr_d or cfg.lr, betas=betas, weight_decay=0.0,
                                         fused=fused)}
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
    budget = Budget(cfg.steps, cfg.minutes, step, cfg.progress, desc="training GAN")
    last_ckpt = budget.start

    def save() -> Path:
        info = {"data_kind": data.kind, "data_shape": list(shape), "classes": data.classes, "training": train_info,
                "training_seconds": seconds_before + budget.elapsed()}
        state = {**training_state(gen, ema), **monitor.state()}
        return save_gan_checkpoint(out, step, G, D, ema.model, optimizers, state, info, cfg.keep)

    def write_samples(tag: str) -> None:
        from ..outputs import preview
        preview(data.kind, ema_gen.sample(data.preview_n or cfg.sample_n, cfg.seed), out / "samples" / f"{tag}.png",
                data=x_all, title=tag)

    fractions = list(cfg.milestones)
    kept = milestones_due(fractions, 0.0 if cfg.steps is None else step / cfg.steps, 0) if ck is not None else 0
    history: list[dict[str, Any]] = []
    start_step, t_log, s_log = step, budget.start, step
    acc = dict.fromkeys(("loss_d", "loss_g", "d_real", "d_fake", "r1"), 0.0)
    n_acc = n_r1 = 0
    interrupted, ckpt_path = False, None
    r1_weight = 0.5 * cfg.r1_gamma * cfg.r1_every
    G.train()
    D.train()
    with _Interrupt() as intr, open(out / "log.jsonl", "a") as log:
        while not budget.spent(step):
            if intr.hit:
                interrupted = True
                break
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
            if use_r1:
                r1 = r1_penalty(l_real, x_real)
                total = loss_d + r1_weight * r1
                acc["r1"] += r1.item()
                n_r1 += 1
            optimizers["d"].zero_grad(set_to_none=True)
            total.backward()
            optimizers["d"].step()
            # 2. generator
            D.requires_grad_(False)
            loss_g = g_loss(cfg.loss, D(G(torch.randn(cfg.batch_size, latent_dim, generator=gen))))
            optimizers["g"].zero_grad(set_to_none=True)
            loss_g.backward()
            optimizers["g"].step()
            D.requires_grad_(True)
            ema.update(G)
            step += 1
            if not (torch.isfinite(loss_d) and torch.isfinite(loss_g)):
                raise RuntimeError(f"GAN losses became {loss_d.item()}, {loss_g.item()} at step {step}; "
                                   f"lower the learning rate or raise r1_gamma")
            for key, value in (("loss_d", loss_d), ("loss_g", loss_g), ("d_real", torch.sigmoid(l_real.detach()).mean()),
                               ("d_fake", torch.sigmoid(l_fake.detach()).mean())):
                acc[key] += value.item()
            n_acc += 1
            if step % cfg.log_every == 0:
                with torch.no_grad():
                    diversity = diversity_ratio(G(z_mon), real_mon)
                now = time.perf_counter()
                rec = {"step": step, **{k: acc[k] / n_acc for k in ("loss_d", "loss_g", "d_real", "d_fake")},
                       "r1": acc["r1"] / n_r1 if n_r1 else None, "diversity": diversity,
                       "it_s": (step - s_log) / max(now - t_log, 1e-9), "elapsed_s": budget.elapsed()}
                warnings = monitor.check(rec["loss_d"], diversity) if step >= cfg.monitor_from else []
                if warnings:
                    rec["warnings"] = warnings
                    for w in warnings:
                        budget.write(f"warning: step {step}: {w['message']}")
                log.write(json.dumps(rec) + "\n")
                log.flush()
                history.append(rec)
                acc = dict.fromkeys(acc, 0.0)
                n_acc = n_r1 = 0
                t_log, s_log = now, step
            budget.update(step, d=f"{loss_d.item():.3f}", g=f"{loss_g.item():.3f}")
            if cfg.sample_every and step % cfg.sample_every == 0:
                write_samples(f"step_{step:07d}")
            due = milestones_due(fractions, budget.fraction(step), kept)
            if due > kept or time.perf_counter() - last_ckpt >= 60.0 * cfg.ckpt_every_minutes:
                ckpt_path = save()
                last_ckpt = time.perf_counter()
                if due > kept:
                    keep_milestone(ckpt_path)
                    kept = due
        budget.close()
        elapsed = budget.elapsed()
        if ckpt_path is None or not ckpt_path.name.endswith(f"{step:07d}"):
            ckpt_path = save()
        if not interrupted and fractions and fractions[-1] == 1.0 and kept < len(fractions):
            keep_milestone(ckpt_path)   # a minute budget ends just before its 1.0 milestone
        if interrupted:
            print(f"interrupted at step {step}; checkpoint saved to {ckpt_path}; continue with --resume")
        else:
            write_samples(f"step_{step:07d}")
    return GANResult(step, elapsed, (step - start_step) / max(elapsed, 1e-9), interrupted, ckpt_path,
                     GANGenerator(ema.model.eval(), data.kind), history)
