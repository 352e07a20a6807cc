r"""What each panel of the explorer computes, as JSON-ready dicts.

Pictures travel as :func:`picture` dicts: ``{"png": data URL}`` for images (a grid, upscaled nearest
neighbour so 8x8 and 28x28 pixels stay visible) or ``{"points": [[x, y], ...]}`` for 2-D points, which
the page draws on a canvas.  States :math:`x_t` are shown as :math:`x_t/\sqrt{\alpha_t^2+\sigma_t^2}`
(unit variance; the identity for variance-preserving schedules), as :func:`difflab.viz.forward_figure` does.

* Forward process: :func:`schedule_curves` (alpha, sigma, log-SNR over t, for the plot) and
  :func:`forward_view` (:math:`x_t = \alpha_t x_0 + \sigma_t\epsilon` under each schedule, same epsilon).
* Reverse process: :func:`reverse_run` records every step's state and :math:`\hat x_0` of
  :func:`difflab.sample` (its ``trajectory``), counting network evaluations with :class:`.jobs.Watch`.
* Samplers side by side: :func:`compare_run`, every sampler at the steps and options
  :func:`~difflab.sampling.nfe_settings` gives for one NFE budget, from the same seeded noise.
* Score field: :func:`score_view`, the learned score :math:`(\alpha_t\hat x_0 - x)/\sigma_t^2`
  (:func:`difflab.score_hat`) on a grid at each time of a sampling trajectory, with the samples there.
* Class-conditional models: :func:`label_cond` and :class:`difflab.guidance.ClassifierFreeGuidance`.
"""
from __future__ import annotations

import base64
import io
import math
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..data.kinds import PointData
from ..denoisers import score_hat
from ..errors import DifflabError
from ..guidance import ClassifierFreeGuidance
from ..nn.conditioning import check_labels
from ..process import q_sample, schedule_from_spec
from ..process.schedules import Schedule
from ..sampling import SAMPLERS, nfe_settings, sample
from ..sampling.api import prior_noise
from ..sampling.noise import SampleNoise
from ..sampling.registry import get_sampler
from ..viz import grid_array
from .jobs import Job, Watch

__all__ = ["picture", "unit_scale", "forward_schedules", "schedule_curves", "forward_view",
           "label_cond", "ClassifierFreeGuidance", "reverse_run", "compare_run", "score_view", "LOGSNR_CLIP"]

COMPARE_SCHEDULES = ("linear", "cosine", "sigmoid", "scaled_linear")   # as 1000-step tables, like the demo
LOGSNR_CLIP = 20.0


# -- pictures ----------------------------------------------------------------------------------------
def picture(x: Tensor, kind: str, size: int = 96, nrow: int | None = None) -> dict[str, Any]:
    """Images in [-1, 1] ``(N, C, H, W)`` -> a PNG grid as a data URL, each image upscaled (nearest
    neighbour) to at least ``size`` pixels; points ``(N, 2)`` -> a list of rounded coordinates."""
    x = x.detach().float().cpu()
    if kind == PointData.kind:
        return {"points": np.round(x.numpy().astype(np.float64), 3).tolist()}
    from PIL import Image
    arr = grid_array(x, nrow=nrow, scale=max(1, math.ceil(size / x.shape[-2])))
    buf = io.BytesIO()
    Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr).save(buf, format="PNG")
    return {"png": "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")}


def unit_scale(schedule: Schedule, t: float) -> float:
    r""":math:`1/\sqrt{\alpha_t^2+\sigma_t^2}` (1 at t = 0, clean data)."""
    if t <= 0:
        return 1.0
    a, s = schedule.alpha_sigma(torch.tensor(float(t), dtype=torch.float64))
    return float(1.0 / (a**2 + s**2).sqrt())


def _finite(v: Tensor | float) -> float | None:
    """A float for JSON (which has no infinity): None when not finite."""
    v = float(v)
    return v if math.isfinite(v) else None


# -- forward process -----------------------------------------------------------------------------------
def forward_schedules(model_schedule: Schedule | None, label: str = "this model") -> dict[str, Schedule]:
    """The model's schedule (first) and the usual VP schedules as 1000-step tables, without repeating the
    model's own."""
    out: dict[str, Schedule] = {}
    if model_schedule is not None:
        out[label] = model_schedule
    for name in COMPARE_SCHEDULES:
        s = schedule_from_spec(name, 1000)
        if model_schedule is None or not _same_schedule(s, model_schedule):
            out[name] = s
    return out


def _same_schedule(a: Schedule, b: Schedule) -> bool:
    """Equal configs, or tables made by the same recipe (``source``): a table saved on one machine and recomputed
    on another differs in the last bits of its float64 betas."""
    ca, cb = a.config(), b.config()
    return ca == cb or (ca.get("source") is not None and ca.get("name") == cb.get("name")
                        and ca.get("source") == cb.get("source"))


