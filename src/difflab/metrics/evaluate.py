"""The evaluation protocol behind ``difflab eval``.

* Features of the reference (held-out) images are computed once and cached, keyed by a hash of the
  images and of the extractor's weights.
* Every score is printed beside the real-vs-real floor: the same metric between a same-size subset
  of the training images and the reference, so small-sample bias is visible.
* Several sample sets (one per seed) give every score as mean and standard deviation over seeds.
* Below ``min_samples`` (default 1000) a warning says that FD and KID are biased at that count;
  below 10 samples it refuses.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..data.pixels import to_uint8, to_unit
from ..errors import DifflabError
from ..io import atomic_write_json, load_tensors, save_tensors, sha256_bytes
from ..io import cache_dir as _cache_dir
from .classifier import ModuleExtractor
from .distances import frechet_distance_from_stats, gaussian_stats, kid, precision_recall
from .scores import class_entropy, inception_score, memorisation

__all__ = ["cache_dir", "reference_features", "set_scores", "evaluate_samples", "sample_sets", "read_samples",
           "evaluate_sets", "aggregate", "format_table", "save_json"]


def cache_dir() -> Path:
    return _cache_dir("features")


def _hash(images: Tensor, module: torch.nn.Module) -> str:
    pixels = images if images.dtype == torch.uint8 else to_uint8(images)
    weights = [p for k, v in sorted(module.state_dict().items()) for p in (k, v)]
    return sha256_bytes([pixels, *weights])[:32]


def reference_features(extractor, images: Tensor, module: torch.nn.Module, use_cache: bool = True) -> Tensor:
    """Features of ``images``, cached on disk under a hash of images and extractor weights (written
    atomically; a broken entry is recomputed)."""
    key = _hash(images, module)
    path = cache_dir() / f"{key}.safetensors"
    if use_cache and path.is_file():
        try:
            return load_tensors(path, what="cached features")["features"]
        except DifflabError:
            path.unlink(missing_ok=True)
    feats = extractor(images)
    if use_cache:
        save_tensors({"features": feats}, path)
    return feats


def _extractor(model, progress: bool):
    """(feature extractor, class-probability function or None) of a classifier, the Inception network,
    a :class:`ModuleExtractor` or any torch module (features only)."""
    if isinstance(model, ModuleExtractor):
        return model, None
    if hasattr(model, "extractor"):
        ext = model.extractor()
        ext.progress = progress
        return ext, getattr(model, "probabilities", None)
    if isinstance(model, torch.nn.Module):
        return ModuleExtractor(model, progress=progress, name=type(model).__name__), None
    raise DifflabError(f"cannot extract features with a {type(model).__name__}")


def _weights_module(model) -> torch.nn.Module:
    if isinstance(model, ModuleExtractor):
        if isinstance(model.module, torch.nn.Module):
            return model.module
        owner = getattr(model.module, "__self__", None)  # a bound method such as SmallCNN.features
        if isinstance(owner, torch.nn.Module):
            return owner
        raise DifflabError("reference features are cached by the extractor's weights: give an nn.Module")
    return model


def set_scores(f: Tensor, f_ref: Tensor, ref_stats: tuple[Tensor, Tensor], tag: str, kid_subset: int = 1000,
               seed: int = 0) -> dict[str, float]:
    """FD, KID (mean and std over 50 subsets) and precision/recall (k=3) of features ``f`` ``(n, dim)``
    against the reference features ``f_ref`` (whose Gaussian statistics are ``ref_stats``), under keys
    ``fd_<tag>``, ``kid_<tag>``, ``kid_std_<tag>``, ``precision_<tag>``, ``recall_<tag>``."""
    n = f.shape[0]
    out = {f"fd_{tag}": frechet_distance_from_stats(*gaussian_stats(f), *ref_stats)}
    out[f"kid_{tag}"], out[f"kid_std_{tag}"] = kid(f, f_ref, subsets=50, subset_size=min(kid_subset, n), seed=seed)
    out[f"precision_{tag}"], out[f"recall_{tag}"] = precision_recall(f_ref[: max(n, 10)], f)
    return out


def evaluate_samples(samples: Tensor, train: Tensor, reference: Tensor, model, min_samples: int = 1000,
                     kid_subset: int = 1000, seed: int = 0, use_cache: bool = True,
                     progress: bool = False, labels: Tensor | None = None) -> dict[str, Any]:
    """All scores of one sample set (images uint8 or in [-1, 1]) against ``reference`` images, with the
    real-vs-real floor from a same-size subset of ``train`` (drawn with ``seed``).

    ``model`` gives the features: a :class:`SmallCNN` or :class:`InceptionV3FID` (features and class
    probabilities, so also the Inception Score and class entropy), a :class:`ModuleExtractor` or any
    torch module (features only).

    Float samples are first quantised as they would be saved (clamped to [-1, 1], rounded to 8 bits),
    so a tensor from the sampler and the PNG/.npz written from it get the same scores: samplers
    return values slightly outside [-1, 1] unless x0 is clipped, and unclamped values move the FD
    by several percent (2.2 of 27.6 on an MNIST model)."""
    if samples.dtype != torch.uint8:
        samples = torch.from_numpy(to_uint8(samples))
    n = samples.shape[0]
    if n < 10:
        raise DifflabError(f"{n} samples are too few to evaluate (at least 10; 1000 or more for FD/KID)")
    if n < min_samples:
        warnings.warn(f"{n} samples: FD and KID are biased upward at this count; compare only scores at "
                      f"the same count (the real-vs-real floor below is at {n})", stacklevel=2)
    ext, probs_fn = _extractor(model, progress)
    f_ref = reference_features(ext, reference, _weights_module(model), use_cache)
    f_s = ext(samples)
    g = torch.Generator().manual_seed(seed)
    sub = train[torch.randperm(train.shape[0], generator=g)[:n]]
    f_floor = ext(sub)
    ref_stats = gaussian_stats(f_ref)
    out: dict[str, Any] = {"n": n, "n_reference": int(reference.shape[0]), "extractor": ext.name}
    for tag, f in (("samples", f_s), ("floor", f_floor)):
        out.update(set_scores(f, f_ref, ref_stats, tag, kid_subset, seed))
    if probs_fn is not None:
        probs = probs_fn(samples)
        out["inception_score"], out["inception_score_std"] = inception_score(probs, splits=min(10, n // 2))
        out["inception_score_floor"] = inception_score(probs_fn(sub), splits=min(10, n // 2))[0]
        ent, hist = class_entropy(probs)
        out["class_entropy"], out["class_histogram"] = ent, hist.tolist()
        if labels is not None:   # samples drawn for requested classes: how often the classifier agrees
            out["class_accuracy"] = float((probs.argmax(1) == torch.as_tensor(labels).long()).double().mean())
    out["memorisation"] = memorisation(to_unit(samples)[:2000], to_unit(train),
                                       to_unit(reference)[:2000])
    return out


def sample_sets(denoiser, seeds: list[int], n: int = 1000, sampler: str = "dpmpp_2m", steps: int = 20,
                grid: str = "default", batch_size: int = 256, progress: bool = False, split_over_ranks: bool = False,
                **opts: Any) -> list[tuple[str, Tensor, int]]:
    """One set of ``n`` samples per seed, as ``(label, samples clamped to [-1, 1], seed)`` for
    :func:`evaluate_sets` (the seed also draws that set's real-vs-real floor subset); a latent model's
    samples are decoded.  ``split_over_ranks``: under torchrun each process draws its block of every set
    (:func:`~difflab.sampling.sample`), and every process gets the whole sets."""
    from ..devices import module_device
    from ..encoders.attached import decode_samples
    from ..sampling import sample
    out = []
    for seed in seeds:
        res = sample(denoiser, n=n, sampler=sampler, steps=steps, grid=grid, seed=seed, batch_size=batch_size,
                     progress=progress, split_over_ranks=split_over_ranks, **opts)
        x = decode_samples(denoiser, res.x.to(module_device(denoiser))).cpu()   # decoded where the model is
        out.append((f"{sampler}-{steps} seed {seed}", x.clamp(-1, 1), seed))
    return out


def read_samples(path: str | os.PathLike) -> tuple[Tensor, Tensor | None]:
    """The ``samples`` array of an ``.npz`` written by ``difflab sample``, and the requested ``labels`` if it
    holds them."""
    import numpy as np
    path = Path(path)
    if not path.is_file():
        raise DifflabError(f"samples file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as f:
            labels = torch.from_numpy(f["labels"]) if "labels" in f.files else None
            return torch.from_numpy(f["samples"]), labels
    except Exception as e:
        raise DifflabError(f"{path} is not a difflab samples .npz (key 'samples'): {e}") from None


def evaluate_sets(sets: list[tuple], train: Tensor, reference: Tensor, model, min_samples: int = 1000,
                  progress: bool = False) -> list[dict[str, Any]]:
    """:func:`evaluate_samples` of every ``(name, samples, seed[, requested labels])`` set; shapes are checked
    against the data."""
    results = []
    for name, x, seed, *labels in sets:
        if tuple(x.shape[1:]) != tuple(train.shape[1:]):
            raise DifflabError(f"{name}: samples have shape {tuple(x.shape[1:])}, the data {tuple(train.shape[1:])}")
        r = evaluate_samples(x, train, reference, model, min_samples=min_samples, seed=seed, progress=progress,
                             labels=labels[0] if labels else None)
        r["label"] = name
        results.append(r)
    return results


def aggregate(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and standard deviation (ddof 1) over runs (seeds) of every scalar score."""
    if len(results) == 1:
        return results[0]
    out: dict[str, Any] = {"runs": results, "n": results[0]["n"], "n_reference": results[0]["n_reference"],
                           "extractor": results[0].get("extractor")}
    keys = [k for k, v in results[0].items() if isinstance(v, float)] + ["memorisation_ratio"]
    for k in keys:
        vals = torch.tensor([r["memorisation"]["ratio"] if k == "memorisation_ratio" else r[k] for r in results],
                            dtype=torch.float64)
        out[k] = float(vals.mean())
        out[k + "_runs_std"] = float(vals.std())
    return out


def format_table(res: dict[str, Any]) -> str:
    """The terminal table; with several runs every cell is ``mean +- std`` over runs."""
    multi = "runs" in res

    def cell(key: str, width: int, digits: int) -> str:
        if key not in res:
            return " " * width
        txt = f"{res[key]:.{digits}f}"
        if multi:
            txt += f" +- {res[key + '_runs_std']:.{digits}f}"
        return f"{txt:>{width}}"

    w = 22 if multi else 12
    rows = [("FD", "fd", 3), ("KID", "kid", 5), ("precision (k=3)", "precision", 3), ("recall (k=3)", "recall", 3)]
    lines = [f"{'metric':<24}{'samples':>{w}}{'real vs real':>{w + 2}}", "-" * (24 + 2 * w + 2)]
    for label, key, d in rows:
        lines.append(f"{label:<24}{cell(key + '_samples', w, d)}{cell(key + '_floor', w + 2, d)}")
    if "inception_score" in res:
        lines.append(f"{'Inception Score':<24}{cell('inception_score', w, 3)}{cell('inception_score_floor', w + 2, 3)}")
        lines.append(f"{'class entropy (nats)':<24}{cell('class_entropy', w, 3)}")
    if "class_accuracy" in res:
        lines.append(f"{'requested-class accuracy':<24}{cell('class_accuracy', w, 3)}")
    ratio = res["memorisation_ratio"] if multi else res["memorisation"]["ratio"]
    std = f" +- {res['memorisation_ratio_runs_std']:.3f}" if multi else ""
    lines.append(f"{'nearest-train ratio':<24}{ratio:>{w - len(std)}.3f}{std}   (samples / held-out, 1 = no copying)")
    runs = f", {len(res['runs'])} seeds (mean +- std over seeds)" if multi else ""
    lines.append(f"features: {res.get('extractor')}; n = {res['n']} samples, {res['n_reference']} reference images{runs}")
    return "\n".join(lines)


def save_json(res: dict[str, Any], path: str | os.PathLike) -> None:
    atomic_write_json(path, res)
