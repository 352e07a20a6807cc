"""The evaluation protocol behind ``difflab eval``.

* Features of the reference (held-out) images are computed once and cached, keyed by a hash of the
  images and of the extractor's weights.
* Every score is printed beside the real-vs-real floor: the same metric between a same-size subset
  of the training images and the reference, so small-sample bias is visible.
* Below ``min_samples`` (default 1000) a warning says that FD and KID are biased at that count;
  below 10 samples it refuses.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..data.images import to_uint8
from ..errors import DifflabError
from .classifier import to_unit_range
from .distances import frechet_distance_from_stats, gaussian_stats, kid, precision_recall
from .scores import class_entropy, inception_score, memorisation

__all__ = ["cache_dir", "reference_features", "evaluate_samples", "format_table"]


def cache_dir() -> Path:
    return Path(os.environ.get("DIFFLAB_CACHE", Path.home() / ".cache" / "difflab")) / "features"


def _hash(images: Tensor, module: torch.nn.Module) -> str:
    h = hashlib.sha256(to_uint8(images).tobytes() if images.dtype != torch.uint8 else images.numpy().tobytes())
    for k, v in sorted(module.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().contiguous().numpy().tobytes())
    return h.hexdigest()[:32]


def reference_features(extractor, images: Tensor, module: torch.nn.Module, use_cache: bool = True) -> Tensor:
    """Features of ``images``, cached on disk under a hash of images and extractor weights."""
    from safetensors.torch import load_file, save_file
    key = _hash(images, module)
    path = cache_dir() / f"{key}.safetensors"
    if use_cache and path.is_file():
        try:
            return load_file(str(path))["features"]
        except Exception:  # a broken cache entry is recomputed
            path.unlink(missing_ok=True)
    feats = extractor(images)
    if use_cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        save_file({"features": feats.contiguous()}, str(tmp))
        os.replace(tmp, path)
    return feats


def evaluate_samples(samples: Tensor, train: Tensor, reference: Tensor, classifier, min_samples: int = 1000,
                     kid_subset: int = 1000, seed: int = 0, use_cache: bool = True) -> dict[str, Any]:
    """All scores of one sample set (images uint8 or in [-1, 1]) against ``reference`` images, with the
    real-vs-real floor from a same-size subset of ``train``."""
    n = samples.shape[0]
    if n < 10:
        raise DifflabError(f"{n} samples are too few to evaluate (at least 10; 1000 or more for FD/KID)")
    if n < min_samples:
        warnings.warn(f"{n} samples: FD and KID are biased upward at this count; compare only scores at "
                      f"the same count (the real-vs-real floor below is at {n})", stacklevel=2)
    ext = classifier.extractor()
    f_ref = reference_features(ext, reference, classifier, use_cache)
    f_s = ext(samples)
    g = torch.Generator().manual_seed(seed)
    sub = train[torch.randperm(train.shape[0], generator=g)[:n]]
    f_floor = ext(sub)
    ref_stats = gaussian_stats(f_ref)
    out: dict[str, Any] = {"n": n, "n_reference": int(reference.shape[0])}
    for tag, f in (("samples", f_s), ("floor", f_floor)):
        out[f"fd_{tag}"] = frechet_distance_from_stats(*gaussian_stats(f), *ref_stats)
        m, s = kid(f, f_ref, subsets=50, subset_size=min(kid_subset, n), seed=seed)
        out[f"kid_{tag}"], out[f"kid_std_{tag}"] = m, s
        p, r = precision_recall(f_ref[: max(n, 10)], f)
        out[f"precision_{tag}"], out[f"recall_{tag}"] = p, r
    probs = classifier.probabilities(samples)
    out["inception_score"], out["inception_score_std"] = inception_score(probs, splits=min(10, n // 2))
    out["inception_score_floor"] = inception_score(classifier.probabilities(sub), splits=min(10, n // 2))[0]
    ent, hist = class_entropy(probs)
    out["class_entropy"], out["class_histogram"] = ent, hist.tolist()
    out["memorisation"] = memorisation(to_unit_range(samples)[:2000], to_unit_range(train),
                                       to_unit_range(reference)[:2000])
    return out


def format_table(res: dict[str, Any]) -> str:
    rows = [("FD (classifier features)", "fd"), ("KID", "kid"), ("precision (k=3)", "precision"),
            ("recall (k=3)", "recall")]
    lines = [f"{'metric':<26}{'samples':>12}{'real vs real':>14}", "-" * 52]
    for label, key in rows:
        lines.append(f"{label:<26}{res[key + '_samples']:>12.4f}{res[key + '_floor']:>14.4f}")
    lines.append(f"{'Inception Score':<26}{res['inception_score']:>12.3f}{res['inception_score_floor']:>14.3f}")
    lines.append(f"{'class entropy (nats)':<26}{res['class_entropy']:>12.3f}")
    m = res["memorisation"]
    lines.append(f"{'nearest-train ratio':<26}{m['ratio']:>12.3f}   (samples / held-out, 1 = no copying)")
    lines.append(f"n = {res['n']} samples, {res['n_reference']} reference images")
    return "\n".join(lines)


def save_json(res: dict[str, Any], path: str | os.PathLike) -> None:
    Path(path).write_text(json.dumps(res, indent=1))
