"""``difflab inpaint``: fill the erased part of images (:func:`difflab.guidance.inpaint`)."""
from __future__ import annotations

import argparse
from pathlib import Path

from .editing import add_editing_args, prepare, write_results

NAME = "inpaint"
HELP = "fill in the erased part of images: replacement, or RePaint resampling (--resample)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_editing_args(p, sampler="ddpm", steps=250)
    p.add_argument("--mask", default="left",
                   help="a mask image of the images' size (white = known, black = to fill) or a built-in mask: "
                        "left (left half erased), centre (centre box erased), random (half the pixels erased)")
    p.add_argument("--resample", type=int, default=1, help="RePaint: passes per step (1: plain replacement)")
    p.add_argument("--posterior", choices=["projection", "tweedie"], default="projection",
                   help="projection: replace the known pixels of each estimate (fast, biased); tweedie: condition the "
                        "estimate on them through its posterior covariance (exact for Gaussian data; costs about "
                        "--cg-iters more evaluations a step)")
    p.add_argument("--cg-iters", type=int, default=10, help="tweedie: conjugate-gradient iterations per step")


def run(args: argparse.Namespace) -> int:
    from ..guidance import inpaint, make_mask
    base, den, images, cond, opts = prepare(args)
    if Path(args.mask).is_file():
        from ..data import load_image_files
        mask = (load_image_files([Path(args.mask)], channels=base.data_shape[0]).x[0] > 0).float()
    else:
        mask = make_mask(args.mask, tuple(base.data_shape), seed=args.seed)
    res = inpaint(den, images, mask, sampler=args.sampler, steps=args.steps, seed=args.seed, resample=args.resample,
                  posterior=args.posterior, cg_iters=args.cg_iters, progress=not args.no_progress, cond=cond, **opts)
    known = images * mask - (1 - mask)           # the erased part shown black
    fig = write_results(args, "inpaint", res.x, {"input": images, "mask (white: known)": (2 * mask - 1).expand_as(images),
                                                  "what the model keeps": known, "result": res.x.clamp(-1, 1)},
                        f"inpainting ({args.posterior}): {args.sampler}, {args.steps} steps, resample {args.resample}, "
                        f"{res.nfe} NFE")
    print(f"inpainted {len(images)} images ({res.nfe} NFE each): {fig}")
    return 0
