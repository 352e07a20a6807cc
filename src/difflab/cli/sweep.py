"""``difflab sweep``: train and evaluate a grid of variants (:mod:`difflab.experiments`)."""
from __future__ import annotations

import argparse

from ..errors import DifflabError
from .common import add_device_arg, add_progress_arg, setup_device

NAME = "sweep"
HELP = "train and evaluate a grid of schedules / parameterisations / weightings"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="sweep config (.yaml or .toml), e.g. sweeps/schedules-toy2d.yaml")
    p.add_argument("--out", help="output folder (default sweeps_out/NAME); rerun to continue a killed sweep")
    p.add_argument("--report-only", action="store_true", help="only rewrite the report of finished variants")
    add_device_arg(p)
    add_progress_arg(p)


def run(args: argparse.Namespace) -> int:
    from ..experiments import run_sweep, write_report
    if args.report_only:
        if not args.out:
            raise DifflabError("--report-only needs --out (the sweep folder)")
        rep = write_report(args.out)
    else:
        device = setup_device(args)   # under torchrun the variants are spread over the ranks
        rep = run_sweep(args.config, args.out, progress=not args.no_progress, device=str(device)) / "report"
    print(f"report: {rep / 'report.md'} and {rep / 'report.html'}")
    return 0