def schedule_curves(schedules: dict[str, Schedule], n: int = 201) -> dict[str, Any]:
    r""":math:`\alpha_t`, :math:`\sigma_t` and the log-SNR :math:`\lambda_t` (clipped to +-20) of each schedule
    at ``n`` times in [0, 1], for the page's plot."""
    t = torch.linspace(0, 1, n, dtype=torch.float64)
    curves = []
    for name, s in schedules.items():
        a, sg = s.alpha_sigma(t)
        lam = torch.nan_to_num(s.logsnr(t), nan=0.0, posinf=LOGSNR_CLIP, neginf=-LOGSNR_CLIP).clamp(-LOGSNR_CLIP, LOGSNR_CLIP)
        curves.append({"name": name, "alpha": np.round(a.numpy(), 5).tolist(), "sigma": np.round(sg.numpy(), 5).tolist(),
                       "logsnr": np.round(lam.numpy(), 4).tolist(), "variance_preserving": s.variance_preserving})
    return {"t": np.round(t.numpy(), 5).tolist(), "curves": curves, "logsnr_clip": LOGSNR_CLIP}


def forward_view(x0: Tensor, kind: str, schedules: dict[str, Schedule], t: float, seed: int = 0) -> dict[str, Any]:
    r""":math:`x_t = \alpha_t x_0 + \sigma_t\epsilon` of ``x0`` under each schedule with one :math:`\epsilon`
    (drawn from ``seed``), and :math:`\alpha_t, \sigma_t, \lambda_t` at ``t``."""
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    tt = torch.tensor(float(t), dtype=torch.float64)
    size = 144 if kind != PointData.kind else 0
    views = []
    for name, s in schedules.items():
        a, sg = s.alpha_sigma(tt)
        x_t = q_sample(s, x0, tt, eps=eps)
        views.append({"name": name, "alpha": float(a), "sigma": float(sg), "logsnr": _finite(s.logsnr(tt)),
                      "x_t": picture(x_t * unit_scale(s, t), kind, size)})
    return {"t": float(t), "seed": seed, "x0": picture(x0, kind, size), "schedules": views}


# -- conditioning --------------------------------------------------------------------------------------
def label_cond(label: int | None, n: int, num_classes: int) -> dict[str, Tensor] | None:
    """``cond`` for ``n`` samples of class ``label`` (None: unconditional)."""
    if label is None:
        return None
    return {"label": check_labels(torch.full((n,), int(label), dtype=torch.long), num_classes, allow_null=False)}


def _guided(denoiser: nn.Module, guidance: float | None) -> nn.Module:
    """The model with classifier-free guidance (:class:`difflab.guidance.ClassifierFreeGuidance`) when asked;
    a :class:`.jobs.Watch` around it then counts both evaluations of a guided step."""
    return denoiser if guidance is None or float(guidance) == 1.0 else ClassifierFreeGuidance(denoiser, float(guidance))


# -- sampling ------------------------------------------------------------------------------------------
def _states(schedule: Schedule, x_T: Tensor, t0: float, traj: dict[str, Any]) -> list[tuple[float | None, float, Tensor, Tensor | None]]:
    """(t of the estimate, t of the state, state at unit variance, x0_hat) for the start and each step."""
    out = [(None, t0, x_T * unit_scale(schedule, t0), None)]
    for t, tn, x, x0 in zip(traj["t"], traj["t_next"], traj["x"], traj["x0_hat"]):
        out.append((t, tn, x * unit_scale(schedule, tn), x0))
    return out


def _pick(n_items: int, most: int) -> list[int]:
    """At most ``most`` indices spread over ``range(n_items)``, always the first and the last."""
    if n_items <= most:
        return list(range(n_items))
    return sorted({round(k * (n_items - 1) / (most - 1)) for k in range(most)})


ALL_STEPS = list(range(100_000))   # trajectory indices to keep: every step (adaptive solvers choose their own)


def reverse_run(denoiser: Any, kind: str, job: Job, sampler: str, steps: int, seed: int, n: int,
                cond: dict[str, Tensor] | None = None, guidance: float | None = None,
                max_frames: int = 100) -> dict[str, Any]:
    """Sample ``n`` items with ``sampler`` in ``steps`` steps (its recommended grid and options) and return
    the start noise and up to ``max_frames`` steps: the state and the denoiser's estimate at each, and the
    network evaluations counted."""
    info = get_sampler(sampler)
    opts = info.settings()
    expected = steps * info.nfe_of_step(opts) * (2 if cond and guidance not in (None, 1.0) else 1)
    watch = Watch(_guided(denoiser, guidance), job, expected, f"{sampler}: ")
    res = sample(watch, n=n, shape=tuple(denoiser.data_shape), sampler=sampler, steps=steps,
                 seed=seed, progress=False, batch_size=n, trajectory=ALL_STEPS, trajectory_n=n, cond=cond, **opts)
    x_T = prior_noise(denoiser, SampleNoise(seed, range(n)), tuple(denoiser.data_shape), res.ts[0])
    states = _states(denoiser.schedule, x_T, float(res.ts[0]), res.trajectory)
    frames = []
    for k in _pick(len(states), max_frames):
        t, tn, x, x0 = states[k]
        frames.append({"step": k, "t": t, "t_next": tn, "x": picture(x, kind),
                       "x0_hat": None if x0 is None else picture(x0, kind)})
    return {"sampler": sampler, "steps": len(states) - 1, "nfe": watch.nfe, "seconds": round(res.seconds, 3),
            "options": opts, "frames": frames, "final": picture(res.x, kind)}


