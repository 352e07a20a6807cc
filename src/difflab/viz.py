"""Pictures: image grids (PIL), and figures of schedules, the forward process and reverse
trajectories (matplotlib, an optional dependency imported here only)."""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from .data.pixels import to_uint8
from .errors import DifflabError
from .process.forward import q_sample
from .process.schedules import Schedule

__all__ = ["grid_array", "save_grid", "plot_schedules", "forward_figure", "trajectory_figure", "panels_figure",
           "points_figure", "forward_points_figure", "score_field_figure", "paths_figure", "audio_figure"]


def _upscale(h: int) -> int:
    return max(1, 64 // h) if h < 32 else 1


def grid_array(x: Tensor, nrow: int | None = None, pad: int = 1, scale: int | None = None) -> np.ndarray:
    """Images in [-1, 1] ``(N, C, H, W)`` -> one uint8 array ``(H', W', C)`` (C = 1 or 3)."""
    if x.ndim != 4:
        raise DifflabError(f"a grid needs images of shape (N, C, H, W), got {tuple(x.shape)}")
    a = to_uint8(x)
    n, c, h, w = a.shape
    scale = scale or _upscale(h)
    if scale > 1:
        a = a.repeat(scale, axis=2).repeat(scale, axis=3)
        h, w = h * scale, w * scale
    nrow = nrow or math.ceil(math.sqrt(n))
    ncol = math.ceil(n / nrow)
    out = np.full((ncol * (h + pad) + pad, nrow * (w + pad) + pad, c), 255, dtype=np.uint8)
    for k in range(n):
        r, q = divmod(k, nrow)
        out[pad + r * (h + pad): pad + r * (h + pad) + h, pad + q * (w + pad): pad + q * (w + pad) + w] = \
            a[k].transpose(1, 2, 0)
    return out


def save_grid(x: Tensor, path: str | os.PathLike, nrow: int | None = None, scale: int | None = None) -> Path:
    """Save images in [-1, 1] as a PNG grid (small images are upscaled, nearest neighbour)."""
    from PIL import Image

    arr = grid_array(x, nrow, scale=scale)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr).save(path)
    return path


def _plt():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise DifflabError("figures need matplotlib: pip install 'difflab[plot]'") from None
    return plt


