"""``difflab train``: train a diffusion model (:func:`difflab.train.train`)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import DifflabError
from .common import (add_device_arg, add_loop_args, add_run_args, floats, ints, load_data, milestones_arg,
                     setup_device)

NAME = "train"
HELP = "train a diffusion model"
AUTOGUIDED = "--guidance 3 --guidance-interval 0.28,5.42 --sampler dpmpp_2m_sde --steps 25"
"""How an unconditional image run is sampled with its 30 % checkpoint as the weak model (the MNIST recipe of
BENCHMARKS.md, "Sample fidelity per CPU-minute"): autoguidance w = 3 (Karras et al. 2024) on the noise levels
sigma/alpha in (0.28, 5.42] only (Kynkaanniemi et al. 2024), SDE-DPM-Solver++(2M), 25 steps (43 network
evaluations per sample with the cosine T = 1000 table)."""


def _betas(text: str) -> tuple[float, float]:
    """``--adam-betas 0.9,0.99`` -> (0.9, 0.99); TrainConfig checks the range."""
    try:
        b1, b2 = (float(v) for v in text.split(","))
    except ValueError:
        raise DifflabError(f"--adam-betas: expected two numbers B1,B2, got {text!r}") from None
    return b1, b2


def _batch_size(args: argparse.Namespace, default: int) -> int:
    """``--batch-size``, else on ``--resume`` the batch the run was trained with (its ``run.json``), else the
    default."""
    if args.batch_size is not None:
        return args.batch_size
    record = Path(args.out, "run.json")
    if args.resume and record.is_file():
        from ..io import read_json
        b = read_json(record, "run record").get("training", {}).get("batch_size")
        if isinstance(b, int):
            return b
    return default


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_run_args(p, "run folder (checkpoints, logs, sample grids)", audio=True)
    p.add_argument("--representation", choices=["mel", "wave"], default="mel",
                   help="fsdd: diffuse log-mel spectrograms (decoded by Griffin-Lim) or waveforms")
    p.add_argument("--schedule", default="cosine",
                   help="cosine, linear, sigmoid, scaled_linear, edm, ve, flow (the linear interpolant)")
    p.add_argument("--timesteps", type=int, default=1000,
                   help="T of the discrete table (variance-preserving schedules); 0: continuous time")
    p.add_argument("--zero-terminal-snr", action="store_true", help="rescale to zero terminal SNR (use v)")
    p.add_argument("--prediction", default="v", help="v, eps, x0, score, edm or velocity (eps - x0, flow matching)")
    p.add_argument("--conditional", action="store_true",
                   help="class-conditional on the data's labels (MNIST digits, digits, class subfolders)")
    p.add_argument("--cond-drop", type=float, default=0.1,
                   help="fraction of labels replaced by the null label during training (for guidance)")
    p.add_argument("--weighting", help="min_snr (gamma 5), uniform, snr, edm or flow (the flow-matching loss); "
                                       "default: flow with --schedule flow, else min_snr")
    p.add_argument("--t-proposal", default="uniform",
                   help="training times: uniform, or logit_normal (Esser et al. 2024; --t-logit-mean/-std)")
    p.add_argument("--t-logit-mean", type=float, default=0.0)
    p.add_argument("--t-logit-std", type=float, default=1.0)
    p.add_argument("--clip-x0", type=float,
                   help="clamp x0_hat to [-c, c] when sampling; 0: off (default: 1 for images, off for latents)")
    p.add_argument("--latent", metavar="AE_RUN",
                   help="train in the latent space of this autoencoder (a difflab train-autoencoder run); the "
                        "data's encodings are cached, samples are decoded")
    p.add_argument("--network", help="network type instead of the data's default: unet, or unet_mp (EDM2's "
                                     "magnitude-preserving UNet; give it a larger --lr: 0.05 on MNIST)")
    p.add_argument("--channels", help="UNet widths per level, e.g. 32,64,64")
    p.add_argument("--layers-per-block", type=int)
    p.add_argument("--attention-levels", help="levels with self-attention, e.g. 2")
    p.add_argument("--dropout", type=float)
    p.add_argument("--batch-size", type=int,
                   help="default 64, or with --resume the run's own")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--adam-betas", metavar="B1,B2", help="AdamW betas (default 0.9,0.999)")
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--lr-schedule", default="constant",
                   help="after warm-up: constant, or cosine (decay to 0 over the steps/minutes budget)")
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--ema-decay", type=float, default=0.999)
    p.add_argument("--posthoc-ema", metavar="S,S", help="also keep power-function EMAs of these relative lengths "
                   "(e.g. 0.05,0.1), saved every --posthoc-every steps, for difflab posthoc-ema after training")
    p.add_argument("--posthoc-every", type=int, default=100, help="steps between post-hoc EMA snapshots")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast for the network")
    p.add_argument("--channels-last", action="store_true",
                   help="image batches and convolutions in channels-last (NHWC) layout (faster on GPUs)")
    add_device_arg(p)
    p.add_argument("--log-every", type=int, default=25, help="steps per log.jsonl record (averaged over them)")
    add_loop_args(p, sample_every=1000, milestones="0.3: the weak model of autoguidance (none: no milestones)")


def run(args: argparse.Namespace) -> int:
    from ..denoisers import create_denoiser
    from ..train import TrainConfig, load_checkpoint, train

    device = setup_device(args)   # under torchrun: --batch-size is the global batch, split over the processes
    data = load_data(args)
    print(f"data: {data.name}, {len(data)} {data.kind} of shape {data.shape}")
    encoder = load_checkpoint(args.out).encoder() if args.resume else None
    if args.latent:
        from ..train.autoencoder import load_autoencoder
        encoder = load_autoencoder(args.latent)  # a resume checks it is the one the run was trained with
    if data.kind == "audio":
        if encoder is not None or (args.representation == "mel" and not args.resume):
            from ..encoders.mel import mel_dataset
            data = mel_dataset(data, encoder=encoder)  # a resumed run: its own encoder
            print(f"log-mel spectrograms: {len(data)} of shape {data.shape}")
    elif encoder is not None:
        from ..data import encode_dataset
        data = encode_dataset(data, encoder, progress=not args.no_progress)
        print(f"latent space: {len(data)} latents of shape {data.shape} (scale {encoder.scale:.4g})")
    if args.resume:
        den = load_checkpoint(args.out).denoiser("model").train()
    else:
        if args.minutes is None and args.steps is None:
            raise DifflabError("give a training budget: --steps N or --minutes M")
        network = {k: v for k, v in (("type", args.network), ("channels", args.channels and ints(args.channels)),
                                     ("layers_per_block", args.layers_per_block),
                                     ("attention_levels", None if args.attention_levels is None
                                      else ints(args.attention_levels)),
                                     ("dropout", args.dropout)) if v is not None}
        if args.conditional:
            if data.labels is None:
                raise DifflabError(f"--conditional needs labelled data; {data.name} has no labels")
            network["num_classes"] = data.num_classes
        schedule = {"name": args.schedule, "zero_terminal_snr": args.zero_terminal_snr}
        clip = data.clip_x0 if args.clip_x0 is None else (None if args.clip_x0 <= 0 else args.clip_x0)
        den = create_denoiser(data.shape, network, schedule, args.timesteps or None, args.prediction, clip_x0=clip,
                              seed=args.seed)
    n_params = sum(p.numel() for p in den.net.parameters())
    widths = den.net.config.get("channels", den.net.config.get("hidden"))
    print(f"model: {type(den.net).__name__} {widths}, {n_params / 1e6:.2f}M parameters; "
          f"schedule {den.schedule!r}; prediction {den.prediction}"
          + (f"; conditional on {den.num_classes} classes" if den.num_classes else ""))
    cfg = TrainConfig(steps=args.steps, minutes=args.minutes, batch_size=_batch_size(args, TrainConfig.batch_size),
                      lr=args.lr,
                      weight_decay=args.weight_decay,
                      adam_betas=_betas(args.adam_betas) if args.adam_betas else TrainConfig.adam_betas,
                      warmup=args.warmup, lr_schedule=args.lr_schedule,
                      grad_clip=args.grad_clip, ema_decay=args.ema_decay, bf16=args.bf16,
                      posthoc_ema=tuple(floats(args.posthoc_ema)) if args.posthoc_ema else (),
                      posthoc_every=args.posthoc_every,
                      device=str(device), channels_last=args.channels_last,
                      weighting=args.weighting or ("flow" if den.schedule.name == "flow" else "min_snr"),
                      t_proposal=args.t_proposal, t_logit_mean=args.t_logit_mean, t_logit_std=args.t_logit_std,
                      cond_drop=args.cond_drop,
                      seed=args.seed, sample_every=args.sample_every, ckpt_every_minutes=args.ckpt_every_minutes,
                      log_every=args.log_every,
                      milestones=milestones_arg(args.milestones, TrainConfig.milestones),
                      progress=not args.no_progress)
    res = train(den, data, args.out, cfg, resume=args.resume)
    print(json.dumps({"step": res.step, "seconds": round(res.seconds, 1), "it_per_s": round(res.it_per_s, 3),
                      "final_loss": round(res.final_loss, 5), "checkpoint": str(res.checkpoint)}))
    weak = sorted(Path(args.out, "milestones").glob("step_*"))
    if (weak and cfg.milestones and min(cfg.milestones) < 1 and not args.resume and not res.interrupted
            and not den.num_classes and data.kind == "images"):   # an unconditional image model, one run
        print(f"autoguided samples (the MNIST recipe of BENCHMARKS.md): difflab sample {args.out} --autoguide "
              f"{weak[0]} {AUTOGUIDED}")
    return 130 if res.interrupted else 0
