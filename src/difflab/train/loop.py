"""The training loop: AdamW, EMA, gradient clipping, LR warm-up, optional bf16 autocast,
a step or wall-clock budget, JSONL logs, sample grids, atomic checkpoints, resume and Ctrl-C.

Randomness: one ``torch.Generator`` seeded with ``seed`` draws every batch index, t and noise, and
the global RNG (dropout) is seeded too; both states are checkpointed, so a resumed run continues
the same random streams.  t comes from the ``t_proposal`` (:func:`~difflab.process.propose_t`); a data
set with ``noise`` gives each sample its paired noise (reflow); an ``objective`` replaces the denoising
loss (distillation, :mod:`difflab.distill`) and keeps everything else of the loop.

Devices (:mod:`difflab.devices`): the network, its EMA and the data set move to ``device`` once; batches,
times and noise are still drawn from the CPU generator and moved, so every device trains on the same numbers;
bf16 autocast uses the device's type; the loss, gradient norm and finiteness are read back only at log steps.

Several processes (``torchrun``, :mod:`difflab.distributed`): ``batch_size`` is the *global* batch.  Every
rank draws the same global batch from the one generator and trains on its contiguous share
(:func:`~difflab.distributed.shard`) through DistributedDataParallel, whose gradient average over equal
shares is the gradient of the global mean loss: W ranks take the steps one process takes with the whole batch
(up to float summation order).  The generator's state is therefore global, and a checkpoint written by any
number of ranks resumes on any other number.  Rank 0 alone keeps the EMA and writes checkpoints, logs and
pictures; the global RNG (dropout) of rank r is seeded with :func:`~difflab.distributed.rank_seed`.
"""
from __future__ import annotations

import math
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor

from .. import distributed
from ..data.kinds import Dataset
from ..devices import autocast, resolve_device, to_memory_format
from ..denoisers.denoiser import Denoiser
from ..encoders.attached import check_same_encoder, data_space, decode_samples
from ..errors import DifflabError
from ..io import atomic_write_json
from ..losses import WEIGHTINGS, denoising_loss
from ..process.proposals import T_PROPOSALS, propose_t
from .checkpoint import load_checkpoint, save_checkpoint, training_state
from .ema import EMA
from .posthoc_ema import (PowerEMA, check_fresh_run, drop_snapshots_after, power_ema_state, restore_power_emas,
                          save_snapshot, sigma_rel_to_gamma)
from .session import LR_SCHEDULES, LoopConfig, RunResult, Session, adamw, with_overrides

__all__ = ["TrainConfig", "TrainResult", "Objective", "lr_at", "train", "LR_SCHEDULES"]

@dataclass
class TrainConfig(LoopConfig):
    """Options of :func:`train` (those of every trainer in :class:`~.session.LoopConfig`).

    One default differs from the other trainers': a milestone at 30 % of the budget, the weak model of
    autoguidance (``difflab sample RUN --autoguide RUN/milestones/step_N``; BENCHMARKS.md, "Sample fidelity per
    CPU-minute").  Batch 64 stays: over two training seeds on MNIST at 10 CPU minutes it beat batch 32."""

    milestones: tuple[float, ...] = (0.3,)
    weight_decay: float = 0.0
    ema_decay: float = 0.999
    posthoc_ema: tuple[float, ...] = ()  # relative lengths of power-function EMAs saved for post-hoc EMA (0.05, 0.1)
    posthoc_every: int = 100          # steps between their snapshots (RUN/posthoc_ema)
    weighting: str = "min_snr"        # min(SNR, 5) in x0 space (Hang et al. 2023)
    min_snr_gamma: float = 5.0
    t_proposal: str = "uniform"       # or "logit_normal" (Esser et al. 2024) with the two fields below
    t_logit_mean: float = 0.0
    t_logit_std: float = 1.0
    cond_drop: float = 0.1            # class-conditional models: fraction of labels replaced by the null label
    bf16: bool = False
    device: str = "cpu"               # cpu, cuda, mps or auto (difflab.devices.resolve_device)
    channels_last: bool = False       # image batches and convolution weights in NHWC layout
    sample_n: int = 64
    sample_steps: int = 50            # DDIM steps for the grids

    def check(self) -> None:
        super().check()
        if not 0 <= self.ema_decay < 1:
            raise DifflabError(f"EMA decay must be in [0, 1), got {self.ema_decay}")
        for s in self.posthoc_ema:
            sigma_rel_to_gamma(s)     # refuses lengths outside (0, 1/sqrt(12)]
        if len({round(s, 4) for s in self.posthoc_ema}) != len(self.posthoc_ema):
            raise DifflabError(f"post-hoc EMA lengths must differ (to 4 decimals), got {list(self.posthoc_ema)}")
        if self.posthoc_every < 1:
            raise DifflabError(f"posthoc_every must be >= 1 step, got {self.posthoc_every}")
        if not 0 <= self.cond_drop < 1:
            raise DifflabError(f"label dropout (cond_drop) must be in [0, 1), got {self.cond_drop}")
        if self.weighting not in WEIGHTINGS:
            raise DifflabError(f"unknown loss weighting {self.weighting!r}; choose from {', '.join(WEIGHTINGS)}")
        if self.t_proposal not in T_PROPOSALS:
            raise DifflabError(f"unknown t proposal {self.t_proposal!r}; choose from {', '.join(T_PROPOSALS)}")
        if not self.t_logit_std > 0:
            raise DifflabError(f"the logit-normal t proposal needs a std > 0, got {self.t_logit_std}")


