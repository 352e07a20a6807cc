"""The ``difflab`` command: one module per command, each a thin layer over the Python API.

Every command module has ``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``; a new
command is one module added to ``COMMANDS``.  User errors print one line ``difflab: error: ...`` and
exit with status 2; Ctrl-C during training saves a resumable checkpoint and exits with status 130.
The library never imports this package.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from ..devices import keep_freed_cpu_memory
from ..errors import DifflabError
from . import (compare, demo, distill, eval, explore, export, forward, img2img, inpaint, latent_figures, likelihood,
               posthoc_ema, sample, samplers, schedules, superres, sweep, train, train_autoencoder, train_classifier,
               train_gan)

COMMANDS = [train, sample, inpaint, img2img, superres, eval, likelihood, sweep, train_classifier, train_autoencoder,
            latent_figures, train_gan, compare, explore, export, forward, schedules, samplers, demo, distill, posthoc_ema]

__all__ = ["main", "build_parser", "COMMANDS"]


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="difflab", description="Diffusion models: train, sample, see, measure.")
    sub = ap.add_subparsers(dest="command", required=True)
    for cmd in COMMANDS:
        p = sub.add_parser(cmd.NAME, help=cmd.HELP, description=cmd.HELP)
        cmd.add_arguments(p)
        p.set_defaults(fn=cmd.run)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    keep_freed_cpu_memory()
    try:
        return int(args.fn(args) or 0)
    except DifflabError as e:
        print(f"difflab: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("difflab: interrupted", file=sys.stderr)
        return 130
