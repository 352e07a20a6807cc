"""High-level sampling: seeded noise, batching, NFE counting and a progress bar."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor

from ..denoisers.denoiser import DenoiserFn, NFECounter
from ..errors import DifflabError
from ..process.forward import q_sample
from .grids import time_grid
from .noise import SampleNoise
from .registry import get_sampler

__all__ = ["sample", "sample_one_batch", "SampleResult", "nfe_settings"]


@dataclass
class SampleResult:
    x: Tensor                       # (n, *shape), float32, the sampler's output (not clamped)
    nfe: int                        # network evaluations per sample, counted
    seconds: float
    ts: Tensor
    trajectory: dict[str, Any] = field(default_factory=dict)


def nfe_settings(name: str, nfe: int) -> tuple[int, dict[str, Any]] | None:
    """Steps and options with which sampler ``name`` spends about ``nfe`` network evaluations per sample,
    in its recommended setting (:meth:`~.registry.SamplerInfo.for_nfe`; None if it cannot be that cheap)."""
    return get_sampler(name).for_nfe(nfe)


def prior_noise(denoiser: DenoiserFn, noise: SampleNoise, shape: tuple[int, ...], t0: Tensor) -> Tensor:
    """x_T: standard normal for VP schedules (as DDPM), sigma(t_0) times it for VE ones."""
    z = noise.randn(shape)
    if denoiser.schedule.variance_preserving:
        return z
    return z * float(denoiser.schedule.sigma(t0))


def sample_one_batch(denoiser: DenoiserFn, indices: range, shape: tuple[int, ...], sampler: str, ts: Tensor, seed: int,
                     callback: Callable | None = None, x0_start: Tensor | None = None,
                     device: str | torch.device = "cpu", **opts: Any) -> Tensor:
    r"""Samples ``indices`` of the run with ``seed`` (each from its own noise stream, drawn on the CPU and moved
    to ``device``).  With ``x0_start`` (SDEdit), the start is :math:`x_{t_0} = \alpha_{t_0} x_0 + \sigma_{t_0} z`
    of those images instead of the prior."""
    noise = SampleNoise(seed, indices, device)
    if x0_start is None:
        x_T = prior_noise(denoiser, noise, shape, ts[0])
    else:
        x_T = q_sample(denoiser.schedule, x0_start.float(), ts[0], eps=noise.randn(shape))
    return get_sampler(sampler).fn(denoiser, x_T, ts, generator=noise, callback=callback, **opts)


@torch.no_grad()
def sample(denoiser: DenoiserFn, n: int = 64, shape: tuple[int, ...] | None = None, sampler: str = "ddim", steps: int = 50,
           grid: str = "default", sigma_max: float | None = None, seed: int = 0, batch_size: int = 256, progress: bool = True,
           trajectory: list[int] | None = None, trajectory_n: int = 8, ts: Tensor | None = None,
           cond: dict[str, Any] | None = None, t_start: float = 1.0, x0_start: Tensor | None = None,
           device: str | torch.device | None = None, split_over_ranks: bool = False, **opts: Any) -> SampleResult:
    """Draw ``n`` samples; sample i depends only on (seed, i), on every device and in every process.

    Args:
        denoiser: ``D(x_t, t, **cond) -> x0_hat`` with ``.schedule`` (and ``.data_shape`` if ``shape`` is None).
        sampler: a name from :data:`SAMPLERS`; ``opts`` go to it (e.g. ``eta``), checked by name.
        cond: conditioning passed to the denoiser (e.g. ``{"label": LongTensor (n,)}``), sliced per batch.
        steps, grid, sigma_max: the time grid (:func:`~.grids.time_grid`), unless ``ts`` is given.
        t_start, x0_start: start at time ``t_start`` < 1 (the grid truncated there) from the images ``x0_start``
            (n, *shape) noised to that time (SDEdit; :func:`difflab.guidance.img2img`).
        trajectory: step indices at which to keep ``x`` and ``x0_hat`` of the first ``trajectory_n``
            samples (returned in ``result.trajectory``).
        device: where the network runs (default: the denoiser's parameters' device); the noise is drawn on
            the CPU and moved there, the time grid stays float64 on the CPU (the coefficients move with ``x``).
        split_over_ranks: under torchrun, rank r draws its block :func:`difflab.distributed.block` of the
            indices and every rank returns all ``n`` samples (every rank must call it; trajectories come from
            rank 0's first batch).  The samples (returned on the CPU) equal those of one process.
    """
    from .. import distributed
    from ..devices import module_device
    info = get_sampler(sampler)
    info.check(opts)
    shape = tuple(shape or denoiser.data_shape)
    if n < 1:
        raise DifflabError(f"number of samples must be >= 1, got {n}")
    if ts is None:
        ts = time_grid(denoiser.schedule, steps, grid, sigma_max=sigma_max, t_max=t_start)
    if x0_start is not None and tuple(x0_start.shape) != (n, *shape):
        raise DifflabError(f"x0_start has shape {tuple(x0_start.shape)}, expected {(n, *shape)}")
    counter = NFECounter(denoiser)
    was_training = getattr(denoiser, "training", False)
    if hasattr(denoiser, "eval"):
        denoiser.eval()
    keep = set(trajectory or [])
    traj: dict[str, Any] = {"steps": [], "t": [], "t_next": [], "x": [], "x0_hat": []}
    bar = None
    if progress:
        from ..progress import progress_bar
        bar = progress_bar(total=n * (len(ts) - 1), desc=f"sampling {sampler}", unit="img-step", leave=False)
    device = module_device(denoiser) if device is None else torch.device(device)
    mine = distributed.block(n) if split_over_ranks else range(n)
    out, start = [], time.perf_counter()
    nfe_per_sample = 0
    for b0 in range(mine.start, mine.stop, batch_size):
        idx = range(b0, min(mine.stop, b0 + batch_size))
        counter.nfe = 0

        def cb(d: dict[str, Any]) -> None:
            if bar is not None:
                bar.update(len(idx))
            if b0 == 0 and d["i"] in keep:
                traj["steps"].append(d["i"])
                traj["t"].append(float(d["t"]))                 # where x0_hat was estimated
                traj["t_next"].append(float(ts[d["i"] + 1]) if d["i"] + 1 < len(ts) else 0.0)  # time of x
                traj["x"].append(d["x"][:trajectory_n].to("cpu", copy=True))
                traj["x0_hat"].append(d["x0_hat"][:trajectory_n].to("cpu", copy=True))

        batch_cond = {k: v[b0:b0 + len(idx)].to(device) for k, v in (cond or {}).items()}
        x0_batch = None if x0_start is None else x0_start[b0:b0 + len(idx)].to(device)
        out.append(sample_one_batch(counter, idx, shape, sampler, ts, seed, callback=cb, x0_start=x0_batch,
                                    device=device, **opts, **batch_cond))
        nfe_per_sample = counter.nfe
    if bar is not None:
        bar.close()
    if was_training:
        denoiser.train()
    x = torch.cat(out).float() if out else torch.empty((0, *shape), device=device)
    if split_over_ranks:
        x = distributed.gather_rows(x, n)
        nfe_per_sample = int(distributed.all_max(torch.tensor([float(nfe_per_sample)], device=device)))
    x = x.cpu()
    if nfe_per_sample == 0 and info.nfe_of_step(opts):
        raise RuntimeError("sampler made no network evaluations")
    return SampleResult(x, nfe_per_sample, time.perf_counter() - start, ts, traj if keep else {})
