"""The demo: the whole path on scikit-learn's 1,797 real 8x8 digits in a few minutes, no downloads.

Schedules, the forward process, training a small UNet, DDIM and DDPM samples and the reverse trajectory,
written as pictures into one folder (what ``difflab demo`` and ``bash scripts/demo.sh`` run).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

__all__ = ["run_demo", "DEMO_SCHEDULES"]

DEMO_SCHEDULES = ("linear", "cosine", "sigmoid", "scaled_linear")


def run_demo(out: str | os.PathLike = "demo_out", minutes: float = 2.0, seed: int = 0, progress: bool = True,
             log: Callable[[str], None] = print) -> Path:
    """Write ``data.png``, ``schedules.png``, ``forward.png``, ``samples_ddim50.png``, ``samples_ddpm1000.png``,
    ``trajectory.png`` and the training run ``run/`` into ``out``; ``log`` receives one line per stage."""
    from .data import load_digits
    from .denoisers import create_denoiser
    from .process import schedule_from_spec
    from .sampling import sample
    from .train import train
    from .viz import forward_figure, plot_schedules, save_grid, trajectory_figure

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = load_digits()
    log(f"[1/5] data: scikit-learn digits, {len(data)} real 8x8 images")
    save_grid(data.x[:64], out / "data.png")
    tables = {n: schedule_from_spec(n, 1000) for n in DEMO_SCHEDULES}
    log(f"[2/5] schedules: {plot_schedules(tables, out / 'schedules.png')}")
    p = forward_figure(data.x[:3], {n: tables[n] for n in ("linear", "cosine")}, [0, 0.1, 0.25, 0.5, 0.75, 1.0],
                       out / "forward.png")
    log(f"[3/5] forward process: {p}")
    den = create_denoiser(data.shape, schedule="cosine", timesteps=1000, prediction="v", clip_x0=1.0, seed=seed)
    log(f"[4/5] training a {sum(p.numel() for p in den.net.parameters()) / 1e6:.2f}M-parameter UNet for {minutes} min")
    run = train(den, data, out / "run", minutes=minutes, seed=seed, sample_every=500, progress=progress)
    res = sample(run.ema, n=64, sampler="ddim", steps=50, seed=seed, progress=progress,
                 trajectory=[0, 5, 10, 20, 30, 40, 45, 49])
    save_grid(res.x, out / "samples_ddim50.png")
    trajectory_figure(res.trajectory, out / "trajectory.png")
    res2 = sample(run.ema, n=64, sampler="ddpm", steps=1000, seed=seed, progress=progress)
    save_grid(res2.x, out / "samples_ddpm1000.png")
    log(f"[5/5] {run.step} steps at {run.it_per_s:.1f} it/s; samples: {out / 'samples_ddim50.png'}, "
        f"{out / 'samples_ddpm1000.png'}; reverse trajectory: {out / 'trajectory.png'}")
    return out
