"""Argument helpers shared by the commands: parsing lists, data options, sampler options."""
from __future__ import annotations

import argparse

from ..errors import DifflabError

__all__ = ["ints", "floats", "milestones_arg", "parse_opts", "add_data_args", "add_run_args", "add_loop_args",
           "load_data", "schedules_by_name", "add_progress_arg", "add_device_arg", "setup_device"]


def ints(s: str) -> list[int]:
    """``"1,2,3"`` -> ``[1, 2, 3]``."""
    try:
        return [int(v) for v in s.split(",") if v.strip()]
    except ValueError:
        raise DifflabError(f"expected comma-separated integers, got {s!r}") from None


def floats(s: str) -> list[float]:
    try:
        return [float(v) for v in s.split(",") if v.strip()]
    except ValueError:
        raise DifflabError(f"expected comma-separated numbers, got {s!r}") from None


def milestones_arg(text: str | None, default: tuple[float, ...] = ()) -> tuple[float, ...]:
    """``--milestones``: ``"0.25,0.5"`` -> (0.25, 0.5); ``"none"`` -> (); not given -> the trainer's default."""
    if text is None:
        return tuple(default)
    return () if text.strip().lower() == "none" else tuple(floats(text))


def parse_opts(items: list[str] | None) -> dict:
    """``["s_churn=40", "order=3"]`` -> sampler options (numbers and booleans converted)."""
    opts: dict = {}
    for item in items or []:
        if "=" not in item:
            raise DifflabError(f"sampler option must look like NAME=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        if v.lower() in ("true", "false"):
            opts[k] = v.lower() == "true"
            continue
        try:
            opts[k] = int(v)
        except ValueError:
            try:
                opts[k] = float(v)
            except ValueError:
                opts[k] = v
    return opts


def add_data_args(p: argparse.ArgumentParser, required: bool = True, audio: bool = False) -> None:
    """The data options; ``audio``: the command also takes FSDD (``--data fsdd`` and its speaker options)."""
    p.add_argument("--data", choices=["mnist", "folder", "digits", "stacked_mnist"] + ["fsdd"] * audio,
                   required=required, default=None if required else "digits",
                   help="mnist (IDX folder), folder (PNG/JPEG images), digits (scikit-learn 8x8) or stacked_mnist "
                        "(three MNIST digits as RGB, 1,000 modes; the MNIST IDX folder)"
                        + "; fsdd (spoken digits, WAV folder)" * audio)
    p.add_argument("--data-dir", help="folder of the data set")
    p.add_argument("--index-range", help="START:STOP of the images to use (mnist default 0:8000)")
    p.add_argument("--image-size", type=int, help="resize folder images to this size")
    p.add_argument("--channels-in", type=int, choices=[1, 3], help="folder images: 1 grey, 3 RGB")
    if audio:
        p.add_argument("--speakers", help="fsdd: the training speakers, e.g. george,jackson (default: all but the "
                       "held-out one)")
        p.add_argument("--holdout-speaker", default="theo", help="fsdd: the speaker kept for evaluation")


def add_run_args(p: argparse.ArgumentParser, out_help: str = "run folder (checkpoints, logs, pictures)",
                 steps_help: str = "total optimisation steps", audio: bool = False) -> None:
    """What every trainer's command takes first: the data (``audio``: FSDD too), the run folder, the budget
    and --resume."""
    add_data_args(p, audio=audio)
    p.add_argument("--out", required=True, help=out_help)
    p.add_argument("--steps", type=int, help=f"{steps_help}, counted across resumes")
    p.add_argument("--minutes", type=float, help="wall-clock budget in minutes (of this invocation)")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")


def add_loop_args(p: argparse.ArgumentParser, sample_every: int, sample_help: str = "sample grids",
                  milestones: str = "none") -> None:
    """The trainer options every trainer shares: seed, pictures, checkpoints, milestones (``milestones``: what
    the default is, for the help), progress."""
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sample-every", type=int, default=sample_every, help=f"steps between {sample_help} (0: end only)")
    p.add_argument("--ckpt-every-minutes", type=float, default=5.0)
    p.add_argument("--milestones", metavar="F,F,...",
                   help="fractions of the budget whose checkpoints are also kept in RUN/milestones (e.g. 0.25,0.5,1), "
                        f"for quality against training time (difflab compare); default {milestones}")
    add_progress_arg(p)


def load_data(args: argparse.Namespace, index_range: str | None = None):
    """The data set the data options name (``index_range`` overrides ``--index-range``)."""
    from ..data import load_dataset
    kw = {}
    if args.data == "folder":
        kw = {"channels": args.channels_in, "size": args.image_size}
    if args.data == "fsdd":
        kw = {"speakers": args.speakers, "holdout_speaker": args.holdout_speaker}
    return load_dataset(args.data, args.data_dir, index_range or args.index_range, **kw)


def schedules_by_name(names: str, T: int) -> dict:
    """Comma-separated schedule names -> schedules; VP ones as T-step tables when T > 0."""
    from ..process import schedule_from_spec
    return {n: schedule_from_spec(n, T or None) for n in (v.strip() for v in names.split(",")) if n}


def add_progress_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def add_device_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto",
                   help="cpu, cuda, mps or auto (the first of cuda, mps, cpu here); under torchrun each process "
                        "takes the GPU of its LOCAL_RANK")


def setup_device(args: argparse.Namespace):
    """The device ``--device`` names; under torchrun (``WORLD_SIZE`` > 1) the process group is joined, and the
    processes other than rank 0 print nothing (rank 0 reports for all)."""
    import os
    import sys

    from .. import distributed
    from ..devices import resolve_device
    device = resolve_device(args.device)
    if distributed.init_from_env(device) and not distributed.is_main():
        sys.stdout = open(os.devnull, "w")   # one report, rank 0's; warnings and errors still reach stderr
    return device
