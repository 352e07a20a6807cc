r"""Reflow (Liu, Gong & Liu, "Flow Straight and Fast: Learning to Generate and Transfer Data with Rectified
Flow", arXiv:2209.03003): draw (noise, sample) pairs :math:`(z, x_0)` with a trained model's deterministic
ODE sampler, then train a flow (``flow`` schedule, ``velocity`` prediction) on those fixed couplings,

.. math:: \min_\theta\ E_{t, (z, x_0)} \lVert (z - x_0) - u_\theta(x_t, t)\rVert^2, \qquad x_t = (1 - t)x_0 + t z.

The couplings are deterministic, so the new flow's paths cross less and are straighter: fewer Euler steps
give the same samples.  Straightness (their Definition 3.5), measured along the model's own trajectory
:math:`x_t` from :math:`x_1` to :math:`x_0`:

.. math:: S = \int_0^1 E\,\lVert (x_1 - x_0) - \dot x_t\rVert^2 dt \quad (0 \text{ iff the paths are straight lines
          run at constant speed}),

discretised on an Euler trajectory of ``steps`` uniform steps (the Euler increments are the velocities), per
dimension; beside it the relative excess length :math:`E\sum_i\lVert x_{t_i} - x_{t_{i+1}}\rVert / E\lVert x_1 - x_0\rVert - 1`
(ratio of the means: a path whose chord is short does not dominate), which does not depend on how the
time axis is parameterised (so it also compares a VP teacher with a flow).
"""
from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..data.kinds import DATA_KINDS, Dataset
from ..denoisers.denoiser import DenoiserFn
from ..errors import DifflabError
from ..io import check_format, load_bundle_tensors, read_json, save_bundle
from ..process.schedules import FlowSchedule
from ..progress import progress_bar
from ..sampling.api import sample_one_batch
from ..sampling.grids import time_grid
from ..sampling.noise import SampleNoise
from ..sampling.registry import get_sampler
from ..train.loop import TrainConfig, TrainResult, train
from .common import RunRecord, load_teacher, make_student

__all__ = ["check_pair_sampler", "generate_pairs", "save_pairs", "load_pairs", "paired_dataset", "straightness", "reflow",
           "REFLOW_SAMPLING"]

REFLOW_SAMPLING = {"sampler": "euler", "steps": 1, "grid": "trailing"}
PAIRS_FORMAT = "difflab-reflow-pairs"


def check_pair_sampler(sampler: str, opts: dict[str, Any] | None = None) -> None:
    """Refuse an unknown sampler, bad options, or a stochastic setting: a reflow coupling must be the
    deterministic ODE map."""
    opts = opts or {}
    info = get_sampler(sampler)
    info.check(opts)
    if info.is_stochastic(opts):
        raise DifflabError(f"reflow needs a deterministic ODE sampler; {sampler!r} with {opts or 'its defaults'} "
                           f"is stochastic")


@torch.no_grad()
def generate_pairs(teacher: DenoiserFn, n: int, *, sampler: str = "dpmpp_2m", steps: int = 20,
                   grid: str = "trailing", sigma_max: float | None = None, seed: int = 0, batch_size: int = 256,
                   progress: bool = True, shape: tuple[int, ...] | None = None, **opts: Any
                   ) -> tuple[Tensor, Tensor]:
    """``(z, x)``: ``n`` standard normal noises and the teacher's samples from them, ``(n, *shape)`` each.
    Sample i is what :func:`difflab.sample` draws with the same seed and setting (noise stream (seed, i));
    a stochastic sampler setting is refused (the coupling must be the deterministic ODE map)."""
    check_pair_sampler(sampler, opts)
    if n < 1:
        raise DifflabError(f"number of pairs must be >= 1, got {n}")
    shape = tuple(shape or teacher.data_shape)
    ts = time_grid(teacher.schedule, steps, grid, sigma_max=sigma_max)
    bar = progress_bar(total=n, desc=f"reflow pairs ({sampler}, {steps} steps)", unit="pair", enabled=progress)
    zs, xs = [], []
    for b0 in range(0, n, batch_size):
        idx = range(b0, min(n, b0 + batch_size))
        zs.append(SampleNoise(seed, idx).randn(shape))
        xs.append(sample_one_batch(teacher, idx, shape, sampler, ts, seed, **opts).float())
        bar.update(len(idx))
    bar.close()
    return torch.cat(zs), torch.cat(xs)


def save_pairs(folder: str | os.PathLike, z: Tensor, x: Tensor, info: dict[str, Any]) -> Path:
    """``folder/pairs.json`` + ``pairs.safetensors`` (SHA-256 checked on loading)."""
    return save_bundle(folder, "pairs.json", {"format": PAIRS_FORMAT, "format_version": 1, **info},
                       {"pairs.safetensors": {"noise": z, "x": x}})


def load_pairs(folder: str | os.PathLike) -> tuple[Tensor, Tensor, dict[str, Any]]:
    cfg = read_json(Path(folder) / "pairs.json", "reflow pairs")
    check_format(cfg, PAIRS_FORMAT, (1,), Path(folder) / "pairs.json")
    t = load_bundle_tensors(folder, cfg, "pairs.safetensors", "reflow pairs")
    return t["noise"], t["x"], cfg


