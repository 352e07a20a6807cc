"""``difflab explore``: a local web page to see diffusion at work (:mod:`difflab.explore`)."""
from __future__ import annotations

import argparse

NAME = "explore"
HELP = "open a local web page: forward and reverse process, samplers, score field"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", nargs="?", help="a checkpoint of images or 2-D points (run folder, checkpoint folder or "
                                          "weights file); default: the built-in digits model, trained on first use")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only; "
                                                      "another address warns: the page has no login)")
    p.add_argument("--port", type=int, default=8765, help="port (0: any free one)")
    p.add_argument("--no-browser", action="store_true", help="do not open a browser window")


def run(args: argparse.Namespace) -> int:
    from ..explore import serve
    serve(args.run, host=args.host, port=args.port, open_browser=not args.no_browser)
    return 0
