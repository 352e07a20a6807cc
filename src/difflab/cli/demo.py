"""``difflab demo``: the whole path on scikit-learn digits in a few minutes (:func:`difflab.demo.run_demo`)."""
from __future__ import annotations

import argparse

from .common import add_progress_arg

NAME = "demo"
HELP = "the whole path on scikit-learn digits in a few minutes"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="demo_out")
    p.add_argument("--minutes", type=float, default=2.0)
    p.add_argument("--seed", type=int, default=0)
    add_progress_arg(p)


def run(args: argparse.Namespace) -> int:
    from ..demo import run_demo
    run_demo(args.out, args.minutes, args.seed, progress=not args.no_progress)
    return 0
