"""``difflab compare``: diffusion, GAN and VAE runs (any :class:`~difflab.generators.Generator` that
:func:`~difflab.generators.load_generator` opens) measured the same way on the same data, into one report.

For each *model* (a name and one run per training seed) and each run: ``n`` samples per sampling seed
from the run's latest checkpoint, scored by :func:`~difflab.metrics.evaluate.evaluate_sets` (FD, KID,
precision/recall, Inception Score and class entropy from the classifier, nearest-train ratio) against
held-out images, with the sampling time per image, the NFE, the parameters that sample and the
training time and steps.  A run's scores are averaged over sampling seeds; a model's are the mean and
standard deviation over its runs, i.e. over training seeds (over sampling seeds for a single run).

* Quality against training time (``curve_n > 0``): FD of ``curve_n`` samples from every checkpoint
  along each run (:func:`difflab.train.milestones.run_checkpoints`).
* Stacked MNIST (``stacked_mnist`` data): features and mode probabilities of the MNIST classifier per
  channel (:class:`~difflab.metrics.modes.StackedClassifier`), and the modes covered and KL to uniform of
  ``mode_n`` samples, beside the same numbers for ``mode_n`` held-out images.

Writes ``OUT/results.json``, ``OUT/report.md`` and a self-contained ``OUT/report.html`` (the sample grids
side by side, the curves, the table).  Runs on other data, of another shape, or missing are refused
before anything is sampled.
"""
from __future__ import annotations

import json
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..data import load_dataset
from ..errors import DifflabError
from ..generators import Generator, load_generator
from ..io import atomic_write_json, read_json
from ..metrics.evaluate import aggregate, evaluate_samples, evaluate_sets
from ..train.checkpoint import resolve_checkpoint
from ..train.milestones import run_checkpoints

__all__ = ["Model", "compare", "training_seconds", "count_parameters"]

# (key in results, column title, digits); the evaluation suite's scalar scores
SCORES = [("fd_samples", "FD", 2), ("kid_samples", "KID", 4), ("precision_samples", "precision", 3),
          ("recall_samples", "recall", 3), ("inception_score", "IS", 2), ("class_entropy", "class entropy", 3),
          ("memorisation_ratio", "nearest-train ratio", 3)]
FACTS = [("nfe", "NFE", 0), ("seconds_per_image", "s/image", 4), ("parameters", "parameters", 0),
         ("train_seconds", "train s", 0), ("train_steps", "steps", 0)]
MODES = [("modes", "modes (of 1000)", 1), ("kl_uniform", "KL to uniform", 3)]
REF_RANGES = {"mnist": "8000:10000", "stacked_mnist": "8000:10000"}


@dataclass
class Model:
    """A model to compare: a name, its runs (one per training seed) and generator options (such as a
    diffusion sampler's ``sampler`` and ``steps``)."""

    name: str
    runs: list[str | os.PathLike]
    options: dict[str, Any] = field(default_factory=dict)


# -- runs -----------------------------------------------------------------------------------------
def _run_dir(folder: Path) -> Path:
    return folder.parent.parent if folder.parent.name in ("checkpoints", "milestones") else folder


def training_seconds(checkpoint: str | os.PathLike) -> float | None:
    """Training wall clock up to a checkpoint: its config's ``training_seconds`` where the trainer records
    it, else from the run's ``log.jsonl`` (``step``, ``elapsed_s`` of each invocation, ``it_s``): the time
    of the last record at or before the checkpoint's step plus the remaining steps at that record's
    rate, summed over invocations (a resume restarts ``elapsed_s``).  None without either."""
    folder, _ = resolve_checkpoint(checkpoint)
    cfg = read_json(folder / "config.json", "checkpoint config")
    if "training_seconds" in cfg:
        return float(cfg["training_seconds"])
    step, log = int(cfg.get("step", 0)), _run_dir(folder) / "log.jsonl"
    if not log.is_file():
        return None
    offset, prev, best = 0.0, 0.0, None
    for line in log.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "elapsed_s" not in rec or "step" not in rec:
            continue
        if rec["elapsed_s"] < prev:   # a new invocation (resume)
            offset += prev
        prev = rec["elapsed_s"]
        if rec["step"] <= step:
            best = offset + prev + (step - rec["step"]) / max(rec.get("it_s") or math.inf, 1e-9)
    return best


