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
    add_progress_arg(p)


def run(args: argparse.Namespace) -> int:
    from ..metrics import save_classifier, train_classifier
    from ..metrics.audio import train_audio_classifier
    data = load_data(args)
    if data.labels is None:
        raise DifflabError(f"data set {data.name} has no labels; a classifier needs them")
    fit = train_audio_classifier if data.kind == "audio" else train_classifier
    net = fit(data.x, data.labels, steps=args.steps, batch_size=args.batch_size, seed=args.seed,
              progress=not args.no_progress)
    out = save_classifier(net, args.out, {"data": data.name, **data.info, "steps": args.steps})
    print(f"classifier saved to {out}")
    return 0
