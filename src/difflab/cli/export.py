"""``difflab export``: write a checkpoint in another format (:func:`difflab.interop.export_diffusers`)."""
from __future__ import annotations

import argparse

NAME = "export"
HELP = "write a checkpoint in another format"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="run folder or checkpoint")
    p.add_argument("--diffusers", required=True, metavar="DIR", help="write a DDPMPipeline folder here")
    p.add_argument("--weights", choices=["ema", "model"], default="ema")


def run(args: argparse.Namespace) -> int:
    from ..interop import export_diffusers
    from ..train import load_checkpoint
    out = export_diffusers(load_checkpoint(args.checkpoint).denoiser(args.weights), args.diffusers)
    print(f"diffusers DDPMPipeline written to {out} (load with DDPMPipeline.from_pretrained({str(out)!r}))")
    return 0
