"""Sampler benchmark: quality against NFE for every sampler, and sampler overhead.

    python benchmarks/samplers.py RUN_OR_CKPT [--n 64] [--nfe 5,10,20,50,100] [--out benchmarks/results]

Quality (until the evaluation suite exists) is measured two ways, both printed:

* ``ode_rmse``: RMS pixel distance (in [-1, 1] units) to a 1000-step DDIM solution of the
  probability-flow ODE from the same x_T: how well a deterministic solver integrates the ODE
  (meaningful for deterministic samplers only);
* ``fd_pca``: Frechet distance between the samples and held-out MNIST (images 8000-9999) in
  the 32-dimensional PCA space of the training images (0-7999), a cheap distribution distance;
  the same statistic of 1000-step DDPM samples is the reference row, and real-vs-real (train
  subset vs held-out, same count) is printed as the floor.

Overhead: at batch 256 and 10 steps, the fraction of sampling time spent outside the network
(time in the denoiser is measured by a timing wrapper).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

import difflab as dl
from difflab.sampling import SAMPLERS, time_grid


class Timed(torch.nn.Module):
    def __init__(self, den):
        super().__init__()
        self.den, self.schedule, self.seconds = den, den.schedule, 0.0
        self.data_shape = den.data_shape

    def forward(self, x, t, **cond):
        t0 = time.perf_counter()
        out = self.den(x, t, **cond)
        self.seconds += time.perf_counter() - t0
        return out


def pca_fd(a: np.ndarray, b: np.ndarray, basis: np.ndarray, mean: np.ndarray) -> float:
    """Frechet distance of Gaussians fitted to PCA features (float64)."""
    from scipy import linalg
    fa, fb = (a - mean) @ basis, (b - mean) @ basis
    ma, mb = fa.mean(0), fb.mean(0)
    ca, cb = np.cov(fa, rowvar=False), np.cov(fb, rowvar=False)
    covmean = linalg.sqrtm(ca @ cb).real
    return float(((ma - mb) ** 2).sum() + np.trace(ca + cb - 2 * covmean))


def settings(name: str, nfe: int) -> tuple[int, dict] | None:
    """Steps and options giving about ``nfe`` network evaluations; None if not reachable."""
    info = SAMPLERS[name]
    if name == "ode":
        return 2, {"rtol": {5: 1e-1, 10: 3e-2, 20: 1e-2, 50: 1e-3, 100: 1e-4}.get(nfe, 1e-4),
                   "atol": {5: 1e-1, 10: 3e-2, 20: 1e-2, 50: 1e-3, 100: 1e-4}.get(nfe, 1e-4)}
    if name == "heun":
        steps = (nfe + 1) // 2
        return (steps, {}) if steps >= 1 else None
    if name == "ald":
        levels = max(1, nfe // 5)
        return (levels, {"steps_per_level": 5}) if nfe >= 5 else None
    steps = nfe // info.nfe_per_step
    opts = {"order": 3} if name == "unipc" else {}
    return (steps, opts) if steps >= 1 else None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint")
    ap.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"))
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--nfe", default="5,10,20,50,100")
    ap.add_argument("--samplers", default=",".join(sorted(SAMPLERS)))
    ap.add_argument("--overhead-batch", type=int, default=256)
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    den = dl.load(args.checkpoint)
    train = dl.load_dataset("mnist", args.data_dir, "0:8000").x.flatten(1).double().numpy()
    held = dl.load_dataset("mnist", args.data_dir, "8000:10000").x.flatten(1).double().numpy()
    mean = train.mean(0)
    _, _, vt = np.linalg.svd(train - mean, full_matrices=False)
    basis = vt[:32].T

    def fd(x: torch.Tensor) -> float:
        return pca_fd(x.clamp(-1, 1).flatten(1).double().numpy(), held, basis, mean)

    n = args.n
    rng = np.random.default_rng(0)
    floor = pca_fd(train[rng.choice(len(train), n, replace=False)], held, basis, mean)
    print(f"real-vs-real floor (train {n} vs held-out 2000): fd_pca = {floor:.3f}", flush=True)
    rows = []

    def run(name: str, steps: int, opts: dict, label: str | None = None) -> torch.Tensor:
        stats: dict = {}
        extra = {"stats": stats} if name == "ode" else {}
        t0 = time.perf_counter()
        res = dl.sample(den, n=n, sampler=name, steps=steps, seed=args.seed, progress=False, **opts, **extra)
        return res, time.perf_counter() - t0

    ref_ode, _ = run("ddim", 1000, {})
    ref_ddpm, sec = run("ddpm", 1000, {})
    rows.append({"sampler": "ddpm", "nfe": ref_ddpm.nfe, "fd_pca": fd(ref_ddpm.x), "ode_rmse": None,
                 "s_per_image": sec / n, "reference": True})
    rows.append({"sampler": "ddim", "nfe": ref_ode.nfe, "fd_pca": fd(ref_ode.x), "ode_rmse": 0.0,
                 "s_per_image": None, "reference": True})
    print(json.dumps(rows[0]), flush=True)
    print(json.dumps(rows[1]), flush=True)
    for name in args.samplers.split(","):
        for nfe in [int(v) for v in args.nfe.split(",")]:
            st = settings(name, nfe)
            if st is None:
                continue
            res, sec = run(name, *st)
            rmse = None if SAMPLERS[name].stochastic else float((res.x - ref_ode.x).pow(2).mean().sqrt())
            row = {"sampler": name, "target_nfe": nfe, "nfe": res.nfe, "fd_pca": fd(res.x), "ode_rmse": rmse,
                   "s_per_image": sec / n}
            rows.append(row)
            print(json.dumps(row), flush=True)

    # overhead: time outside the network at batch 256, 10 steps
    over = []
    for name in args.samplers.split(","):
        steps, opts = settings(name, 10) or (10, {})
        timed = Timed(den)
        t0 = time.perf_counter()
        dl.sample(timed, n=args.overhead_batch, sampler=name, steps=steps, seed=args.seed, progress=False,
                  batch_size=args.overhead_batch, **opts)
        total = time.perf_counter() - t0
        over.append({"sampler": name, "total_s": total, "network_s": timed.seconds,
                     "overhead_pct": 100 * (total - timed.seconds) / timed.seconds})
        print(json.dumps(over[-1]), flush=True)
    (out / "samplers.json").write_text(json.dumps({"floor_fd_pca": floor, "quality": rows, "overhead": over}, indent=1))
    plot(rows, floor, out / "samplers.png")
    print(f"wrote {out / 'samplers.json'} and {out / 'samplers.png'}")
    return 0


def plot(rows, floor, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    for name in sorted({r["sampler"] for r in rows if not r.get("reference")}):
        rs = sorted((r for r in rows if r["sampler"] == name and not r.get("reference")), key=lambda r: r["nfe"])
        ax1.plot([r["nfe"] for r in rs], [r["fd_pca"] for r in rs], "o-", label=name, ms=3)
        if rs and rs[0]["ode_rmse"] is not None:
            ax2.plot([r["nfe"] for r in rs], [r["ode_rmse"] for r in rs], "o-", label=name, ms=3)
    ref = next(r for r in rows if r.get("reference") and r["sampler"] == "ddpm")
    ax1.axhline(ref["fd_pca"], color="k", ls="--", lw=1, label="DDPM 1000 steps")
    ax1.axhline(floor, color="gray", ls=":", lw=1, label="real vs real")
    ax1.set(xscale="log", yscale="log", xlabel="NFE", ylabel="FD in PCA-32 space (lower is better)",
            title="sample quality vs network evaluations")
    ax2.set(xscale="log", yscale="log", xlabel="NFE", ylabel="RMS distance to 1000-step ODE solution",
            title="ODE solvers: error vs NFE (same x_T)")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
