"""``difflab superres``: enlarge images by f with the model, against bicubic (:func:`difflab.guidance.super_resolve`)."""
from __future__ import annotations

import argparse

from .editing import add_editing_args, prepare, write_results

NAME = "superres"
HELP = "super-resolution without retraining (ILVR low-pass consistency), compared with bicubic upsampling"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_editing_args(p, sampler="ddpm", steps=250)
    p.add_argument("--factor", type=int, default=2, help="enlargement factor (the input is the model's size / f)")
    p.add_argument("--downsample", action="store_true",
                   help="the inputs are full-size images: average them down by the factor first (to compare with them)")


def run(args: argparse.Namespace) -> int:
    from ..guidance import bicubic_upsample, downsampling_operator, super_resolve
    _, den, images, cond, opts = prepare(args, resize=args.downsample)
    op = downsampling_operator(args.factor)
    low = op.A(images) if args.downsample else images
    res = super_resolve(den, low, args.factor, sampler=args.sampler, steps=args.steps, seed=args.seed,
                        progress=not args.no_progress, cond=cond, **opts)
    columns = {"input (low resolution)": op.pinv(low), "bicubic": bicubic_upsample(low, args.factor),
               "diffusion": res.x.clamp(-1, 1)}
    if args.downsample:
        columns["original"] = images
    fig = write_results(args, "superres", res.x, columns,
                        f"{args.factor}x super-resolution: {args.sampler} {args.steps} steps, {res.nfe} NFE")
    print(f"{len(low)} images enlarged {args.factor}x ({res.nfe} NFE each): {fig}")
    return 0

