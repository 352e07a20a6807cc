"""``difflab train-gan``: train the GAN baseline (:func:`difflab.baselines.train_gan`)."""
from __future__ import annotations

import argparse
import json

from ..errors import DifflabError
from .common import add_loop_args, add_run_args, load_data, milestones_arg
from .train import _betas

NAME = "train-gan"
HELP = "train a GAN baseline (DCGAN-style, non-saturating + R1 or hinge loss) on the same data"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_run_args(p, "run folder (checkpoints, logs, sample grids)", "total steps (one D and one G update each)")
    p.add_argument("--loss", default="nonsaturating", help="nonsaturating (default) or hinge")
    p.add_argument("--r1-gamma", type=float, default=1.0, help="R1 penalty weight gamma on real data; 0: off")
    p.add_argument("--r1-every", type=int, default=4, help="lazy R1: apply every k steps (weight scaled by k)")
    p.add_argument("--latent-dim", type=int, default=64)
    p.add_argument("--width", type=int, default=16, help="channels at full resolution (doubled per stage)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-4, help="generator learning rate")
    p.add_argument("--lr-d", type=float, help="discriminator learning rate (default: --lr)")
    p.add_argument("--adam-betas", metavar="B1,B2", help="AdamW betas (default 0.5,0.99)")
    p.add_argument("--ema-decay", type=float, default=0.999)
    p.add_argument("--keep", type=int, default=3, help="newest checkpoints kept")
    add_loop_args(p, sample_every=1000)


def run(args: argparse.Namespace) -> int:
    from ..baselines import GANConfig, train_gan
    if not args.resume and args.minutes is None and args.steps is None:
        raise DifflabError("give a training budget: --steps N or --minutes M")
    data = load_data(args)
    print(f"data: {data.describe()}")
    cfg = GANConfig(steps=args.steps, minutes=args.minutes, batch_size=args.batch_size, lr=args.lr, lr_d=args.lr_d,
                    adam_betas=_betas(args.adam_betas) if args.adam_betas else GANConfig.adam_betas, loss=args.loss,
                    r1_gamma=args.r1_gamma, r1_every=args.r1_every, ema_decay=args.ema_decay,
                    latent_dim=args.latent_dim, width=args.width, seed=args.seed, sample_every=args.sample_every,
                    ckpt_every_minutes=args.ckpt_every_minutes, keep=args.keep,
                    milestones=milestones_arg(args.milestones),
                    progress=not args.no_progress)
    res = train_gan(data, args.out, cfg, resume=args.resume)
    params = sum(p.numel() for p in res.generator.net.parameters())
    print(json.dumps({"step": res.step, "seconds": round(res.seconds, 1), "it_per_s": round(res.it_per_s, 3),
                      "generator_parameters": params, "checkpoint": str(res.checkpoint)}))
    return 130 if res.interrupted else 0
