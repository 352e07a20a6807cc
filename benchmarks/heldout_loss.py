r"""Held-out denoising loss of difflab runs: how well each run's EMA model denoises images it never saw.

Every run is scored on the same images with the same fixed draws of (t, noise) - ``--draws`` per image, from
``--seed`` - so the differences between runs are paired: the standard error printed for each difference is
that of the per-draw differences, much smaller than either loss's own.  The loss is
:func:`difflab.losses.denoising_loss` with the training weighting (min-SNR-5 by default, as ``difflab train``).

Used to choose a training setting on a training seed other than the reported ones without drawing samples,
e.g. the learning rate of the magnitude-preserving network (BENCHMARKS.md, "Guidance interval")::

    for lr in 2e-3 6e-3 2e-2 5e-2; do difflab train --data mnist --steps 600 --seed 7 --network unet_mp \
        --lr $lr --out runs/probe/mp_$lr --no-progress; done
    python benchmarks/heldout_loss.py runs/probe/mp_* --data mnist --data-dir ../shared/data/mnist
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

import difflab as dl
from difflab.errors import DifflabError
from difflab.losses import WEIGHTINGS, denoising_loss

HELD_OUT = {"mnist": "8000:10000", "digits": "1500:1797"}


def heldout_losses(den, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor, weighting: str,
                   batch: int = 500) -> torch.Tensor:
    """Per-draw weighted denoising loss of ``den`` at the given ``(x0, t, eps)``, shape ``(N,)``."""
    with torch.no_grad():
        return torch.cat([denoising_loss(den, x0[i:i + batch], t[i:i + batch], eps[i:i + batch], weighting).double()
                          for i in range(0, len(x0), batch)])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", help="difflab run folders (their EMA weights are scored)")
    ap.add_argument("--data", choices=sorted(HELD_OUT), default="mnist")
    ap.add_argument("--data-dir", help="folder of the data set (mnist)")
    ap.add_argument("--index-range", help="held-out images (default: mnist 8000:10000, digits 1500:1797)")
    ap.add_argument("--draws", type=int, default=4, help="(t, noise) draws per image")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--weighting", default="min_snr", choices=sorted(WEIGHTINGS))
    ap.add_argument("--json", help="also write the numbers here")
    a = ap.parse_args(argv)
    try:
        if a.draws < 1:
            raise DifflabError(f"--draws must be >= 1, got {a.draws}")
        data = dl.load_dataset(a.data, a.data_dir, a.index_range or HELD_OUT[a.data])
        g = torch.Generator().manual_seed(a.seed)
        x0 = data.x.repeat(a.draws, *([1] * (data.x.ndim - 1)))
        t = torch.rand(len(x0), generator=g, dtype=torch.float64)
        eps = torch.randn(x0.shape, generator=g)
        rows, first = {}, None
        for run in a.runs:
            den = dl.load(run).eval()
            losses = heldout_losses(den, x0, t, eps, a.weighting)
            first = losses if first is None else first
            diff = losses - first
            n = len(losses)
            rows[run] = {"step": dl.load_checkpoint(run).step, "loss": float(losses.mean()),
                         "se": float(losses.std() / n ** 0.5), "minus_first": float(diff.mean()),
                         "minus_first_se": float(diff.std() / n ** 0.5)}
            r = rows[run]
            print(f"{run}: step {r['step']}, held-out loss {r['loss']:.5f} +- {r['se']:.5f}; minus the first run's "
                  f"{r['minus_first']:+.5f} +- {r['minus_first_se']:.5f}", flush=True)
    except DifflabError as e:
        print(f"heldout_loss: error: {e}", file=sys.stderr)
        return 2
    if a.json:
        Path(a.json).write_text(json.dumps({"data": a.data, "index_range": a.index_range or HELD_OUT[a.data],
                                            "draws": a.draws, "seed": a.seed, "weighting": a.weighting,
                                            "runs": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