def compare_run(denoiser: Any, kind: str, job: Job, nfe: int, seed: int, n: int, samplers: list[str] | None = None,
                cond: dict[str, Tensor] | None = None, guidance: float | None = None) -> dict[str, Any]:
    """Every sampler (or those named) at about ``nfe`` network evaluations per sample, in its recommended
    setting, from the same seed: samples, steps, options and the NFE counted."""
    names = samplers or list(SAMPLERS)
    per_call = 2 if cond and guidance not in (None, 1.0) else 1
    out = []
    for k, name in enumerate(names):
        settings = nfe_settings(name, max(1, nfe // per_call))
        if settings is None:
            out.append({"sampler": name, "skipped": f"needs more than {nfe} network evaluations"})
            continue
        steps, opts = settings
        info = get_sampler(name)
        expected = nfe if info.adaptive else steps * info.nfe_of_step(opts) * per_call
        watch = Watch(_guided(denoiser, guidance), job, expected, f"{name} ({k + 1}/{len(names)}): ")
        watch.offset, watch.share = k / len(names), 1 / len(names)
        res = sample(watch, n=n, shape=tuple(denoiser.data_shape), sampler=name, steps=steps,
                     seed=seed, progress=False, batch_size=n, cond=cond, **opts)
        out.append({"sampler": name, "steps": steps, "adaptive": info.adaptive, "options": opts, "nfe": watch.nfe,
                    "seconds": round(res.seconds, 3), "stochastic": info.is_stochastic(opts),
                    "picture": picture(res.x, kind, size=64)})
    return {"nfe": nfe, "seed": seed, "samplers": out}


@torch.no_grad()
def score_view(denoiser: Any, data: Tensor, sampler: str = "ddim", steps: int = 40, seed: int = 0, n: int = 300,
               grid_n: int = 21, lim: float = 3.0, max_frames: int = 101) -> dict[str, Any]:
    r"""A 2-D model's learned score :math:`\nabla\log p_t(x) \approx (\alpha_t\hat x_0(x) - x)/\sigma_t^2` on a
    ``grid_n`` x ``grid_n`` grid over :math:`[-lim, lim]^2` at every time of a sampling trajectory (clean
    t = 0 uses the schedule's smallest time), with the ``n`` samples' positions there."""
    if tuple(denoiser.data_shape) != (2,):
        raise DifflabError(f"the score field needs a 2-D model, got samples of shape {tuple(denoiser.data_shape)}")
    info = get_sampler(sampler)
    res = sample(denoiser, n=n, sampler=sampler, steps=steps, seed=seed, progress=False, batch_size=n,
                 trajectory=ALL_STEPS, trajectory_n=n, **info.settings())
    x_T = prior_noise(denoiser, SampleNoise(seed, range(n)), (2,), res.ts[0])
    frames = [(float(res.ts[0]), x_T)] + list(zip(res.trajectory["t_next"], res.trajectory["x"]))
    frames = [frames[k] for k in _pick(len(frames), max_frames)]
    u = torch.linspace(-lim, lim, grid_n)
    gx, gy = torch.meshgrid(u, u, indexing="xy")
    grid = torch.stack([gx.flatten(), gy.flatten()], 1)
    t_score = torch.tensor([max(t, denoiser.schedule.t_min) for t, _ in frames], dtype=torch.float64)
    xs = grid.repeat(len(frames), 1)
    ts = t_score.repeat_interleave(grid.shape[0])
    scores = score_hat(denoiser.schedule, xs, ts, denoiser(xs, ts)).reshape(len(frames), -1, 2)
    return {"lim": lim, "grid": np.round(grid.numpy().astype(np.float64), 4).tolist(),
            "data": picture(data[:1000], PointData.kind)["points"], "sampler": sampler,
            "frames": [{"t": t, "t_score": float(ts_), "points": picture(x, PointData.kind)["points"],
                        "score": np.round(sc.numpy().astype(np.float64), 4).tolist()}
                       for (t, x), ts_, sc in zip(frames, t_score, scores)]}