def count_parameters(gen: Generator) -> int:
    """Parameters of the modules a generator samples with (its attributes that are torch modules)."""
    seen: dict[int, int] = {}
    for value in vars(gen).values():
        if isinstance(value, nn.Module):
            seen.update((id(p), p.numel()) for p in value.parameters())
    return sum(seen.values())


def _describe(gen: Generator) -> str:
    kind = type(gen).__name__.removesuffix("Generator") or type(gen).__name__
    sampler = getattr(gen, "sampler", None)
    return f"{kind} ({sampler}, {gen.steps} steps)" if sampler and hasattr(gen, "steps") else kind


def _data_record(cfg: dict[str, Any]) -> dict[str, Any] | None:
    data = (cfg.get("training") or {}).get("data")
    return None if data is None else {k: v for k, v in data.items() if k != "path"}


def _check_runs(models: list[Model], data_name: str, shape: tuple[int, ...]) -> dict[str, dict[str, Any]]:
    """Every run exists, was trained on ``data_name`` with the same data as the others, and has ``shape``;
    returns each run's checkpoint folder and config."""
    found, first = {}, None
    for m in models:
        if not m.runs:
            raise DifflabError(f"model {m.name!r} has no runs")
        for run in m.runs:
            if not Path(run).exists():
                raise DifflabError(f"run not found: {run}")
            folder, _ = resolve_checkpoint(run)
            cfg = read_json(folder / "config.json", "checkpoint config")
            rec = _data_record(cfg)
            if rec is not None:
                if rec.get("name") != data_name:
                    raise DifflabError(f"run {run} was trained on {rec.get('name')!r}, not on {data_name!r}")
                if first is None:
                    first = (run, rec)
                elif rec != first[1]:
                    diff = sorted(k for k in set(rec) | set(first[1]) if rec.get(k) != first[1].get(k))
                    raise DifflabError(f"runs {first[0]} and {run} were trained on different data "
                                       f"({', '.join(f'{k}: {first[1].get(k)} vs {rec.get(k)}' for k in diff)})")
            run_shape = cfg.get("data_shape")
            if run_shape is not None and tuple(run_shape) != tuple(shape):
                raise DifflabError(f"run {run} makes samples of shape {tuple(run_shape)}, the data {data_name!r} "
                                   f"has shape {tuple(shape)}")
            found[str(run)] = {"folder": folder, "config": cfg}
    return found


def _generator(path: Path, model: Model, shape: tuple[int, ...]) -> Generator:
    try:
        gen = load_generator(path, **model.options)
    except TypeError as e:
        raise DifflabError(f"model {model.name!r}: bad generator options {model.options}: {e}") from None
    if tuple(gen.data_shape) != tuple(shape):
        raise DifflabError(f"run {path} makes samples of shape {tuple(gen.data_shape)}, the data has {tuple(shape)}")
    return gen


# -- scores ---------------------------------------------------------------------------------------
def _mean_std(values: list[float]) -> tuple[float, float | None]:
    v = torch.tensor(values, dtype=torch.float64)
    return float(v.mean()), (float(v.std()) if len(values) > 1 else None)


