"""``difflab img2img``: SDEdit, noise an image part of the way and denoise it (:func:`difflab.guidance.img2img`)."""
from __future__ import annotations

import argparse

from .editing import add_editing_args, prepare, write_results

NAME = "img2img"
HELP = "image-to-image (SDEdit): noise the input to --strength, then denoise it into the model's data"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_editing_args(p, sampler="ddim", steps=50)
    p.add_argument("--strength", type=float, default=0.5,
                   help="t in (0, 1] to noise the input to: small keeps the input, 1 ignores it")


def run(args: argparse.Namespace) -> int:
    from ..guidance import img2img
    _, den, images, cond, opts = prepare(args)
    res = img2img(den, images, args.strength, sampler=args.sampler, steps=args.steps, seed=args.seed,
                  progress=not args.no_progress, cond=cond, **opts)
    fig = write_results(args, "img2img", res.x, {"input": images, "result": res.x.clamp(-1, 1)},
                        f"SDEdit: strength {args.strength}, {args.sampler} {args.steps} steps, {res.nfe} NFE")
    print(f"{len(images)} images edited ({res.nfe} NFE each): {fig}")
    return 0
