r"""Scores computed from class probabilities and from nearest neighbours.

* Inception Score (Salimans et al., arXiv:1606.03498): :math:`\exp E_x[\mathrm{KL}(p(y\mid x)\,\|\,p(y))]`,
  mean and std over splits.
* Class-histogram entropy: the entropy (nats) of the predicted-class histogram of the samples;
  :math:`\log K` for perfectly balanced K classes.
* Memorisation: the distance of each sample to its nearest training image, relative to the same
  distance of held-out real images (a ratio well below 1 means copies of training data).
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..errors import DifflabError

__all__ = ["inception_score", "class_entropy", "memorisation"]


def inception_score(probs: Tensor, splits: int = 10) -> tuple[float, float]:
    p = torch.as_tensor(probs, dtype=torch.float64)
    if p.ndim != 2 or len(p) < splits:
        raise DifflabError(f"Inception Score needs (N, classes) probabilities with N >= splits={splits}")
    scores = []
    for part in p.chunk(splits):
        marginal = part.mean(0, keepdim=True)
        kl = (part * (part.clamp_min(1e-30).log() - marginal.clamp_min(1e-30).log())).sum(1).mean()
        scores.append(kl.exp())
    s = torch.stack(scores)
    return float(s.mean()), float(s.std()) if splits > 1 else 0.0


def class_entropy(probs: Tensor) -> tuple[float, Tensor]:
    """(entropy of the argmax histogram in nats, the histogram as fractions)."""
    p = torch.as_tensor(probs, dtype=torch.float64)
    hist = torch.bincount(p.argmax(1), minlength=p.shape[1]).double() / len(p)
    nz = hist[hist > 0]
    return float(-(nz * nz.log()).sum()), hist


def memorisation(samples: Tensor, train: Tensor, held_out: Tensor) -> dict[str, float]:
    """Nearest-training-image distances of samples vs of held-out images (flattened, Euclidean)."""
    s, tr, ho = (torch.as_tensor(v).flatten(1).double() for v in (samples, train, held_out))
    d_s = torch.cdist(s, tr).min(1).values
    d_h = torch.cdist(ho, tr).min(1).values
    return {"sample_median": float(d_s.median()), "held_out_median": float(d_h.median()),
            "ratio": float(d_s.median() / d_h.median()),
            "fraction_closer_than_held_out_5pct": float((d_s < torch.quantile(d_h, 0.05)).double().mean())}