@dataclass
class TrainResult(RunResult):
    final_loss: float = float("nan")
    ema: Denoiser | None = None       # the EMA denoiser, ready to sample from


class Objective(Protocol):
    """A loss that replaces the denoising loss (a distillation method): per-sample losses ``(B,)`` of
    ``denoiser`` on a batch of clean ``x0`` (``cond``: its class labels, null where dropped), all randomness
    drawn from ``generator`` (so a resumed run continues exactly); ``step`` and ``progress`` (the fraction of
    the budget spent) drive curricula.
    ``config()`` is recorded in the run's training information."""

    def __call__(self, denoiser: Denoiser, x0: Tensor, generator: torch.Generator, step: int,
                 progress: float, **cond: Any) -> Tensor: ...

    def config(self) -> dict[str, Any]: ...


def lr_at(cfg: LoopConfig, step: int, progress: float = 0.0) -> float:
    r"""Learning rate of optimisation step ``step`` (0-based): linear warm-up over ``cfg.warmup`` steps,
    times :math:`\tfrac12(1 + \cos\pi p)` for the ``cosine`` schedule, where ``p`` in [0, 1] is the
    fraction of the budget spent (steps done / ``steps``, or wall clock / ``minutes``, whichever is
    further).  The decay to 0 at the end of the budget is the cosine schedule of diffusers' training
    examples (their default), there counted in steps; a minute budget counts wall clock of this
    invocation, so resuming such a run starts a new decay."""
    lr = cfg.lr * min(1.0, (step + 1) / max(1, cfg.warmup))
    if cfg.lr_schedule == "cosine":
        lr *= 0.5 * (1.0 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))
    return lr


def _conditioning_labels(denoiser: Denoiser, data: Dataset) -> torch.Tensor | None:
    """The labels a class-conditional denoiser trains on (None for an unconditional one); sets its class names."""
    if denoiser.num_classes == 0:
        return None
    if data.labels is None:
        raise DifflabError(f"a class-conditional model needs labelled data; {data.name} has no labels")
    if data.num_classes > denoiser.num_classes:
        raise DifflabError(f"{data.name} has {data.num_classes} classes, the model {denoiser.num_classes}")
    denoiser.classes = list(data.classes) if data.classes else [str(k) for k in range(denoiser.num_classes)]
    return data.labels.long()