class _Evaluation:
    """The data, reference and feature model shared by every run."""

    def __init__(self, data: str, data_dir, classifier, train_range, ref_range, min_samples: int,
                 progress: bool, data_options: dict[str, Any]):
        from ..metrics import load_classifier
        ref_range = ref_range or REF_RANGES.get(data)
        if ref_range is None:
            raise DifflabError(f"give the held-out images of data {data!r} (ref_range, e.g. --ref-range 1500:1797)")
        self.train = load_dataset(data, data_dir, train_range, **data_options)
        self.ref = load_dataset(data, data_dir, ref_range, **data_options)
        if self.train.kind != "images":
            raise DifflabError(f"compare measures images; data {data!r} holds {self.train.kind}")
        clf = classifier if isinstance(classifier, nn.Module) else load_classifier(classifier)
        self.stacked = self.train.name == "stacked_mnist"
        if self.stacked:
            from ..metrics.modes import StackedClassifier
            clf = StackedClassifier(clf)
        self.model, self.min_samples, self.progress = clf, min_samples, progress
        self.features = clf.extractor().name if hasattr(clf, "extractor") else type(clf).__name__

    def scores(self, sets: list[tuple[str, Tensor, int]]) -> dict[str, Any]:
        r = aggregate(evaluate_sets(sets, self.train.x, self.ref.x, self.model, self.min_samples, self.progress))
        if "runs" not in r:
            r["memorisation_ratio"] = r["memorisation"]["ratio"]
        return r

    def fd(self, x: Tensor) -> float:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return evaluate_samples(x, self.train.x, self.ref.x, self.model, min_samples=0)["fd_samples"]

    def modes(self, x: Tensor) -> dict[str, Any]:
        from ..metrics.modes import mode_coverage, mode_labels
        return mode_coverage(mode_labels(x, self.model))


def _evaluate_run(ev: _Evaluation, gen: Generator, path: Path, n: int, seeds: list[int], curve_n: int,
                  mode_n: int, model: Model, log) -> dict[str, Any]:
    sets, seconds, nfe = [], [], 0
    for seed in seeds:
        t0 = time.perf_counter()
        x = gen.sample(n, seed)
        seconds.append((time.perf_counter() - t0) / n)
        nfe = gen.nfe
        sets.append((f"{model.name} {path.name} seed {seed}", x.clamp(-1, 1), seed))
    res = ev.scores(sets)
    folder, _ = resolve_checkpoint(path)
    out = {"run": str(path), "checkpoint": str(folder), "generator": _describe(gen), "nfe": nfe,
           "seconds_per_image": sum(seconds) / len(seconds), "parameters": count_parameters(gen),
           "train_seconds": training_seconds(folder),
           "train_steps": read_json(folder / "config.json").get("step"),
           **{k: res[k] for k, _, _ in SCORES if k in res},
           "floor": {k: res.get(k.replace("samples", "floor")) for k in ("fd_samples", "kid_samples",
                                                                        "precision_samples", "recall_samples")},
           "scores": res}
    out["floor"]["inception_score"] = res.get("inception_score_floor")
    out["samples"] = sets[0][1][:64]
    if ev.stacked and mode_n:
        x = sets[0][1] if mode_n <= n else gen.sample(mode_n, seeds[0])
        cov = ev.modes(x[:mode_n].clamp(-1, 1))
        out.update(modes=cov["modes"], kl_uniform=cov["kl_uniform"], mode_histogram=cov["histogram"])
    if curve_n:
        curve = []
        for ck in run_checkpoints(_run_dir(folder)):
            g = _generator(ck, model, ev.train.shape)
            step = read_json(ck / "config.json").get("step")
            log(f"{model.name}: curve, checkpoint {ck.name}")
            curve.append({"step": step, "train_seconds": training_seconds(ck), "fd": ev.fd(g.sample(curve_n, seeds[0]))})
        out["curve"] = curve
    return out


