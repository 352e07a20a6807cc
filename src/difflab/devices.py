"""Where tensors live: choosing a device, and the autocast and memory-format settings that go with it.

``resolve_device("auto")`` picks CUDA, then Apple's MPS, then the CPU; a named device that this machine
lacks is a :class:`~difflab.errors.DifflabError`.  Under ``torchrun`` with CUDA each process takes the GPU
of its ``LOCAL_RANK`` (:mod:`difflab.distributed`).

Randomness never depends on the device: per-sample noise is drawn on the CPU from (seed, index) and moved
(:class:`~difflab.sampling.noise.SampleNoise`), the trainer's batches, times and noise come from a CPU
generator and are moved, so a GPU run sees the very numbers a CPU run sees.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import sys

import torch
from torch import nn

from .errors import DifflabError

__all__ = ["DEVICES", "resolve_device", "module_device", "autocast", "to_memory_format", "OnDevice",
           "keep_freed_cpu_memory"]

DEVICES = ("auto", "cpu", "cuda", "mps")


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """``auto`` (or None): ``cuda`` if present, else ``mps``, else ``cpu``.  ``cuda`` without an index takes
    the GPU of ``LOCAL_RANK`` (0 outside torchrun).  A device this machine lacks raises DifflabError."""
    text = "auto" if name is None else str(name)
    kind = text.split(":")[0]
    if kind not in DEVICES:
        raise DifflabError(f"unknown device {text!r}; choose from {', '.join(DEVICES)}")
    if kind == "auto":
        kind = "cuda" if torch.cuda.is_available() else "mps" if _mps_available() else "cpu"
        text = kind
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise DifflabError("device cuda requested but this PyTorch sees no CUDA GPU (--device cpu or auto)")
        if ":" in text and int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise DifflabError(f"--device {text}: under torchrun give plain cuda (each process takes the GPU of its "
                               f"LOCAL_RANK)")
        try:
            index = int(text.split(":")[1]) if ":" in text else int(os.environ.get("LOCAL_RANK", 0))
        except ValueError:
            raise DifflabError(f"bad device {text!r}: give cuda or cuda:N") from None
        if index >= torch.cuda.device_count():
            raise DifflabError(f"cuda:{index} requested but only {torch.cuda.device_count()} GPU(s) are visible")
        return torch.device("cuda", index)
    if kind == "mps" and not _mps_available():
        raise DifflabError("device mps requested but MPS is not available here (--device cpu or auto)")
    return torch.device(kind)


_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc's mallopt parameters (malloc.h)
_kept: bool | None = None


def keep_freed_cpu_memory() -> bool:
    """Let glibc's malloc keep and reuse freed CPU memory instead of mapping fresh pages for every large
    tensor; returns whether the setting is in force (idempotent; the first call decides).

    glibc serves an allocation above its mmap threshold (at most 32 MiB) with a fresh ``mmap`` and returns
    it with ``munmap`` when freed, so every such tensor costs a page fault per 4 KiB page on first touch.
    A training step whose activations exceed 32 MiB (the (32, 64, 8192) activations of the waveform
    network, 64 MiB each) then spends most of its time in the kernel: measured on the 2-core machine,
    0.12 training steps/s with 490,000 page faults a second, 0.40 steps/s over a 30-minute run without them.
    The process then keeps the peak of what it allocated (freed memory is reused, not returned to the system),
    as PyTorch's own CUDA caching allocator does on a GPU.

    ``mallopt(M_MMAP_MAX, 0)`` and ``mallopt(M_TRIM_THRESHOLD, -1)`` (no trimming), the same as starting Python
    with ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=<larger than any heap>``.  Only on Linux with glibc;
    ``DIFFLAB_KEEP_FREED_MEMORY=0`` turns it off.  Called by the CLI and by CPU training sessions.
    """
    global _kept
    if _kept is not None:
        return _kept
    _kept = False
    if not sys.platform.startswith("linux") or os.environ.get("DIFFLAB_KEEP_FREED_MEMORY", "1") == "0":
        return _kept
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return _kept
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _kept = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, -1))
    return _kept


def module_device(module: object, default: str | torch.device = "cpu") -> torch.device:
    """The device of ``module``'s first parameter (or buffer); ``default`` for a parameter-free callable
    (an exact Gaussian denoiser) or a non-module."""
    if isinstance(module, nn.Module):
        for t in (*module.parameters(), *module.buffers()):
            return t.device
    return torch.device(default)


def autocast(device: torch.device | str, enabled: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast for ``device``'s type (CPU and CUDA; MPS too in recent PyTorch); a no-op when not
    ``enabled``.  Only the network runs in bf16: losses, schedules and sampler state stay float32/64."""
    device = torch.device(device)
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def to_memory_format(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """``x`` in channels-last layout (NHWC strides) when asked and it is an image batch (4-D); unchanged
    otherwise.  Values and shape are the same; convolutions on GPUs (and oneDNN on CPUs) run faster in it."""
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.ndim == 4 else x


class OnDevice(nn.Module):
    """``denoiser`` run on ``device`` for a caller that keeps its own state elsewhere (the float64 likelihood
    ODE and ELBO stay on the CPU; MPS has no float64): ``x_t`` and the conditioning go to ``device``, and
    x0_hat comes back to ``x_t``'s device.  Gradients flow through both moves."""

    def __init__(self, denoiser: nn.Module, device: torch.device | str):
        super().__init__()
        self.device = torch.device(device)
        self.denoiser = denoiser.to(self.device)
        self.schedule = denoiser.schedule

    def forward(self, x_t: torch.Tensor, t: torch.Tensor | float, **cond: torch.Tensor) -> torch.Tensor:
        cond = {k: v.to(self.device) for k, v in cond.items()}
        return self.denoiser(x_t.to(self.device), t, **cond).to(x_t.device)
