"""``difflab train-autoencoder``: the KL autoencoder of latent diffusion (:mod:`difflab.train.autoencoder`),
then its reconstruction report on held-out images."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import DifflabError
from .common import add_loop_args, add_run_args, ints, milestones_arg

NAME = "train-autoencoder"
HELP = "train a KL autoencoder (the latent space of difflab train --latent)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_run_args(p, "run folder (checkpoints, log, reconstruction grids, report.json)")
    p.add_argument("--factor", type=int, default=4, help="downsampling factor f: 2 or 4")
    p.add_argument("--channels", help="widths per level (log2 f + 1 of them), e.g. 32,64,64")
    p.add_argument("--latent-channels", type=int, help="channels of the latent (default: 1 at f=2, 4 at f=4)")
    p.add_argument("--layers-per-block", type=int)
    p.add_argument("--loss", default="l1", help="reconstruction loss: l1 or l2")
    p.add_argument("--kl-weight", type=float, default=1e-4, help="weight of the KL term (per pixel)")
    p.add_argument("--kl-warmup", type=int, default=500, help="steps of linear KL warm-up from 0")
    p.add_argument("--feature-loss", metavar="CLF", help="add a feature loss on this difflab train-classifier's features")
    p.add_argument("--feature-weight", type=float, default=0.1, help="weight of the feature loss")
    p.add_argument("--classifier", metavar="CLF",
                   help="classifier for the report (accuracy and FD of reconstructions; default: --feature-loss's)")
    p.add_argument("--heldout-range", help="held-out images for the report (default for mnist: 8000:10000)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--lr-schedule", default="constant", help="constant, or cosine (decay to 0 over the budget)")
    p.add_argument("--grad-clip", type=float, default=1.0)
    add_loop_args(p, sample_every=500, sample_help="reconstruction grids")


def run(args: argparse.Namespace) -> int:
    import torch

    from ..io import atomic_write_json
    from ..metrics import load_classifier
    from ..metrics.reconstruction import reconstruction_report
    from ..nn.autoencoder import KLAutoencoder, default_autoencoder
    from ..train.autoencoder import AutoencoderTrainConfig, autoencoder_checkpoint, train_autoencoder
    from .common import load_data

    data = load_data(args)
    print(f"data: {data.name}, {len(data)} {data.kind} of shape {data.shape}")
    heldout_range = args.heldout_range or ("8000:10000" if args.data == "mnist" else None)
    heldout = load_data(args, heldout_range) if heldout_range else None
    if args.resume:
        net = KLAutoencoder(**autoencoder_checkpoint(args.out).config["autoencoder"])
    else:
        if args.minutes is None and args.steps is None:
            raise DifflabError("give a training budget: --steps N or --minutes M")
        torch.manual_seed(args.seed)
        net = KLAutoencoder(**default_autoencoder(
            data.shape, args.factor, channels=args.channels and ints(args.channels),
            latent_channels=args.latent_channels, layers_per_block=args.layers_per_block))
    print(f"autoencoder: widths {net.config['channels']}, f = {net.factor}, latent {net.latent_shape}, "
          f"{sum(p.numel() for p in net.parameters()) / 1e6:.2f}M parameters")
    feature_net = load_classifier(args.feature_loss).requires_grad_(False) if args.feature_loss else None
    cfg = AutoencoderTrainConfig(steps=args.steps, minutes=args.minutes, batch_size=args.batch_size, lr=args.lr,
                                 warmup=args.warmup, lr_schedule=args.lr_schedule, grad_clip=args.grad_clip,
                                 loss=args.loss, kl_weight=args.kl_weight, kl_warmup=args.kl_warmup,
                                 feature_weight=args.feature_weight if feature_net is not None else 0.0,
                                 seed=args.seed, sample_every=args.sample_every,
                                 ckpt_every_minutes=args.ckpt_every_minutes, progress=not args.no_progress,
                                 milestones=milestones_arg(args.milestones))
    res = train_autoencoder(net, data, args.out, cfg, resume=args.resume,
                            features=None if feature_net is None else feature_net.features,
                            feature_info={"classifier": args.feature_loss} if args.feature_loss else None,
                            preview=None if heldout is None else heldout.x)
    print(json.dumps({"step": res.step, "seconds": round(res.seconds, 1), "it_per_s": round(res.it_per_s, 3),
                      "final_loss": round(res.final_loss, 5), "scale": res.encoder.scale,
                      "checkpoint": str(res.checkpoint)}))
    if heldout is not None and not res.interrupted:
        clf_path = args.classifier or args.feature_loss
        clf = load_classifier(clf_path) if clf_path else None
        report = reconstruction_report(res.encoder.net, heldout.x, heldout.labels, clf, train=data.x)
        report.update(heldout=heldout_range, checkpoint=str(res.checkpoint), classifier=clf_path)
        atomic_write_json(Path(args.out) / "report.json", report)
        line = f"held-out {heldout_range}: reconstruction PSNR {report['psnr']:.2f} dB"
        if "accuracy" in report:
            line += (f", classifier accuracy {report['accuracy']:.4f} on reconstructions "
                     f"({report['accuracy_original']:.4f} on the originals)")
        if "fd_reconstructions" in report:
            line += f", FD of reconstructions {report['fd_reconstructions']:.3f} (real vs real {report['fd_floor']:.3f})"
        print(line)
    print(f"latent diffusion: difflab train --latent {args.out} --data {args.data} ...")
    return 130 if res.interrupted else 0
