r"""Mode coverage on Stacked MNIST (:mod:`difflab.data.stacked`): how many of the 1,000 digit triples a
generator produces, and how evenly.

Protocol of Metz et al. ("Unrolled Generative Adversarial Networks", arXiv:1611.02163, sec. 3.3.2) and
Srivastava et al. ("VEEGAN", arXiv:1705.07761, sec. 5.2): each channel of a sample is classified by a
pretrained MNIST classifier (here difflab's :class:`~difflab.metrics.SmallCNN`), the sample's mode is
:math:`m = 100 d_1 + 10 d_2 + d_3`; *modes covered* counts the modes with at least ``min_count`` samples,
and the KL divergence of the mode histogram :math:`\hat p` to the uniform distribution is
:math:`\mathrm{KL}(\hat p \,\|\, U) = \sum_m \hat p_m \log(1000\,\hat p_m) = \log 1000 - H(\hat p)`
(0 for a perfectly even generator, :math:`\log 1000 = 6.91` for one that makes a single mode).  Both
depend on the sample count: with n samples even the data covers about :math:`1000(1 - e^{-n/1000})`
modes, so compare against real data at the same count (the papers use 25,600 or 26,000 samples).

:class:`StackedClassifier` wraps the MNIST classifier for the evaluation suite: its features are the
three channels' features side by side, its class probabilities over the 1,000 modes the product of the
channels' probabilities (so the Inception Score and class entropy are over modes).
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import DifflabError
from .classifier import ModuleExtractor

__all__ = ["StackedClassifier", "mode_coverage", "mode_labels"]

DIGITS = 10


class StackedClassifier(nn.Module):
    """A 10-class, 1-channel classifier (``features(x)``, ``probabilities(images)``) applied per channel of
    3-channel images: 3 x feature_dim features, ``(N, 1000)`` mode probabilities
    :math:`p(m) = p_1(d_1) p_2(d_2) p_3(d_3)`."""

    def __init__(self, classifier: nn.Module):
        super().__init__()
        cfg = getattr(classifier, "config", {})
        if cfg.get("in_channels", 1) != 1 or cfg.get("num_classes", DIGITS) != DIGITS:
            raise DifflabError(f"Stacked MNIST needs a 1-channel 10-class (MNIST) classifier, got {cfg}")
        self.classifier = classifier
        self.feature_dim = 3 * int(cfg.get("feature_dim", 0)) or None

    def _check(self, x: Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != 3:
            raise DifflabError(f"Stacked MNIST images are (N, 3, H, W), got shape {tuple(x.shape)}")

    def features(self, x: Tensor) -> Tensor:
        self._check(x)
        return torch.cat([self.classifier.features(x[:, c:c + 1]) for c in range(3)], 1)

    def extractor(self, batch_size: int = 256, progress: bool = False) -> ModuleExtractor:
        return ModuleExtractor(self.features, self.feature_dim, batch_size, progress, name="classifier x3 (stacked)")

    @torch.no_grad()
    def probabilities(self, images: Tensor, batch_size: int = 256) -> Tensor:
        """``(N, 1000)`` float64 mode probabilities of images (uint8 or in [-1, 1])."""
        self._check(images)
        p = [self.classifier.probabilities(images[:, c:c + 1], batch_size) for c in range(3)]
        return (p[0][:, :, None, None] * p[1][:, None, :, None] * p[2][:, None, None, :]).flatten(1)


def mode_labels(images: Tensor, classifier: nn.Module, batch_size: int = 256) -> Tensor:
    """The mode ``100 d1 + 10 d2 + d3`` ``(N,)`` of each Stacked MNIST image, from the MNIST classifier's
    most probable digit in each channel (the most probable mode of :class:`StackedClassifier`)."""
    stacked = classifier if isinstance(classifier, StackedClassifier) else StackedClassifier(classifier)
    return stacked.probabilities(images, batch_size).argmax(1)


def mode_coverage(labels: Tensor, num_modes: int = DIGITS ** 3, min_count: int = 1) -> dict[str, Any]:
    r"""Modes covered (at least ``min_count`` samples) and :math:`\mathrm{KL}(\hat p\,\|\,U)` in nats of the
    mode histogram of ``labels`` ``(N,)`` (integers in ``[0, num_modes)``)."""
    labels = torch.as_tensor(labels)
    if labels.ndim != 1 or labels.numel() == 0:
        raise DifflabError(f"mode coverage needs a non-empty vector of mode labels, got shape {tuple(labels.shape)}")
    if labels.dtype.is_floating_point or int(labels.min()) < 0 or int(labels.max()) >= num_modes:
        raise DifflabError(f"mode labels must be integers in [0, {num_modes})")
    counts = torch.bincount(labels.long(), minlength=num_modes)
    p = counts.double() / labels.numel()
    nz = p[p > 0]
    kl = math.log(num_modes) + float((nz * nz.log()).sum())
    return {"modes": int((counts >= min_count).sum()), "kl_uniform": max(kl, 0.0), "n": int(labels.numel()),
            "num_modes": num_modes, "min_count": min_count, "histogram": counts.tolist()}