def _summarise(model: Model, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and std over training seeds (runs); a single run keeps its std over sampling seeds."""
    summary: dict[str, Any] = {"name": model.name, "runs": len(runs), "generator": runs[0]["generator"]}
    for key, _, _ in SCORES + FACTS + MODES:
        vals = [r[key] for r in runs if r.get(key) is not None]
        if not vals:
            continue
        summary[key], std = _mean_std(vals)
        if std is None and key in runs[0]["scores"] and key + "_runs_std" in runs[0]["scores"]:
            std = runs[0]["scores"][key + "_runs_std"]
        summary[key + "_std"] = std
    return summary


# -- report ---------------------------------------------------------------------------------------
def _cell(s: dict[str, Any], key: str, digits: int) -> str:
    if s.get(key) is None:
        return "n/a"
    v, std = s[key], s.get(key + "_std")
    txt = f"{v:,.{digits}f}" if digits == 0 else f"{v:.{digits}f}"
    if std is None:
        return txt
    return txt + (f" +- {std:,.{digits}f}" if digits == 0 else f" +- {std:.{digits}f}")


def _figures(out: Path, summaries, per_model, floor_fd: float | None, stacked_floor) -> list[tuple[str, Path, str]]:
    from ..viz import _plt, _save, grid_array
    plt = _plt()
    figs = []
    k = len(per_model)
    fig, axes = plt.subplots(1, k, figsize=(3.4 * k, 3.7), squeeze=False)
    for ax, (name, runs) in zip(axes[0], per_model.items()):
        img = grid_array(runs[0]["samples"], scale=1)
        ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=255)
        ax.set_title(f"{name}: {runs[0]['generator']}", fontsize=7)
        ax.axis("off")
    figs.append(("Samples", _save(plt, fig, out / "samples.png"),
                 "64 samples of each model (its first run, first sampling seed), side by side."))
    if any("curve" in r for runs in per_model.values() for r in runs):
        fig, ax = plt.subplots(figsize=(6.5, 4))
        for i, (name, runs) in enumerate(per_model.items()):
            for j, r in enumerate(runs):
                pts = [(c["train_seconds"], c["fd"]) for c in r.get("curve", []) if c["train_seconds"] is not None]
                if pts:
                    ax.plot(*zip(*pts), marker="o", ms=3, color=f"C{i}", label=name if j == 0 else None)
        if floor_fd is not None:
            ax.axhline(floor_fd, color="k", ls="--", lw=1, label="real vs real")
        ax.set(yscale="log", xlabel="training time (s)", ylabel="FD (classifier features)",
               title="quality against training time (each line a training seed)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
        figs.append(("Quality against training time", _save(plt, fig, out / "quality_vs_time.png"),
                     "FD of samples from the checkpoints kept along each run (lower is better); the real-vs-real "
                     "floor is at the full sample count, the curve's points at the curve's count."))
    if stacked_floor is not None:
        fig, ax = plt.subplots(figsize=(6.5, 4))
        for i, (name, runs) in enumerate(per_model.items()):
            if "mode_histogram" in runs[0]:
                ax.plot(sorted(runs[0]["mode_histogram"], reverse=True), color=f"C{i}", label=name)
        ax.plot(sorted(stacked_floor["histogram"], reverse=True), color="k", ls="--", label="held-out data")
        ax.set(xlabel="mode rank", ylabel="samples", title="Stacked MNIST: samples per mode, sorted")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        figs.append(("Stacked MNIST modes", _save(plt, fig, out / "modes.png"),
                     "Samples per mode (of 1,000) in decreasing order: a collapsed model is a short, tall curve."))
    return figs


def _write_report(out: Path, summaries, per_model, info: dict[str, Any], floor: dict[str, Any],
                  stacked_floor) -> None:
    from .report import write_documents
    cols = SCORES + FACTS + (MODES if stacked_floor is not None else [])
    head = ["model", "generator", "runs"] + [title for _, title, _ in cols]
    rows = [[s["name"], s["generator"], str(s["runs"])] + [_cell(s, k, d) for k, _, d in cols] for s in summaries]
    real = {**floor, "memorisation_ratio": None}
    if stacked_floor is not None:
        real.update(modes=stacked_floor["modes"], kl_uniform=stacked_floor["kl_uniform"])
    rows.append(["real data", "train subset vs held-out", "-"] + [_cell(real, k, d) for k, _, d in cols])
    paragraphs = [
        f"Data: {info['data']} ({info['train_n']} training images of shape {tuple(info['shape'])}, "
        f"{info['ref_n']} held-out reference images); features and class probabilities: {info['features']}; "
        f"{info['n']} samples per sampling seed, seeds {info['seeds']}.",
        "Each cell is the mean +- std over a model's runs (training seeds); for a single run, over sampling "
        "seeds. FD and KID: lower is better; precision (fidelity) and recall (coverage), k=3; IS and class "
        "entropy from the classifier; nearest-train ratio: median distance of samples to the training set "
        "over that of held-out images (well below 1 means copying). s/image: wall clock of sample(n, seed) "
        "over n on this machine; NFE: network evaluations per sample; parameters: those that sample; train "
        "s and steps: at the compared checkpoint."]
    if stacked_floor is not None:
        paragraphs.append(f"Stacked MNIST: modes covered (at least one sample) and KL of the mode histogram "
                          f"to uniform, from {info['mode_n']} samples per run; the real-data row is "
                          f"{stacked_floor['n']} held-out Stacked MNIST images classified the same way.")
    figs = _figures(out, summaries, per_model, floor.get("fd_samples"), stacked_floor)
    write_documents(out, "Diffusion, GAN and VAE runs compared", paragraphs, head, rows, figs)


def compare(models: list[Model], data: str, data_dir: str | os.PathLike | None, classifier: str | os.PathLike | nn.Module,
            out: str | os.PathLike, n: int = 1000, seeds: list[int] | tuple[int, ...] = (0,),
            train_range: str | None = None, ref_range: str | None = None, curve_n: int = 0,
            mode_n: int = 10_000, min_samples: int = 1000, progress: bool = True,
            data_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Compare ``models`` on data set ``data`` (see the module docstring); writes ``out`` and returns the
    results (also in ``out/results.json``).  ``data_options`` go to the data set's loader for both the
    training and the held-out images (such as ``n`` for ``stacked_mnist``)."""
    if n < 10 or not seeds or curve_n < 0 or mode_n < 0:
        raise DifflabError(f"compare needs n >= 10 samples, at least one seed and curve_n, mode_n >= 0 "
                           f"(got n={n}, seeds={list(seeds)}, curve_n={curve_n}, mode_n={mode_n})")
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise DifflabError(f"model names must differ, got {names}")
    for m in models:   # the cheap refusals first: missing runs and runs on other data, before any data is read
        for run in m.runs:
            if not Path(run).exists():
                raise DifflabError(f"run not found: {run}")
    ev = _Evaluation(data, data_dir, classifier, train_range, ref_range, min_samples, progress, data_options or {})
    found = _check_runs(models, ev.train.name, ev.train.shape)
    gens = {m.name: [_generator(found[str(r)]["folder"], m, ev.train.shape) for r in m.runs] for m in models}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    total = sum(len(m.runs) for m in models)
    from tqdm.auto import tqdm
    bar = tqdm(total=total, desc="compare", unit="run", disable=not progress, dynamic_ncols=True)
    per_model: dict[str, list[dict[str, Any]]] = {}
    for m in models:
        per_model[m.name] = []
        for run, gen in zip(m.runs, gens[m.name]):
            bar.set_postfix_str(f"{m.name}: {Path(run).name}")
            per_model[m.name].append(_evaluate_run(ev, gen, Path(run), n, list(seeds), curve_n, mode_n, m, bar.write))
            bar.update(1)
    bar.close()
    summaries = [_summarise(m, per_model[m.name]) for m in models]
    floor = dict(next(iter(per_model.values()))[0]["floor"])   # the same train subsets for every run
    stacked_floor = ev.modes(ev.ref.x[:mode_n]) if ev.stacked and mode_n else None
    info = {"data": data, "train_n": len(ev.train), "ref_n": len(ev.ref), "shape": list(ev.train.shape),
            "features": ev.features, "n": n, "seeds": list(seeds), "mode_n": mode_n, "curve_n": curve_n}
    _write_report(out, summaries, per_model, info, floor, stacked_floor)
    results = {"info": info, "models": summaries, "real": floor,
               "stacked_real": None if stacked_floor is None else
               {k: v for k, v in stacked_floor.items() if k != "histogram"},
               "runs": {name: [{k: v for k, v in r.items() if k != "samples"} for r in runs]
                        for name, runs in per_model.items()}}
    atomic_write_json(out / "results.json", results)
    return results
