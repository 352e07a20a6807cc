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
import os
import torch
from torch import nn

from .errors import DifflabError

__all__ = ["DEVICES", "resolve_device", "module_device", "autocast", "to_memory_format", "OnDevice"]

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
