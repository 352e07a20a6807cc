"""``difflab schedules``: plot the signal fraction and log-SNR of schedules."""
from __future__ import annotations

import argparse

from ..demo import DEMO_SCHEDULES
from .common import schedules_by_name

NAME = "schedules"
HELP = "plot alpha_bar(t) and log-SNR(t) of schedules"
DEFAULT_SCHEDULES = ",".join(DEMO_SCHEDULES)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--schedules", default=DEFAULT_SCHEDULES + ",edm")
    p.add_argument("--timesteps", type=int, default=0, help="T of the tables; 0: continuous")
    p.add_argument("--out", default="schedules.png")


def run(args: argparse.Namespace) -> int:
    from ..viz import plot_schedules
    print(f"schedule plot: {plot_schedules(schedules_by_name(args.schedules, args.timesteps), args.out)}")
    return 0
