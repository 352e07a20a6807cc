"""``difflab eval``: score sample sets against held-out data (:mod:`difflab.metrics.evaluate`)."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import DifflabError
from .common import add_data_args, add_device_arg, add_progress_arg, ints, parse_opts, setup_device

NAME = "eval"
HELP = "score samples (.npz files, or drawn from --checkpoint per seed) against held-out data"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("samples", nargs="*", help=".npz files written by difflab sample (several: mean +- std)")
    add_data_args(p, audio=True)
    p.add_argument("--train-range", default="0:8000", help="training images (floor, memorisation)")
    p.add_argument("--ref-range", default="8000:10000", help="held-out reference images")
    p.add_argument("--classifier", help="features and class probabilities of a difflab train-classifier folder")
    p.add_argument("--inception", nargs="?", const="", metavar="WEIGHTS",
                   help="the FID Inception-v3 (pt_inception-2015-12-05-6726825d.pth; found in the torch hub "
                        "cache or $DIFFLAB_INCEPTION when no path is given)")
    p.add_argument("--checkpoint", help="sample from this run instead of reading files")
    p.add_argument("--sampler", default="dpmpp_2m")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--grid", default="default")
    p.add_argument("--opt", action="append", metavar="NAME=VALUE", help="sampler option, repeatable")
    p.add_argument("--n", type=int, default=1000, help="samples per seed")
    p.add_argument("--seeds", default="0", help="comma-separated seeds, one sample set each")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--weights", choices=["ema", "model"], default="ema")
    p.add_argument("--min-samples", type=int, default=1000, help="warn below this many samples")
    p.add_argument("--out", help="write the results as JSON here")
    add_device_arg(p)
    add_progress_arg(p)


def feature_model(args: argparse.Namespace):
    """The feature extractor the options name: a difflab classifier or the FID Inception network."""
    if args.inception is not None and args.classifier:
        raise DifflabError("give either --classifier or --inception, not both")
    if args.inception is not None:
        from ..metrics.inception import load_inception
        return load_inception(args.inception or None)
    if args.classifier:
        from ..metrics import load_classifier
        return load_classifier(args.classifier)
    raise DifflabError("choose the features: --classifier DIR (difflab train-classifier) or --inception [WEIGHTS]")


def _samples_and_labels(path: Path, seed: int) -> tuple:
    from ..metrics.evaluate import read_samples
    x, labels = read_samples(path)
    return (x, seed) if labels is None else (x, seed, labels)


def run(args: argparse.Namespace) -> int:
    from .. import distributed
    from ..data import load_dataset
    from ..metrics.evaluate import aggregate, evaluate_sets, format_table, save_json, sample_sets

    if bool(args.samples) == bool(args.checkpoint):
        raise DifflabError("give sample files (.npz from difflab sample) or --checkpoint RUN to sample from, not both")
    if args.data == "fsdd":
        return run_audio(args)
    train = load_dataset(args.data, args.data_dir, args.train_range)
    ref = load_dataset(args.data, args.data_dir, args.ref_range)
    model = feature_model(args)
    if args.checkpoint:
        from ..train import load_checkpoint
        device = setup_device(args)   # under torchrun the samples are drawn in blocks over the processes
        den = load_checkpoint(args.checkpoint).denoiser(args.weights).to(device)
        sets = sample_sets(den, ints(args.seeds), n=args.n, sampler=args.sampler, steps=args.steps, grid=args.grid,
                           batch_size=args.batch_size, progress=not args.no_progress, split_over_ranks=True,
                           **parse_opts(args.opt))
    else:
        sets = [(str(p), *_samples_and_labels(Path(p), i)) for i, p in enumerate(args.samples)]
    res = aggregate(evaluate_sets(sets, train.x, ref.x, model, min_samples=args.min_samples,
                                  progress=not args.no_progress))
    print(format_table(res))
    if args.out and distributed.is_main():
        save_json(res, args.out)
        print(f"results: {args.out}")
    return 0


def run_audio(args: argparse.Namespace) -> int:
    """``difflab eval --data fsdd``: :func:`difflab.metrics.audio.evaluate_audio` of each sample set against
    the held-out speaker (the classifier must be an audio one, trained on the training speakers)."""
    from ..data import load_dataset
    from ..metrics.audio import AudioCNN, evaluate_audio, format_audio_table, read_audio_samples, sample_audio_sets
    from ..metrics.evaluate import aggregate, save_json

    if not args.classifier:
        raise DifflabError("audio evaluation needs --classifier DIR (difflab train-classifier --data fsdd)")
    model = feature_model(args)
    if not isinstance(model, AudioCNN):
        raise DifflabError(f"{args.classifier} is not an audio classifier (train one with difflab train-classifier "
                           f"--data fsdd)")
    kw = {"speakers": args.speakers, "holdout_speaker": args.holdout_speaker}
    train = load_dataset("fsdd", args.data_dir, **kw)
    heldout = load_dataset("fsdd", args.data_dir, split="heldout", **kw)
    if args.checkpoint:
        from ..train import load_checkpoint
        if args.device not in ("auto", "cpu"):   # auto means the CPU here
            raise DifflabError("audio evaluation samples on the CPU; give --device cpu")
        sets = sample_audio_sets(load_checkpoint(args.checkpoint).denoiser(args.weights), ints(args.seeds), n=args.n,
                                 sampler=args.sampler, steps=args.steps, grid=args.grid, batch_size=args.batch_size,
                                 progress=not args.no_progress, **parse_opts(args.opt))
    else:
        sets = [(str(p), *read_audio_samples(Path(p)), i) for i, p in enumerate(args.samples)]
    results = []
    for label, x, y, vocoder, seed in sets:
        r = evaluate_audio(x, model, train.x, train.labels, heldout.x, heldout.labels, labels=y, vocoder=vocoder,
                           seed=seed, min_samples=args.min_samples, progress=not args.no_progress)
        results.append({**r, "label": label})
    res = aggregate(results)
    for r in results:
        print(f"{r['label']}:\n{format_audio_table(r)}")
    if args.out:
        save_json(res, args.out)
        print(f"results: {args.out}")
    return 0
