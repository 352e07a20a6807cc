"""``difflab train-classifier``: the small CNN whose features and class probabilities ``difflab eval`` uses."""
from __future__ import annotations

import argparse

from ..errors import DifflabError
from .common import add_data_args, add_progress_arg, load_data

NAME = "train-classifier"
HELP = "train the small CNN used as feature extractor for evaluation"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_data_args(p, audio=True)
    p.add_argument("--out", required=True, help="folder for classifier.json + classifier.safetensors")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--noisy", action="store_true",
                   help="noise-aware classifier p(y | x_t) for classifier guidance, on the schedule below (it must be "
                        "the diffusion model's)")
    p.add_argument("--schedule", default="cosine", help="with --noisy: the diffusion model's schedule")
    p.add_argument("--timesteps", type=int, default=1000, help="with --noisy: T of its table (0: continuous)")
    add_progress_arg(p)


def run(args: argparse.Namespace) -> int:
    from ..metrics import save_classifier, train_classifier
    from ..metrics.audio import train_audio_classifier
    data = load_data(args)
    if data.labels is None:
        raise DifflabError(f"data set {data.name} has no labels; a classifier needs them")
    if data.kind == "audio":
        if args.noisy:
            raise DifflabError("a noise-aware classifier (--noisy) is for images; audio classifiers score samples")
        net = train_audio_classifier(data.x, data.labels, steps=args.steps, batch_size=args.batch_size,
                                     seed=args.seed, progress=not args.no_progress)
    else:
        schedule = None
        if args.noisy:
            from ..process import schedule_from_spec
            schedule = schedule_from_spec(args.schedule, args.timesteps or None)
        net = train_classifier(data.x, data.labels, steps=args.steps, batch_size=args.batch_size, seed=args.seed,
                               progress=not args.no_progress, schedule=schedule)
    out = save_classifier(net, args.out, {"data": data.name, **data.info, "steps": args.steps, "noisy": args.noisy})
    print(f"classifier saved to {out}")
    return 0
