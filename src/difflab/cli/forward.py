"""``difflab forward``: the forward process x_t of chosen images under several schedules (a figure)."""
from __future__ import annotations

import argparse
from pathlib import Path

from .common import add_data_args, floats, load_data, schedules_by_name

NAME = "forward"
HELP = "draw x_t at chosen t under one or several schedules"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_data_args(p, required=False)
    p.add_argument("--image", help="an image file instead of a data set")
    p.add_argument("--n", type=int, default=2, help="images taken from the data set")
    p.add_argument("--schedules", default="linear,cosine")
    p.add_argument("--timesteps", type=int, default=1000, help="T of the tables; 0: continuous")
    p.add_argument("--ts", default="0,0.1,0.2,0.3,0.5,0.7,0.9,1", help="times to show")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="forward.png")


def run(args: argparse.Namespace) -> int:
    import torch

    from ..viz import forward_figure

    if args.image:
        from ..data import load_image_files
        x0 = load_image_files([Path(args.image)], size=args.image_size).x
    else:
        data = load_data(args)
        g = torch.Generator().manual_seed(args.seed)
        x0 = data.x[torch.randperm(len(data), generator=g)[: args.n]]
    p = forward_figure(x0, schedules_by_name(args.schedules, args.timesteps), floats(args.ts), args.out, seed=args.seed)
    print(f"forward process: {p}")
    return 0
