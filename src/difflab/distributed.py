"""Several processes on PyTorch's own engine: ``torchrun`` starts them, :mod:`torch.distributed` joins them.

``torchrun --nproc-per-node N -m difflab train ...`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the
rendezvous address; :func:`init_from_env` joins the group (NCCL on CUDA, gloo on the CPU) and does nothing
in a plain process.  Every function here is a no-op answer (rank 0 of 1) when no group is joined, so the
library runs unchanged in one process.

How difflab divides the work:

* training: every rank draws the same *global* batch from the one seeded stream and takes its own
  contiguous share :func:`shard` (so W ranks with B each equal one process with W B, and a checkpoint
  holds one global state that any number of ranks can resume);
* sampling: rank r draws the contiguous block :func:`block` of the sample indices, sample i still a
  function of (seed, i), and :func:`gather_rows` joins the blocks in index order.
"""
from __future__ import annotations

import atexit
import contextlib
import os
from typing import Iterator

import torch
import torch.distributed as dist
from torch import Tensor

from .errors import DifflabError

__all__ = ["init_from_env", "world", "rank", "is_main", "barrier", "block", "shard", "gather_rows",
           "all_mean", "all_max", "any_true", "rank_seed", "solo", "my_share"]


def init_from_env(device: torch.device) -> bool:
    """Join the process group torchrun describes in the environment (``WORLD_SIZE`` > 1): NCCL for CUDA
    tensors (with gloo beside it for the small CPU tensors the session agrees on: clock, stop, Ctrl-C) when
    ``device`` is CUDA, gloo otherwise.  Returns whether this process is one of several."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size() > 1
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if not dist.is_available():
        raise DifflabError("WORLD_SIZE > 1 but this PyTorch has no torch.distributed")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo")
    atexit.register(_leave)
    return dist.get_world_size() > 1


def _leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


_SOLO = [0]   # depth of open solo() blocks


def _joined() -> bool:
    return _SOLO[0] == 0 and dist.is_available() and dist.is_initialized()


@contextlib.contextmanager
def solo() -> Iterator[None]:
    """Within the block this process works alone, as rank 0 of 1 (a sweep's rank training its own variants
    writes its own logs and checkpoints); collectives are not used."""
    _SOLO[0] += 1
    try:
        yield
    finally:
        _SOLO[0] -= 1


def world() -> int:
    """Number of processes (1 without a group)."""
    return dist.get_world_size() if _joined() else 1


def rank() -> int:
    """This process's rank (0 without a group)."""
    return dist.get_rank() if _joined() else 0


def is_main() -> bool:
    """True on rank 0, the one process that writes files, logs and pictures."""
    return rank() == 0


def barrier() -> None:
    """Wait for every rank (nothing to wait for in one process)."""
    if world() > 1:
        dist.barrier()


def rank_seed(seed: int, r: int | None = None) -> int:
    """The seed of rank ``r``'s own random stream (the global RNG: dropout), derived from the run seed:
    rank 0 keeps ``seed`` itself, so one process is unchanged; rank r takes ``seed + r * 1_000_003``."""
    r = rank() if r is None else r
    return (seed + r * 1_000_003) % (2**63 - 1)


def block(n: int, r: int | None = None, w: int | None = None) -> range:
    """Rank ``r``'s contiguous block of ``range(n)`` out of ``w``: sizes differ by at most one, the first
    ``n % w`` ranks take one more; the blocks in rank order are ``range(n)``."""
    r = rank() if r is None else r
    w = world() if w is None else w
    q, extra = divmod(n, w)
    lo = r * q + min(r, extra)
    return range(lo, lo + q + (r < extra))


def shard(global_batch: int, r: int | None = None, w: int | None = None) -> slice:
    """Rank ``r``'s rows of a global training batch; the batch must split evenly (equal shares make the
    average of the ranks' mean losses, which DDP's gradient averaging computes, the global mean)."""
    w = world() if w is None else w
    if global_batch % w:
        raise DifflabError(f"the batch size {global_batch} does not split evenly over {w} processes")
    b = block(global_batch, r, w)
    return slice(b.start, b.stop)


def gather_rows(x: Tensor, n: int) -> Tensor:
    """Every rank's ``x`` (its :func:`block` of ``n`` rows) joined in rank order into ``(n, ...)`` on every
    rank.  The blocks are padded to one size for ``all_gather`` and trimmed after."""
    w = world()
    if w == 1:
        return x
    size = len(block(n, 0, w))
    padded = torch.zeros((size, *x.shape[1:]), dtype=x.dtype, device=x.device)
    padded[:len(x)] = x
    parts = [torch.empty_like(padded) for _ in range(w)]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([p[:len(block(n, r, w))] for r, p in enumerate(parts)])


def all_mean(x: Tensor) -> Tensor:
    """The mean of ``x`` over the ranks (``x`` itself in one process)."""
    if world() == 1:
        return x
    x = x.clone()
    dist.all_reduce(x)
    return x / world()


def all_max(x: Tensor) -> Tensor:
    """The elementwise maximum of ``x`` over the ranks (``x`` itself in one process)."""
    if world() == 1:
        return x
    x = x.clone()
    dist.all_reduce(x, op=dist.ReduceOp.MAX)
    return x


def any_true(flag: bool, device: torch.device | str = "cpu") -> bool:
    """True on every rank when ``flag`` is true on some rank (a stop that all ranks must agree on)."""
    return bool(all_max(torch.tensor([float(flag)], device=device)).item())


def my_share(items: list, r: int | None = None, w: int | None = None) -> list:
    """Rank ``r``'s share of a list of independent jobs (a sweep's variants): items r, r + w, ..."""
    r = rank() if r is None else r
    w = world() if w is None else w
    return items[r::w]