def train(denoiser: Denoiser, data: Dataset, out: str | os.PathLike, config: TrainConfig | None = None,
          resume: bool = False, objective: Objective | None = None, **overrides: Any) -> TrainResult:
    """Train ``denoiser`` on ``data`` into the run folder ``out``.

    ``overrides`` are :class:`TrainConfig` fields (``train(den, data, "runs/x", steps=2000)``).
    With ``resume=True`` the latest checkpoint in ``out`` is loaded (weights, EMA, optimizer,
    step, random streams) and training continues from its step.  ``objective`` replaces the denoising
    loss (:class:`Objective`).  Sample grids use ``denoiser.sampling`` when it is set (a student's sampler).
    """
    cfg = with_overrides(TrainConfig, config, overrides)
    if objective is None and denoiser.prediction.startswith("consistency_"):
        raise DifflabError(f"a {denoiser.prediction} model has no denoising loss (its target divides by zero at "
                           f"t_min); train it with difflab distill --method consistency or consistency_training")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    shape = data.shape
    if hasattr(denoiser.net, "check_input"):
        denoiser.net.check_input(shape)
    denoiser.data_shape, denoiser.data_kind = shape, data.kind
    labels = _conditioning_labels(denoiser, data)

    device = resolve_device(cfg.device)
    several = distributed.world() > 1
    if several and objective is not None:
        raise DifflabError("distillation objectives train in one process; run them without torchrun")
    share = distributed.shard(cfg.batch_size)      # this rank's rows of the global batch (all rows in one process)
    net = denoiser.net.to(device)
    if cfg.channels_last:
        net.to(memory_format=torch.channels_last)
    opt = adamw(net.parameters(), cfg.lr, cfg.adam_betas, cfg.weight_decay)
    ema = EMA(net, cfg.ema_decay)
    power_emas = [PowerEMA(net, s) for s in cfg.posthoc_ema]   # post-hoc EMA (Karras et al. 2024)
    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(distributed.rank_seed(cfg.seed))
    step, seconds_before = 0, 0.0
    if resume:
        ck = load_checkpoint(out)
        if list(ck.config["data_shape"]) != list(shape):
            raise DifflabError(f"cannot resume: checkpoint data shape {ck.config['data_shape']} != data {list(shape)}")
        check_same_encoder(ck.config, getattr(data, "encoder", None), f"checkpoint {ck.path}")
        step = ck.restore_training(net, ema, opt, gen)
        restore_power_emas(ck.config.get("training", {}), ck.tensors("train_state.safetensors") if power_emas
                           else {}, power_emas, step)
        if power_emas and distributed.is_main():
            drop_snapshots_after(out, step)     # written after the last checkpoint by the interrupted invocation
        seconds_before = float(ck.config.get("training_seconds", 0.0))
        if several and not distributed.is_main():   # rank 0's dropout stream was restored; the others re-derive
            torch.manual_seed(distributed.rank_seed(cfg.seed + step))
        if distributed.is_main():
            print(f"resumed from {ck.path} at step {step}")
    if power_emas and not resume and distributed.is_main():
        check_fresh_run(out)
    if cfg.steps is not None and step >= cfg.steps:
        raise DifflabError(f"run {out} is already at step {step} >= steps={cfg.steps}; raise --steps to continue")

    ema_den = Denoiser(ema.model, denoiser.schedule, denoiser.prediction, denoiser.clip_x0, denoiser.sigma_data)
    ema_den.classes = denoiser.classes
    ema_den.data_shape, ema_den.data_kind = shape, data.kind
    ema_den.sampling = getattr(denoiser, "sampling", None)
    if getattr(data, "encoder", None) is not None:  # latent data: samples are decoded for the grids
        ema_den.encoder = data.encoder
    train_info = {k: v for k, v in asdict(cfg).items() if k not in ("progress", "device")}
    train_info["data"] = {"name": data.name, "n": len(data), **data.info}
    if objective is not None:
        train_info["objective"] = objective.config()
    if distributed.is_main():
        atomic_write_json(out / "run.json", {"training": train_info})
    # the data set on the device once; the CPU generator's indices, times and noise are moved each step
    x_all = data.x.to(device)
    noise_all = None if data.noise is None else data.noise.to(device)
    if labels is not None:
        labels = labels.to(device)
    step_den = denoiser
    if several:   # the loss runs through DDP (gradients averaged over ranks); checkpoints save the bare net
        from torch.nn.parallel import DistributedDataParallel
        ddp = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
        step_den = Denoiser(ddp, denoiser.schedule, denoiser.prediction, denoiser.clip_x0, denoiser.sigma_data)

    def save(step: int) -> Path | None:
        if not bool(torch.isfinite(gnorm)):   # never replace a good checkpoint by non-finite weights; every rank
            warnings.warn(f"checkpoint at step {step} not written: the gradient norm is not finite",  # raises at
                          stacklevel=2)                                                            # its next log
            return None
        return save_checkpoint(out, denoiser, shape, step, ema=ema.model, optimizer=opt,
                               extra_state={**training_state(gen, ema), **power_ema_state(power_emas)},
                               training=train_info, keep=cfg.keep,
                               data_kind=data.kind, encoder=getattr(data, "encoder", None),
                               training_seconds=session.total_seconds)

    def write_samples(tag: str) -> None:
        from ..outputs import preview
        from ..sampling import sample
        n = data.preview_n or cfg.sample_n
        # a conditional model shows its classes in turn (a grid of sample_n has rows of classes 0, 1, ...)
        cond = {"label": torch.arange(n) % denoiser.num_classes} if labels is not None else None
        setting = {"sampler": "ddim", "steps": cfg.sample_steps, **(getattr(denoiser, "sampling", None) or {})}
        res = sample(ema_den, n=n, seed=cfg.seed, progress=False, batch_size=data.sample_batch_size, cond=cond,
                     **setting)
        kind, x = data_space(ema_den)[0], decode_samples(ema_den, res.x)
        preview(kind, x, out / "samples" / f"{tag}.png", data=data.x if kind == data.kind else None, title=tag)
        net.train()

    loss, gnorm = torch.tensor(float("nan")), torch.zeros(())
    net.train()
    with Session(out, cfg, step, save, write_samples, "training", seconds_before, cfg.milestones) as session:
        while session.running(step):
            # the global batch from the one stream; this rank keeps its share
            idx = torch.randint(0, len(x_all), (cfg.batch_size,), generator=gen)
            idx_d = idx[share].to(device, non_blocking=True)
            x0 = to_memory_format(x_all[idx_d], cfg.channels_last)
            cond = {}
            if labels is not None:   # label dropout: the null label teaches the unconditional model (CFG)
                drop = (torch.rand(cfg.batch_size, generator=gen) < cfg.cond_drop)[share].to(device)
                cond["label"] = torch.where(drop, denoiser.num_classes, labels[idx_d])
            if objective is None:
                t = propose_t(denoiser.schedule, cfg.batch_size, gen, cfg.t_proposal, cfg.t_logit_mean,
                              cfg.t_logit_std)[share]
                if noise_all is None:
                    eps = torch.randn((cfg.batch_size, *shape), generator=gen)[share]
                    eps = to_memory_format(eps.to(device, non_blocking=True), cfg.channels_last)
                else:
                    eps = to_memory_format(noise_all[idx_d], cfg.channels_last)
            progress = session.fraction(step)
            lr = lr_at(cfg, step, progress)
            for g in opt.param_groups:
                g["lr"] = lr
            with autocast(device, cfg.bf16):
                if objective is None:
                    loss = denoising_loss(step_den, x0, t, eps, cfg.weighting, cfg.min_snr_gamma, **cond).mean()
                else:
                    loss = objective(denoiser, x0, gen, step, progress, **cond).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            gnorm = torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else math.inf)
            opt.step()
            if session.main:
                ema.update(net)
                for pe in power_emas:
                    pe.update(net)
                    if (step + 1) % cfg.posthoc_every == 0 and bool(torch.isfinite(gnorm)):  # as checkpoints
                        save_snapshot(out, pe)
            step += 1
            # read back from the device only at log steps: a non-finite loss makes every later one non-finite.  The
            # gradient norm comes from the all-reduced gradients, so every rank sees the same value and stops together
            if step % cfg.log_every == 0 and not (torch.isfinite(gnorm) and torch.isfinite(loss)):
                raise RuntimeError(f"loss became {loss.item()} (gradient norm {float(gnorm)}) by step {step}; "
                                   f"lower the learning rate")
            session.after_step(step, {"loss": loss.detach()}, extra={"lr": lr, "grad_norm": gnorm})
    if session.main and step % cfg.posthoc_every and bool(torch.isfinite(gnorm)):   # where the run stopped, too
        for pe in power_emas:
            save_snapshot(out, pe)
    return TrainResult(step, session.seconds, session.it_per_s, session.interrupted, session.checkpoint,
                       session.history, final_loss=float(loss.detach()), ema=ema_den.eval())
