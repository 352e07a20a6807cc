r"""2-D toy distributions with exact samplers, the classic testbeds of score-based models.

Each is scaled to roughly unit standard deviation per coordinate, so the usual schedules (made
for data in [-1, 1]) see comparable signal-to-noise ratios:

* ``eight_gaussians``: eight isotropic Gaussians (std 0.1) on a circle of radius 2, rescaled by 1/1.41;
* ``moons``: two interleaved half circles (radius 1) with Gaussian noise 0.05, centred;
* ``swiss_roll``: the spiral :math:`r(\cos\theta, \sin\theta)` with :math:`r = \theta \in [1.5\pi, 4.5\pi]`
  scaled, plus noise 0.05 (Marsland's 2-D roll, as in the Sohl-Dickstein et al. 2015 figures);
* ``checkerboard``: uniform on the 8 black squares of a 4x4 board on :math:`[-2, 2]^2`, scaled by 1/1.15.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from ..errors import DifflabError
from .kinds import PointData

__all__ = ["TOY2D", "sample_toy2d", "load_toy2d"]


def _eight_gaussians(n: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    k = torch.randint(0, 8, (n,), generator=g)
    angle = k.double() * math.pi / 4
    centres = 2 * torch.stack([torch.cos(angle), torch.sin(angle)], 1)
    return (centres + 0.1 * torch.randn(n, 2, generator=g, dtype=torch.float64)) / 1.41, k


def _moons(n: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    upper = torch.rand(n, generator=g) < 0.5
    th = math.pi * torch.rand(n, generator=g, dtype=torch.float64)
    x = torch.where(upper, torch.cos(th), 1 - torch.cos(th))
    y = torch.where(upper, torch.sin(th), 0.5 - torch.sin(th))
    pts = torch.stack([x - 0.5, y - 0.25], 1) + 0.05 * torch.randn(n, 2, generator=g, dtype=torch.float64)
    return pts / torch.tensor([0.87, 0.5], dtype=torch.float64), (~upper).long()


def _swiss_roll(n: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    th = 1.5 * math.pi * (1 + 2 * torch.rand(n, generator=g, dtype=torch.float64))
    pts = torch.stack([th * torch.cos(th), th * torch.sin(th)], 1) / 7.0
    arc = ((th - 1.5 * math.pi) / math.pi).floor().clamp(max=2).long()   # which of the three half turns
    return pts + 0.05 * torch.randn(n, 2, generator=g, dtype=torch.float64), arc


def _checkerboard(n: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    # a cell (i, j) of the 4x4 board on [-2, 2]^2 is "black" when i + j is even
    cell = torch.randint(0, 8, (n,), generator=g)
    i = cell // 2
    j = 2 * (cell % 2) + (i % 2)
    u = torch.rand(n, 2, generator=g, dtype=torch.float64)
    pts = torch.stack([i.double(), j.double()], 1) + u - 2.0
    return pts / 1.15, cell


# name -> (sampler (n, generator) -> (points, component), component names)
TOY2D = {"eight_gaussians": (_eight_gaussians, [f"gaussian {k}" for k in range(8)]),
         "moons": (_moons, ["upper moon", "lower moon"]),
         "swiss_roll": (_swiss_roll, ["inner turn", "middle turn", "outer turn"]),
         "checkerboard": (_checkerboard, [f"square {k}" for k in range(8)])}


def sample_toy2d(name: str, n: int, seed: int = 0, labels: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """``n`` exact samples ``(n, 2)`` (float32) of the named distribution (and, with ``labels``, the component
    each comes from: Gaussian, moon, turn of the roll or square of the board)."""
    if name not in TOY2D:
        raise DifflabError(f"unknown 2-D data set {name!r}; choose from {', '.join(TOY2D)}")
    if n < 1:
        raise DifflabError(f"number of points must be >= 1, got {n}")
    pts, comp = TOY2D[name][0](n, torch.Generator().manual_seed(seed))
    return (pts.float(), comp) if labels else pts.float()


def load_toy2d(name: str, n: int = 20000, seed: int = 0) -> PointData:
    """A training set of ``n`` exact samples, ``x`` of shape ``(n, 2)``, labelled by component."""
    x, comp = sample_toy2d(name, n, seed, labels=True)
    return PointData(x, comp, f"toy2d:{name}", {"distribution": name, "n": n, "seed": seed}, classes=TOY2D[name][1])
