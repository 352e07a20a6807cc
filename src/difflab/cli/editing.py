"""What the editing commands (inpaint, img2img, superres) share: their inputs, options and outputs."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import DifflabError
from .common import add_data_args, add_progress_arg, ints, load_data, parse_opts
from .sample import add_guidance_args, guidance_from_args, load_denoiser

__all__ = ["add_editing_args", "prepare", "write_results"]


def add_editing_args(p: argparse.ArgumentParser, sampler: str, steps: int) -> None:
    p.add_argument("checkpoint", nargs="?", help="run folder (latest checkpoint) or checkpoint folder/file")
    p.add_argument("--pretrained", help="a diffusers pipeline folder, or a repo id in the local Hugging Face cache")
    p.add_argument("--image", action="append", metavar="PNG", help="input image file (repeatable)")
    add_data_args(p, required=False)
    p.set_defaults(data=None)
    p.add_argument("--indices", help="with --data: comma-separated indices of the input images within --index-range")
    p.add_argument("--sampler", default=sampler)
    p.add_argument("--steps", type=int, default=steps)
    p.add_argument("--opt", action="append", metavar="NAME=VALUE", help="sampler option, repeatable")
    add_guidance_args(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--weights", choices=["ema", "model"], default="ema")
    p.add_argument("--out", default="edits", help="output folder (figure, .npz of the results)")
    add_progress_arg(p)


def _input_images(args: argparse.Namespace, size: int | None):
    if args.image:
        from ..data import load_image_files
        return load_image_files([Path(p) for p in args.image], size=size).x
    if args.data:
        data = load_data(args)
        idx = ints(args.indices) if args.indices else list(range(min(8, len(data))))
        if any(not 0 <= i < len(data) for i in idx):
            raise DifflabError(f"--indices must lie in 0..{len(data) - 1}")
        return data.x[idx]
    raise DifflabError("give the input images: --image FILE (repeatable) or --data ... --indices I,J")


def prepare(args: argparse.Namespace, resize: bool = True):
    """(base denoiser, guided denoiser, input images, conditioning for them, sampler options); image files are
    resized to the model's size unless ``resize`` is False."""
    base = load_denoiser(args)
    images = _input_images(args, base.data_shape[-1] if resize else None)
    if args.class_ == "all":
        raise DifflabError("--class all does not apply to editing; give one class")
    den, cond, _ = guidance_from_args(base, args, len(images))
    return base, den, images, cond, parse_opts(args.opt)


def write_results(args: argparse.Namespace, tag: str, result, columns: dict, title: str) -> Path:
    """``OUT/<tag>.png`` (the columns side by side, one row per image) and ``OUT/<tag>.npz`` (uint8 results)."""
    import numpy as np

    from ..data import to_uint8
    from ..viz import panels_figure
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out / f"{tag}.npz", samples=to_uint8(result))
    return panels_figure(columns, out / f"{tag}.png", title=title)