def paired_dataset(kind: str, z: Tensor, x: Tensor, info: dict[str, Any] | None = None) -> Dataset:
    """The pairs as a data set of the teacher's data kind whose ``noise`` the trainer uses."""
    if kind not in DATA_KINDS:
        raise DifflabError(f"unknown data kind {kind!r}")
    return DATA_KINDS[kind](x=x, noise=z, name="reflow pairs", info=dict(info or {}))


@torch.no_grad()
def straightness(denoiser: DenoiserFn, x_T: Tensor, steps: int = 32, **cond: Any) -> dict[str, float]:
    """Liu et al.'s straightness S and the relative excess length of the denoiser's Euler trajectories from
    ``x_T`` (at t = 1) on a uniform grid of ``steps`` (see the module docstring).  Returns
    ``{"S", "excess_length", "steps"}``."""
    ts = time_grid(denoiser.schedule, steps, "trailing")
    xs = [x_T]
    get_sampler("euler").fn(denoiser, x_T, ts, callback=lambda d: xs.append(d["x"]), **cond)
    path = torch.stack(xs).flatten(2).double()                      # (steps + 1, B, D)
    dt = (ts[:-1] - ts[1:])[:, None, None]
    chord = (path[0] - path[-1]) / (ts[0] - ts[-1])
    v = (path[:-1] - path[1:]) / dt
    S = ((chord[None] - v).pow(2).mean(2, keepdim=True) * dt).sum(0).mean()
    length = (path[:-1] - path[1:]).norm(dim=2).sum(0)
    excess = length.mean() / (path[0] - path[-1]).norm(dim=1).mean() - 1
    return {"S": float(S), "excess_length": float(excess), "steps": steps}


def reflow(teacher_path: str | os.PathLike, out: str | os.PathLike, *, pairs: int = 4096,
           pair_sampler: str = "dpmpp_2m", pair_steps: int = 20, pair_grid: str = "trailing", init: str = "teacher",
           config: TrainConfig | None = None, resume: bool = False, batch_size: int = 256) -> TrainResult:
    """Reflow the run ``teacher_path`` into ``out``: ``pairs`` couplings from its ODE sampler (seed of
    ``config``; kept in ``out/pairs`` so a resume does not redraw them), then a ``flow`` / ``velocity`` student
    trained on them with the flow-matching loss (weighting ``flow``), starting from the teacher's weights
    (``init="teacher"``, as Liu et al. start 2-rectified flow from 1-rectified) or from scratch.  A minutes budget
    covers drawing the pairs and training.  The student records the Euler sampler, 1 step, trailing grid."""
    cfg = replace(config or TrainConfig(steps=1000), weighting="flow")
    options = {"pairs": pairs, "pair_sampler": pair_sampler, "pair_steps": pair_steps, "pair_grid": pair_grid,
               "init": init}
    record = RunRecord(out, "reflow", str(Path(teacher_path).resolve()), options, resume)
    teacher = load_teacher(teacher_path)
    if teacher.prediction.startswith("consistency_"):
        raise DifflabError(f"{teacher_path} is a consistency model; reflow needs an ODE (a denoiser teacher)")
    if teacher.num_classes:
        raise DifflabError(f"{teacher_path} is class-conditional; reflow draws unconditional pairs, so it needs an "
                           f"unconditional teacher")
    check_pair_sampler(pair_sampler)
    if init not in ("teacher", "scratch"):
        raise DifflabError(f"unknown student initialisation {init!r}; choose from teacher, scratch")
    record.start()
    folder = Path(out) / "pairs"
    if record.done("pairs"):
        z, x, info = load_pairs(folder)
    else:
        start = time.perf_counter()
        z, x = generate_pairs(teacher, pairs, sampler=pair_sampler, steps=pair_steps, grid=pair_grid, seed=cfg.seed,
                              batch_size=batch_size, progress=cfg.progress)
        info = {"n": pairs, "sampler": pair_sampler, "steps": pair_steps, "grid": pair_grid, "seed": cfg.seed,
                "seconds": time.perf_counter() - start}
        save_pairs(folder, z, x, info)
        record.finish("pairs")
        if cfg.minutes is not None:   # a minutes budget covers drawing the pairs and training
            left = cfg.minutes - info["seconds"] / 60
            if left <= 0:
                raise DifflabError(f"drawing the pairs took {info['seconds'] / 60:.1f} of the {cfg.minutes} minutes; "
                                   f"give more minutes or fewer pairs (continue with --resume)")
            cfg = replace(cfg, minutes=left)
    data = paired_dataset(teacher.data_kind, z, x, {k: info[k] for k in ("n", "sampler", "steps", "seed")})
    student = make_student(teacher, schedule=FlowSchedule(), prediction="velocity", sampling=REFLOW_SAMPLING,
                           init=init, seed=cfg.seed)
    res = train(student, data, out, cfg, resume=resume and (Path(out) / "checkpoints" / "latest").is_file())
    if not res.interrupted:
        record.finish("training")
    return res
