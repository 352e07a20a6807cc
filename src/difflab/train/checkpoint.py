"""Checkpoints: a folder with ``config.json`` and safetensors files; nothing is unpickled.

Layout of a run folder::

    RUN/checkpoints/step_0001000/config.json        format version, network, schedule,
                                                  parameterisation, data shape, step, checksums
    RUN/checkpoints/step_0001000/model.safetensors  trained weights
    RUN/checkpoints/step_0001000/ema.safetensors    EMA weights (used for sampling)
    RUN/checkpoints/step_0001000/train_state.safetensors   optimizer moments, RNG states
    RUN/checkpoints/latest                          name of the newest complete checkpoint

A checkpoint is written to a temporary folder, flushed, and renamed into place; only then is
``latest`` replaced (atomically).  A crash mid-write leaves the previous checkpoint intact.
Every weight file's SHA-256 is recorded, so a truncated or corrupt file is refused by name.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..denoisers.denoiser import Denoiser
from ..errors import DifflabError
from ..nn import build_network
from ..process.schedules import schedule_from_config

__all__ = ["FORMAT", "FORMAT_VERSION", "Checkpoint", "save_checkpoint", "load_checkpoint",
           "resolve_checkpoint", "model_config", "build_denoiser", "atomic_write_text"]

FORMAT = "difflab-checkpoint"
FORMAT_VERSION = 1


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and ``os.replace``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def model_config(denoiser: Denoiser, data_shape: tuple[int, ...]) -> dict[str, Any]:
    """What is needed to rebuild ``denoiser``: network, schedule and parameterisation."""
    net = denoiser.net
    return {
        "network": {"type": getattr(net, "network_type", "unet"), **net.config},
        "schedule": denoiser.schedule.config(),
        "prediction": denoiser.prediction,
        "clip_x0": denoiser.clip_x0,
        "sigma_data": denoiser.sigma_data,
        "data_shape": list(data_shape),
    }


def build_denoiser(cfg: dict[str, Any]) -> Denoiser:
    """Inverse of :func:`model_config`."""
    try:
        den = Denoiser(build_network(cfg["network"]), schedule_from_config(cfg["schedule"]),
                       cfg["prediction"], cfg.get("clip_x0"), cfg.get("sigma_data", 0.5))
        den.data_shape = tuple(cfg["data_shape"])
    except KeyError as e:
        raise DifflabError(f"checkpoint config lacks the field {e}") from None
    return den


def _state_to_tensors(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    """Optimizer state -> flat tensors (``state.<param>.<key>``) + JSON param groups."""
    tensors = {}
    for pid, st in state["state"].items():
        for k, v in st.items():
            tensors[f"state.{pid}.{k}"] = v if isinstance(v, torch.Tensor) else torch.tensor(v)
    return tensors, state["param_groups"]


def _tensors_to_state(tensors: dict[str, torch.Tensor], groups: list[dict[str, Any]]) -> dict[str, Any]:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, v in tensors.items():
        if name.startswith("state."):
            _, pid, k = name.split(".", 2)
            state.setdefault(int(pid), {})[k] = v
    return {"state": state, "param_groups": groups}


def save_checkpoint(run_dir: str | os.PathLike, denoiser: Denoiser, data_shape: tuple[int, ...], step: int,
                    ema: nn.Module | None = None, optimizer: torch.optim.Optimizer | None = None,
                    extra_state: dict[str, torch.Tensor] | None = None, training: dict[str, Any] | None = None,
                    keep: int = 3) -> Path:
    """Write checkpoint ``step`` of ``run_dir`` atomically and point ``latest`` at it."""
    from safetensors.torch import save_file

    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    name = f"step_{step:07d}"
    tmp = root / f".tmp-{name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    cfg: dict[str, Any] = {"format": FORMAT, "format_version": FORMAT_VERSION,
                           **model_config(denoiser, data_shape), "step": step, "training": training or {}}
    files = {"model.safetensors": {k: v.detach().contiguous() for k, v in denoiser.net.state_dict().items()}}
    if ema is not None:
        files["ema.safetensors"] = {k: v.detach().contiguous() for k, v in ema.state_dict().items()}
    state: dict[str, torch.Tensor] = dict(extra_state or {})
    if optimizer is not None:
        opt_tensors, groups = _state_to_tensors(optimizer.state_dict())
        state.update(opt_tensors)
        cfg["optimizer_param_groups"] = groups
    if state:
        files["train_state.safetensors"] = {k: v.contiguous() for k, v in state.items()}
    cfg["files"] = {}
    for fname, tensors in files.items():
        save_file(tensors, str(tmp / fname))
        with open(tmp / fname, "rb+") as f:
            os.fsync(f.fileno())
        cfg["files"][fname] = _sha256(tmp / fname)
    with open(tmp / "config.json", "w") as f:
        json.dump(cfg, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    final = root / name
    if final.exists():  # re-saving the same step (e.g. an interrupt right after a save)
        trash = root / f".old-{name}-{os.getpid()}"
        os.rename(final, trash)
        os.rename(tmp, final)
        shutil.rmtree(trash)
    else:
        os.rename(tmp, final)
    _fsync_dir(root)
    atomic_write_text(root / "latest", name + "\n")
    old = sorted(p for p in root.glob("step_*") if p.is_dir() and p.name != name)
    for p in old[: max(0, len(old) - (keep - 1))]:
        shutil.rmtree(p, ignore_errors=True)
    return final


def resolve_checkpoint(path: str | os.PathLike) -> tuple[Path, str | None]:
    """A run folder, a checkpoint folder, its config.json or one of its weight files ->
    (checkpoint folder, weights file name or None)."""
    p = Path(path)
    if not p.exists():
        raise DifflabError(f"checkpoint not found: {p}")
    if p.is_file():
        if p.suffix == ".safetensors":
            return p.parent, p.name
        if p.name == "config.json":
            return p.parent, None
        raise DifflabError(f"{p} is not a checkpoint: expected a run folder, a checkpoint folder, "
                           f"its config.json or a .safetensors file")
    for root in (p / "checkpoints", p):
        latest = root / "latest"
        if latest.is_file():
            name = latest.read_text().strip()
            if not (root / name / "config.json").is_file():
                raise DifflabError(f"{latest} points to {name}, which is not a complete checkpoint")
            return root / name, None
    if (p / "config.json").is_file():
        return p, None
    raise DifflabError(f"no checkpoint in {p}: expected checkpoints/latest or config.json")


@dataclass
class Checkpoint:
    path: Path
    config: dict[str, Any]

    @property
    def step(self) -> int:
        return int(self.config.get("step", 0))

    def tensors(self, fname: str) -> dict[str, torch.Tensor]:
        from safetensors.torch import load_file

        f = self.path / fname
        if not f.is_file():
            raise DifflabError(f"checkpoint file missing: {f}")
        expected = self.config.get("files", {}).get(fname)
        if expected is not None and _sha256(f) != expected:
            raise DifflabError(f"checkpoint file {f} is corrupt or truncated (SHA-256 does not match config.json)")
        try:
            return load_file(str(f))
        except Exception as e:  # safetensors raises its own error types (names differ across versions)
            raise DifflabError(f"checkpoint file {f} is corrupt or truncated: {e}") from None

    def denoiser(self, weights: str = "ema") -> Denoiser:
        """The denoiser with ``ema`` (default, falls back to ``model``) or ``model`` weights."""
        den = build_denoiser(self.config)
        fname = f"{weights}.safetensors"
        if weights == "ema" and fname not in self.config.get("files", {}):
            fname = "model.safetensors"
        try:
            den.net.load_state_dict(self.tensors(fname))
        except RuntimeError as e:
            raise DifflabError(f"weights in {self.path / fname} do not fit the network in config.json: "
                               f"{str(e).splitlines()[0]}") from None
        return den.eval()


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Open a checkpoint (see :func:`resolve_checkpoint` for the accepted paths) and check its format."""
    folder, _ = resolve_checkpoint(path)
    cfg_path = folder / "config.json"
    try:
        cfg = json.loads(cfg_path.read_text())
    except FileNotFoundError:
        raise DifflabError(f"checkpoint config missing: {cfg_path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DifflabError(f"checkpoint config {cfg_path} is corrupt: {e}") from None
    if not isinstance(cfg, dict) or cfg.get("format") != FORMAT:
        raise DifflabError(f"{cfg_path} is not a difflab checkpoint config")
    if cfg.get("format_version") != FORMAT_VERSION:
        raise DifflabError(f"checkpoint {folder} has format version {cfg.get('format_version')}; "
                           f"this difflab reads version {FORMAT_VERSION}")
    return Checkpoint(folder, cfg)
