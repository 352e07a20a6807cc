r"""Detectors of the two classic GAN failure modes, evaluated at every log record of the trainer.

* **The discriminator wins** (Arjovsky & Bottou, "Towards Principled Methods for Training GANs",
  arXiv:1701.04862: a near-perfect D leaves the generator vanishing or unstable gradients): the
  discriminator's loss without R1 stays below ``d_win_loss`` (default 0.1) for ``patience`` (5)
  consecutive log records.  For the non-saturating loss, :math:`L_D < 0.1` needs
  :math:`\sigma(l_{real})(1 - \sigma(l_{fake})) > e^{-0.1} = 0.905`, i.e. D(real) near 1 and D(fake) near
  0 on average; for the hinge loss it means nearly every real and fake logit is beyond its margin.
  A balanced game sits near :math:`2\log 2 = 1.39` (non-saturating) or 2 (hinge).
* **Mode collapse** (Goodfellow, "NIPS 2016 Tutorial: GANs", arXiv:1701.00160, sec. 5.1.1): the
  *diversity ratio*, the mean pairwise Euclidean distance between the generator's images for a fixed
  batch of latents over the same statistic of a fixed batch of real images, stays below
  ``min_diversity`` (default 0.3) for ``patience`` consecutive log records.  On MNIST 64 real images
  score 1 by construction, 64 images of one digit class 0.56-0.95 and 64 copies of one image plus
  noise of std 0.1 0.19, so 0.3 flags a generator that makes (nearly) one image; collapse to a few
  classes is what the comparison's class entropy and Stacked MNIST mode count measure.

A detector reports once when its streak reaches ``patience`` and again only after the condition has
been false in between.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["Streak", "FailureMonitor", "mean_pairwise_distance", "diversity_ratio"]


def mean_pairwise_distance(x: Tensor) -> float:
    r""":math:`\frac{2}{n(n-1)}\sum_{i<j}\|x_i - x_j\|_2` of ``x`` ``(n, ...)`` (flattened, float64)."""
    return float(torch.pdist(x.detach().flatten(1).double()).mean())


def diversity_ratio(fake: Tensor, real: Tensor) -> float:
    """Mean pairwise distance of generated images over that of real images (1: as diverse as the data)."""
    return mean_pairwise_distance(fake) / max(mean_pairwise_distance(real), 1e-12)


@dataclass
class Streak:
    """Counts consecutive true conditions; :meth:`update` is True exactly when the count reaches ``patience``."""

    patience: int
    count: int = 0

    def update(self, condition: bool) -> bool:
        self.count = self.count + 1 if condition else 0
        return self.count == self.patience


class FailureMonitor:
    """Both detectors; :meth:`check` returns the warnings (``{"kind", "message"}``) of one log record."""

    def __init__(self, d_win_loss: float = 0.1, min_diversity: float = 0.3, patience: int = 5):
        self.d_win_loss, self.min_diversity = d_win_loss, min_diversity
        self.d_wins, self.collapse = Streak(patience), Streak(patience)

    def check(self, loss_d: float, diversity: float) -> list[dict[str, str]]:
        out = []
        if self.d_wins.update(loss_d < self.d_win_loss):
            out.append({"kind": "discriminator_wins",
                        "message": f"the discriminator wins: its loss stayed below {self.d_win_loss} for "
                                   f"{self.d_wins.patience} log records (now {loss_d:.4f}); the generator's "
                                   f"gradients vanish (raise r1_gamma, lower the D learning rate)"})
        if self.collapse.update(diversity < self.min_diversity):
            out.append({"kind": "mode_collapse",
                        "message": f"mode collapse: the generator's images are {diversity:.2f} as diverse as "
                                   f"real images (mean pairwise distance) for {self.collapse.patience} log "
                                   f"records (threshold {self.min_diversity})"})
        return out

    def state(self) -> dict[str, Tensor]:
        return {"monitor.d_wins": torch.tensor(self.d_wins.count), "monitor.collapse": torch.tensor(self.collapse.count)}

    def load_state(self, state: dict[str, Tensor]) -> None:
        self.d_wins.count = int(state["monitor.d_wins"])
        self.collapse.count = int(state["monitor.collapse"])
