"""``difflab compare``: diffusion, GAN and VAE runs measured the same way (:mod:`difflab.experiments.compare`).

Models are given as runs (each its own model, named by its folder) or as groups of runs, one per
training seed (``--group gan=runs/gan0,runs/gan1,runs/gan2``: mean +- std over the seeds).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import DifflabError
from .common import add_progress_arg, ints, parse_opts

NAME = "compare"
HELP = "compare diffusion, GAN and VAE runs on the same data: metrics, timing, curves, Markdown + HTML report"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="*", help="run folders, each its own model")
    p.add_argument("--group", action="append", default=[], metavar="NAME=RUN1,RUN2,...",
                   help="a model with one run per training seed (repeatable)")
    p.add_argument("--opt", action="append", default=[], metavar="NAME:KEY=VALUE",
                   help="generator option of model NAME, e.g. diffusion:steps=50 or diffusion:sampler=ddim")
    p.add_argument("--data", required=True, help="mnist, stacked_mnist, digits or folder: the runs' data")
    p.add_argument("--data-dir", help="folder of the data set")
    p.add_argument("--train-range", help="training images (floor, memorisation); the loader's default if omitted")
    p.add_argument("--ref-range", help="held-out reference images (mnist and stacked_mnist: 8000:10000)")
    p.add_argument("--classifier", required=True, help="a difflab train-classifier folder (MNIST's for stacked_mnist)")
    p.add_argument("--n", type=int, default=1000, help="samples per sampling seed")
    p.add_argument("--seeds", default="0", help="comma-separated sampling seeds")
    p.add_argument("--curve-n", type=int, default=0,
                   help="samples per checkpoint for quality against training time (0: no curve)")
    p.add_argument("--mode-n", type=int, default=10_000, help="stacked_mnist: samples for the mode count")
    p.add_argument("--min-samples", type=int, default=1000, help="warn below this many samples")
    p.add_argument("--out", required=True, help="folder for report.md, report.html, results.json and figures")
    add_progress_arg(p)


def models_from_args(runs: list[str], groups: list[str], opts: list[str]):
    """Models from positional runs, ``--group NAME=RUN,...`` and ``--opt NAME:KEY=VALUE``."""
    from ..experiments.compare import Model
    models = [Model(Path(r).name, [r]) for r in runs]
    for g in groups:
        name, sep, rest = g.partition("=")
        if not sep or not name or not rest:
            raise DifflabError(f"--group must look like NAME=RUN1,RUN2,..., got {g!r}")
        models.append(Model(name, [r for r in rest.split(",") if r]))
    if not models:
        raise DifflabError("give runs to compare (RUN ... or --group NAME=RUN1,RUN2)")
    by_name = {m.name: m for m in models}
    for o in opts:
        name, sep, kv = o.partition(":")
        if not sep or name not in by_name:
            raise DifflabError(f"--opt must look like NAME:KEY=VALUE with NAME one of {', '.join(by_name)}, got {o!r}")
        by_name[name].options.update(parse_opts([kv]))
    return models


def run(args: argparse.Namespace) -> int:
    from ..experiments.compare import compare
    models = models_from_args(args.runs, args.group, args.opt)
    res = compare(models, args.data, args.data_dir, args.classifier, args.out, n=args.n, seeds=ints(args.seeds),
                  train_range=args.train_range, ref_range=args.ref_range, curve_n=args.curve_n, mode_n=args.mode_n,
                  min_samples=args.min_samples, progress=not args.no_progress)
    print((Path(args.out) / "report.md").read_text())
    print(f"report: {Path(args.out) / 'report.html'}; results: {Path(args.out) / 'results.json'}")
    return 0 if res["models"] else 2