def _save(plt, fig, path: str | os.PathLike) -> Path:
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _show(ax, img: Tensor) -> None:
    a = to_uint8(img[None])[0]
    if a.shape[0] == 1:
        ax.imshow(a[0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    else:
        ax.imshow(a.transpose(1, 2, 0), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def plot_schedules(schedules: dict[str, Schedule], path: str | os.PathLike, n: int = 501) -> Path:
    """alpha_bar(t) = alpha_t^2 / (alpha_t^2 + sigma_t^2) and log-SNR(t) for each schedule, side by side."""
    plt = _plt()
    t = torch.linspace(0, 1, n, dtype=torch.float64)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for name, s in schedules.items():
        lam = s.logsnr(t)
        ax1.plot(t, torch.sigmoid(lam), label=name)  # = alpha_bar for VP schedules
        ax2.plot(t, lam.clamp(-25, 25), label=name)
    ax1.set(xlabel="t", ylabel=r"$\bar\alpha(t)$ = signal fraction", title="signal kept")
    ax2.set(xlabel="t", ylabel=r"log-SNR $\lambda(t)$ (clipped to ±25)", title="log signal-to-noise ratio")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(plt, fig, path)


def forward_figure(x0: Tensor, schedules: dict[str, Schedule], ts: Sequence[float], path: str | os.PathLike,
                   seed: int = 0) -> Path:
    """Rows: each image under each schedule; columns: x_t at the times ``ts`` (same noise for all)."""
    plt = _plt()
    g = torch.Generator().manual_seed(seed)
    eps = torch.randn(x0.shape, generator=g)
    rows = [(name, i) for name in schedules for i in range(len(x0))]
    fig, axes = plt.subplots(len(rows), len(ts), figsize=(1.3 * len(ts) + 1.2, 1.3 * len(rows) + 0.4), squeeze=False)
    for r, (name, i) in enumerate(rows):
        s = schedules[name]
        for c, t in enumerate(ts):
            x_t = q_sample(s, x0[i:i + 1], float(t), eps=eps[i:i + 1])
            ax = axes[r, c]
            a, sg = s.alpha_sigma(torch.tensor(float(t)))
            _show(ax, x_t[0] / float((a**2 + sg**2).sqrt()))  # unit variance for VE schedules too
            if r == 0:
                ax.set_title(f"t={t:g}", fontsize=8)
            if c == 0:
                ax.set_ylabel(name, fontsize=8)
    fig.suptitle(r"forward process $x_t = \alpha_t x_0 + \sigma_t \epsilon$ (same $\epsilon$ everywhere)", fontsize=9)
    return _save(plt, fig, path)


def trajectory_figure(traj: dict, path: str | os.PathLike, n: int = 4) -> Path:
    """For each of ``n`` samples, a row of states and a row of x0_hat at the recorded steps: column
    "t a->b" shows the estimate x0_hat made at time a and the state the step reached at time b."""
    plt = _plt()
    steps = len(traj["steps"])
    if steps == 0:
        raise DifflabError("no trajectory steps were recorded")
    n = min(n, traj["x"][0].shape[0])
    fig, axes = plt.subplots(2 * n, steps, figsize=(1.2 * steps + 1.2, 2.4 * n + 0.4), squeeze=False)
    for k in range(n):
        for c in range(steps):
            for j, key in enumerate(("x", "x0_hat")):
                ax = axes[2 * k + j, c]
                _show(ax, traj[key][c][k].clamp(-1, 1))
                if k == 0 and j == 0:
                    t_next = traj.get("t_next", traj["t"])[c]
                    ax.set_title(f"t {traj['t'][c]:.3f}->{t_next:.3f}", fontsize=7)
                if c == 0:
                    ax.set_ylabel("state $x$" if j == 0 else r"$\hat x_0$", fontsize=8)
    fig.suptitle(r"reverse process: state $x_t$ and the denoiser's estimate $\hat x_0$", fontsize=9)
    return _save(plt, fig, path)


def panels_figure(columns: dict[str, Tensor], path: str | os.PathLike, title: str | None = None,
                  row_labels: Sequence[str] | None = None) -> Path:
    """Images side by side: one column per entry of ``columns`` (each ``(N, C, H, W)`` in [-1, 1]; smaller
    images, e.g. a low-resolution input, are shown at their own size within the same frame), one row per
    image: "input | mask | result" figures of the editing commands."""
    plt = _plt()
    names = list(columns)
    n = len(next(iter(columns.values())))
    fig, axes = plt.subplots(n, len(names), figsize=(1.6 * len(names) + 0.6, 1.6 * n + 0.5), squeeze=False)
    for c, name in enumerate(names):
        for r in range(n):
            _show(axes[r, c], columns[name][r])
            if r == 0:
                axes[r, c].set_title(name, fontsize=8)
            if c == 0 and row_labels is not None:
                axes[r, c].set_ylabel(row_labels[r], fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    return _save(plt, fig, path)


# -- points (2-D data) --------------------------------------------------------------------------
def _scatter(ax, pts: Tensor, color: str, label: str | None = None, lim: float = 3.0, size: float = 1.0) -> None:
    p = pts.detach().double().numpy()
    ax.scatter(p[:, 0], p[:, 1], s=size, c=color, alpha=0.5, linewidths=0, label=label)
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])


def points_figure(samples: Tensor | dict[str, Tensor], path: str | os.PathLike, data: Tensor | None = None,
                  lim: float = 3.0, title: str | None = None) -> Path:
    """Samples (grey-blue) over the data (orange); a dict of sample sets gives one panel each."""
    plt = _plt()
    sets = samples if isinstance(samples, dict) else {title or "samples": samples}
    k = len(sets)
    cols = min(k, 4)
    rows = math.ceil(k / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3 * rows + 0.2), squeeze=False)
    for ax in axes.flat[k:]:
        ax.axis("off")
    for ax, (name, pts) in zip(axes.flat, sets.items()):
        if data is not None:
            _scatter(ax, data, "tab:orange", "data", lim)
        _scatter(ax, pts, "tab:blue", "samples", lim)
        ax.set_title(name, fontsize=8)
    if data is not None:
        axes.flat[0].legend(fontsize=7, markerscale=6, loc="upper right")
    return _save(plt, fig, path)


def forward_points_figure(x0: Tensor, schedules: dict[str, Schedule], ts: Sequence[float], path: str | os.PathLike,
                          seed: int = 0, lim: float = 3.0) -> Path:
    """The forward process on a point cloud: one row per schedule, x_t at each t (same noise)."""
    plt = _plt()
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    fig, axes = plt.subplots(len(schedules), len(ts), figsize=(2 * len(ts), 2 * len(schedules) + 0.3), squeeze=False)
    for r, (name, s) in enumerate(schedules.items()):
        for c, t in enumerate(ts):
            a, sg = s.alpha_sigma(torch.tensor(float(t)))
            x_t = q_sample(s, x0, float(t), eps=eps) / float((a**2 + sg**2).sqrt())
            _scatter(axes[r, c], x_t, "tab:blue", lim=lim, size=0.5)
            if r == 0:
                axes[r, c].set_title(f"t={t:g}", fontsize=8)
            if c == 0:
                axes[r, c].set_ylabel(name, fontsize=8)
    fig.suptitle(r"forward process on points, $x_t/\sqrt{\alpha_t^2+\sigma_t^2}$", fontsize=9)
    return _save(plt, fig, path)


@torch.no_grad()
def score_field_figure(denoiser, ts: Sequence[float], path: str | os.PathLike, data: Tensor | None = None,
                       lim: float = 3.0, n: int = 25) -> Path:
    r"""The learned score :math:`\nabla\log p_t(x) = (\alpha_t\hat x_0 - x)/\sigma_t^2` on an n x n grid at
    each t: unit arrows for the direction, colour for log10 of the magnitude, over the data."""
    plt = _plt()
    u = torch.linspace(-lim, lim, n)
    gx, gy = torch.meshgrid(u, u, indexing="xy")
    x = torch.stack([gx.flatten(), gy.flatten()], 1)
    fig, axes = plt.subplots(1, len(ts), figsize=(3.9 * len(ts), 3.4), squeeze=False)
    for ax, t in zip(axes[0], ts):
        tt = torch.full((x.shape[0],), float(t))
        a, s = denoiser.schedule.alpha_sigma(tt)
        score = (a[:, None] * denoiser(x, tt) - x) / (s[:, None] ** 2)
        mag = score.norm(dim=1, keepdim=True)
        d = (score / mag.clamp_min(1e-12)).numpy()
        if data is not None:
            _scatter(ax, data, "tab:orange", lim=lim, size=0.5)
        q = ax.quiver(x[:, 0].numpy(), x[:, 1].numpy(), d[:, 0], d[:, 1], mag.log10().flatten().numpy(),
                      cmap="viridis", angles="xy", scale_units="xy", scale=n / (2 * lim) * 1.25, width=0.004)
        fig.colorbar(q, ax=ax, shrink=0.7, label="log10 |score|")
        ax.set_title(f"score at t={t:g}", fontsize=8)
    fig.suptitle(r"learned score $(\alpha_t\hat x_0 - x)/\sigma_t^2$: direction (arrows), magnitude (colour)",
                 fontsize=9)
    return _save(plt, fig, path)


def paths_figure(paths: dict[str, Tensor], path: str | os.PathLike, data: Tensor | None = None, lim: float = 3.0,
                 title: str | None = None) -> Path:
    """Sampling paths of 2-D points, one panel per model: ``paths[name]`` ``(K + 1, N, 2)`` holds the states from
    x_T (grey dots) to the samples (blue dots), joined by lines, over the data (orange): straight against curved
    trajectories, and a one-step model's jumps."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(paths), figsize=(3.4 * len(paths), 3.6), squeeze=False)
    for ax, (name, p) in zip(axes[0], paths.items()):
        if data is not None:
            _scatter(ax, data, "tab:orange", lim=lim, size=0.5)
        q = p.detach().double().numpy()
        ax.plot(q[:, :, 0], q[:, :, 1], color="tab:blue", alpha=0.35, linewidth=0.6)
        ax.scatter(q[0, :, 0], q[0, :, 1], s=3, c="grey", linewidths=0)
        ax.scatter(q[-1, :, 0], q[-1, :, 1], s=3, c="tab:blue", linewidths=0)
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(name, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    return _save(plt, fig, path)


# -- audio --------------------------------------------------------------------------------------
def audio_figure(waves: Tensor, path: str | os.PathLike, sample_rate: int, titles: Sequence[str] | None = None,
                 title: str | None = None, n_fft: int = 256, hop_length: int = 64, cols: int = 4) -> Path:
    """For each waveform ``(N, 1, L)`` (at most 16), its spectrogram (STFT magnitude in dB, 0 dB at the
    figure's loudest bin, 80 dB range, frequency up) above the waveform itself."""
    from .encoders.mel import stft
    plt = _plt()
    w = waves.detach().float().reshape(waves.shape[0], -1)[:16]
    n = w.shape[0]
    db = 20 * torch.log10(stft(w, n_fft, hop_length).abs().clamp_min(1e-8))
    db = (db - db.max()).clamp_min(-80.0).numpy()
    cols = min(n, cols)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(2 * rows, cols, figsize=(2.6 * cols, 2.7 * rows + 0.3), squeeze=False,
                             gridspec_kw={"height_ratios": [2.2, 1] * rows})
    for ax in axes.flat:
        ax.axis("off")
    dur, nyq = w.shape[1] / sample_rate, sample_rate / 2000
    for k in range(n):
        r, c = divmod(k, cols)
        ax = axes[2 * r, c]
        ax.axis("on")
        ax.imshow(db[k], origin="lower", aspect="auto", cmap="magma", vmin=-80, vmax=0, extent=(0, dur, 0, nyq))
        ax.set_title(titles[k] if titles else f"#{k}", fontsize=8)
        ax.tick_params(labelsize=6, labelbottom=False)   # the waveform below carries the time axis
        if c == 0:
            ax.set_ylabel("kHz", fontsize=7)
        ax = axes[2 * r + 1, c]
        ax.axis("on")
        ax.plot(np.arange(w.shape[1]) / sample_rate, w[k].numpy(), lw=0.4, color="tab:blue")
        ax.set_xlim(0, dur)
        ax.set_ylim(-1, 1)
        ax.tick_params(labelsize=6)
        ax.set_xlabel("s", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    return _save(plt, fig, path)
