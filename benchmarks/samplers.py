"""Sampler benchmark: quality against NFE for every sampler, and sampler overhead.

    python benchmarks/samplers.py RUN_OR_CKPT [--n 64] [--nfe 5,10,20,50,100] [--out benchmarks/results]
    python benchmarks/samplers.py --merge BASE.json UPDATE.json OUT.json   # replace some samplers' rows
    python benchmarks/samplers.py --markdown RESULTS.json                  # the table for BENCHMARKS.md

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
import sys
import time
from pathlib import Path

import numpy as np
import torch

import difflab as dl
from difflab.sampling import SAMPLERS, nfe_settings


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


def merge(base: Path, update: Path, out: Path) -> None:
    """Replace the rows of ``base`` for the samplers measured in ``update`` (kept references of base)."""
    a, b = json.loads(base.read_text()), json.loads(update.read_text())
    names = {r["sampler"] for r in b["quality"] if not r.get("reference")}
    rows = [r for r in a["quality"] if r.get("reference") or r["sampler"] not in names]
    rows += [r for r in b["quality"] if not r.get("reference")]
    over = [r for r in a["overhead"] if r["sampler"] not in {o["sampler"] for o in b["overhead"]}] + b["overhead"]
    out.write_text(json.dumps({"floor_fd_pca": a["floor_fd_pca"], "quality": rows, "overhead": over}, indent=1))
    plot(rows, a["floor_fd_pca"], out.with_suffix(".png"))


def markdown(path: Path) -> str:
    """The quality table of a results file as Markdown (FD-PCA / RMS-to-ODE per NFE)."""
    d = json.loads(path.read_text())
    nfes = sorted({r["target_nfe"] for r in d["quality"] if "target_nfe" in r})
    lines = ["| sampler | " + " | ".join(f"NFE {n}" for n in nfes) + " |", "|---" * (len(nfes) + 1) + "|"]
    for name in sorted({r["sampler"] for r in d["quality"] if "target_nfe" in r}):
        cells = []
        for n in nfes:
            r = next((r for r in d["quality"] if r["sampler"] == name and r.get("target_nfe") == n), None)
            if r is None:
                cells.append("")
                continue
            rm = "" if r["ode_rmse"] is None else f" / {r['ode_rmse']:.3f}"
            cells.append(f"{r['fd_pca']:.1f}{rm} ({r['nfe']})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] in ("--merge", "--markdown"):
        if sys.argv[1] == "--merge":
            merge(Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]))
        else:
            print(markdown(Path(sys.argv[2])))
        return 0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint")
    ap.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"))
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--nfe", default="5,10,20,50,100")
    ap.add_argument("--samplers", default=",".join(sorted(SAMPLERS)))
    ap.add_argument("--overhead-batch", type=int, default=256)
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tag", default="samplers", help="name of the output files")
    ap.add_argument("--no-references", action="store_true",
                    help="skip the 1000-step DDPM/DDIM references (then no ode_rmse, no reference line)")
    ap.add_argument("--no-overhead", action="store_true")
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
        opts = {"grid": "trailing", **opts}
        res = dl.sample(den, n=n, sampler=name, steps=steps, seed=args.seed, progress=False, **opts, **extra)
        return res, time.perf_counter() - t0

    ref_ode = None
    if not args.no_references:
        # the two 1000-step references take minutes: cached per (checkpoint step, n, seed)
        cache = out / f"refs_step{dl.load_checkpoint(args.checkpoint).step}_n{n}_seed{args.seed}.safetensors"
        if cache.exists():
            from safetensors.torch import load_file
            c = load_file(str(cache))
            ref_ode, ref_ddpm_x, sec = c["ddim"], c["ddpm"], float(c["ddpm_seconds"])
        else:
            from safetensors.torch import save_file
            ref_ode = run("ddim", 1000, {})[0].x
            res, sec = run("ddpm", 1000, {})
            ref_ddpm_x = res.x
            save_file({"ddim": ref_ode, "ddpm": ref_ddpm_x, "ddpm_seconds": torch.tensor(sec)}, str(cache))
        rows.append({"sampler": "ddpm", "nfe": 1000, "fd_pca": fd(ref_ddpm_x), "ode_rmse": None,
                     "s_per_image": sec / n, "reference": True})
        rows.append({"sampler": "ddim", "nfe": 1000, "fd_pca": fd(ref_ode), "ode_rmse": 0.0,
                     "s_per_image": None, "reference": True})
        print(json.dumps(rows[0]), flush=True)
        print(json.dumps(rows[1]), flush=True)
    for name in args.samplers.split(","):
        for nfe in [int(v) for v in args.nfe.split(",")]:
            st = nfe_settings(name, nfe)
            if st is None:
                continue
            res, sec = run(name, *st)
            rmse = None if SAMPLERS[name].is_stochastic(st[1]) or ref_ode is None else \
                float((res.x - ref_ode).pow(2).mean().sqrt())
            row = {"sampler": name, "target_nfe": nfe, "nfe": res.nfe, "fd_pca": fd(res.x), "ode_rmse": rmse,
                   "s_per_image": sec / n}
            rows.append(row)
            print(json.dumps(row), flush=True)

    # overhead: time outside the network at batch 256, 10 steps
    over = []
    for name in ([] if args.no_overhead else args.samplers.split(",")):
        steps, opts = nfe_settings(name, 10) or (10, {})
        timed = Timed(den)
        t0 = time.perf_counter()
        dl.sample(timed, n=args.overhead_batch, sampler=name, steps=steps, seed=args.seed, progress=False,
                  batch_size=args.overhead_batch, **{"grid": "trailing", **opts})
        total = time.perf_counter() - t0
        over.append({"sampler": name, "total_s": total, "network_s": timed.seconds,
                     "overhead_pct": 100 * (total - timed.seconds) / timed.seconds})
        print(json.dumps(over[-1]), flush=True)
    (out / f"{args.tag}.json").write_text(json.dumps({"floor_fd_pca": floor, "quality": rows, "overhead": over},
                                                     indent=1))
    plot(rows, floor, out / f"{args.tag}.png")
    print(f"wrote {out / (args.tag + '.json')} and {out / (args.tag + '.png')}")
    return 0


def plot(rows, floor, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    styles = ["o-", "s--", "^-.", "D:"]
    for k, name in enumerate(sorted({r["sampler"] for r in rows if not r.get("reference")})):
        rs = sorted((r for r in rows if r["sampler"] == name and not r.get("reference")), key=lambda r: r["nfe"])
        style = dict(fmt=styles[k // 10 % len(styles)], color=f"C{k % 10}")
        ax1.plot([r["nfe"] for r in rs], [r["fd_pca"] for r in rs], style["fmt"], color=style["color"], label=name,
                 ms=3)
        if rs and rs[0]["ode_rmse"] is not None:
            ax2.plot([r["nfe"] for r in rs], [r["ode_rmse"] for r in rs], style["fmt"], color=style["color"],
                     label=name, ms=3)
    ref = next((r for r in rows if r.get("reference") and r["sampler"] == "ddpm"), None)
    if ref is not None:
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
