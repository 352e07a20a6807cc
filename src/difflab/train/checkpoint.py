"""Checkpoints: a folder with ``config.json`` and safetensors files; nothing is unpickled.

Layout of a run folder::

    RUN/checkpoints/step_0001000/config.json        format version, network, schedule,
                                                  parameterisation, data kind and shape, step, checksums
    RUN/checkpoints/step_0001000/model.safetensors  trained weights
    RUN/checkpoints/step_0001000/ema.safetensors    EMA weights (used for sampling)
    RUN/checkpoints/step_0001000/train_state.safetensors   optimizer moments, RNG states
    RUN/checkpoints/latest                          name of the newest complete checkpoint

A checkpoint is written to a temporary folder, flushed, and renamed into place; only then is
``latest`` replaced (atomically).  A crash mid-write leaves the previous checkpoint intact.
Every weight file's SHA-256 is recorded, so a truncated or corrupt file is refused by name.

:func:`write_checkpoint` is the format-free part (any trainer's files, this atomic protocol);
:func:`save_checkpoint` and :class:`Checkpoint` add the denoiser's config, and
:func:`optimizer_tensors` / :meth:`Checkpoint.restore_optimizer` carry an optimizer across a resume.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data import DATA_KINDS, kind_of_shape
from ..denoisers.denoiser import Denoiser
from ..errors import DifflabError
from ..io import atomic_write_json, atomic_write_text, check_format, fsync_dir, load_bundle_tensors, read_json, \
    save_tensors
from ..nn import build_network
from ..process.schedules import schedule_from_config

__all__ = ["FORMAT", "FORMAT_VERSION", "Checkpoint", "save_checkpoint", "write_checkpoint", "load_checkpoint",
           "resolve_checkpoint", "model_config", "build_denoiser", "optimizer_tensors", "training_state"]

FORMAT = "difflab-checkpoint"
FORMAT_VERSION = 1


def model_config(denoiser: Denoiser, data_shape: tuple[int, ...], data_kind: str | None = None) -> dict[str, Any]:
    """What is needed to rebuild ``denoiser``: network, schedule, parameterisation, data kind and shape."""
    net = denoiser.net
    return {
        "network": {"type": getattr(net, "network_type", "unet"), **net.config},
        "schedule": denoiser.schedule.config(),
        "prediction": denoiser.prediction,
        "clip_x0": denoiser.clip_x0,
        "sigma_data": denoiser.sigma_data,
        "data_kind": data_kind or kind_of_shape(data_shape),
        "data_shape": list(data_shape),
        "classes": denoiser.classes,
    }


def build_denoiser(cfg: dict[str, Any]) -> Denoiser:
    """Inverse of :func:`model_config` (checkpoints written before ``data_kind`` was recorded get the kind
    of their data shape)."""
    try:
        den = Denoiser(build_network(cfg["network"]), schedule_from_config(cfg["schedule"]),
                       cfg["prediction"], cfg.get("clip_x0"), cfg.get("sigma_data", 0.5))
        den.data_shape = tuple(cfg["data_shape"])
    except KeyError as e:
        raise DifflabError(f"checkpoint config lacks the field {e}") from None
    den.classes = cfg.get("classes")
    if den.num_classes and (den.classes is None or len(den.classes) != den.num_classes):
        raise DifflabError(f"checkpoint config: a network of {den.num_classes} classes needs their {den.num_classes} "
                           f"names in 'classes'")
    kind = cfg.get("data_kind") or kind_of_shape(den.data_shape)
    if kind not in DATA_KINDS:
        raise DifflabError(f"checkpoint config names an unknown data kind {kind!r}")
    den.data_kind = kind
    return den


# -- optimizer state as flat tensors + JSON groups ---------------------------------------------------
def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    """An optimizer's state as flat tensors (``state.<param>.<key>``) and its JSON param groups."""
    state = optimizer.state_dict()
    tensors = {}
    for pid, st in state["state"].items():
        for k, v in st.items():
            tensors[f"state.{pid}.{k}"] = v if isinstance(v, torch.Tensor) else torch.tensor(v)
    return tensors, state["param_groups"]


def _optimizer_state(tensors: dict[str, torch.Tensor], groups: list[dict[str, Any]]) -> dict[str, Any]:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, v in tensors.items():
        if name.startswith("state."):
            _, pid, k = name.split(".", 2)
            state.setdefault(int(pid), {})[k] = v
    return {"state": state, "param_groups": groups}


def training_state(generator: torch.Generator, ema: Any) -> dict[str, torch.Tensor]:
    """The random streams and EMA counter that, with the optimizer, make a resumed run continue exactly:
    the trainer's generator (batches, t, noise), the global RNG (dropout) and the EMA update count."""
    return {"rng.train": generator.get_state(), "rng.global": torch.get_rng_state(),
            "ema.updates": torch.tensor(ema.updates)}


# -- writing -----------------------------------------------------------------------------------------
def write_checkpoint(run_dir: str | os.PathLike, step: int, config: dict[str, Any],
                     files: dict[str, dict[str, torch.Tensor]], keep: int = 3) -> Path:
    """Write ``RUN/checkpoints/step_<step>/`` (``config.json`` with the files' SHA-256, and each
    ``files[name]`` as safetensors) into a temporary folder, rename it into place, point ``latest`` at
    it and delete all but the newest ``keep`` checkpoints."""
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    name = f"step_{step:07d}"
    tmp = root / f".tmp-{name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    digests = {fname: save_tensors(tensors, tmp / fname) for fname, tensors in files.items()}
    atomic_write_json(tmp / "config.json", {**config, "step": step, "files": digests})
    final = root / name
    if final.exists():  # re-saving the same step (e.g. an interrupt right after a save)
        trash = root / f".old-{name}-{os.getpid()}"
        os.rename(final, trash)
        os.rename(tmp, final)
        shutil.rmtree(trash)
    else:
        os.rename(tmp, final)
    fsync_dir(root)
    atomic_write_text(root / "latest", name + "\n")
    old = sorted(p for p in root.glob("step_*") if p.is_dir() and p.name != name)
    for p in old[: max(0, len(old) - (keep - 1))]:
        shutil.rmtree(p, ignore_errors=True)
    return final


def save_checkpoint(run_dir: str | os.PathLike, denoiser: Denoiser, data_shape: tuple[int, ...], step: int,
                    ema: nn.Module | None = None, optimizer: torch.optim.Optimizer | None = None,
                    extra_state: dict[str, torch.Tensor] | None = None, training: dict[str, Any] | None = None,
                    keep: int = 3, data_kind: str | None = None, encoder: Any = None) -> Path:
    """Write checkpoint ``step`` of ``run_dir`` atomically and point ``latest`` at it; a model trained in an
    ``encoder``'s space records it (:func:`~difflab.encoders.attached.encoder_record`)."""
    cfg: dict[str, Any] = {"format": FORMAT, "format_version": FORMAT_VERSION,
                           **model_config(denoiser, data_shape, data_kind), "training": training or {}}
    if encoder is not None:
        from ..encoders.attached import encoder_record
        cfg["encoder"] = encoder_record(encoder, run_dir)
    files = {"model.safetensors": denoiser.net.state_dict()}
    if ema is not None:
        files["ema.safetensors"] = ema.state_dict()
    state: dict[str, torch.Tensor] = dict(extra_state or {})
    if optimizer is not None:
        opt_tensors, cfg["optimizer_param_groups"] = optimizer_tensors(optimizer)
        state.update(opt_tensors)
    if state:
        files["train_state.safetensors"] = state
    return write_checkpoint(run_dir, step, cfg, files, keep)


# -- reading -----------------------------------------------------------------------------------------
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
        """The tensors of one file, checked against the SHA-256 in config.json."""
        return load_bundle_tensors(self.path, self.config, fname, what="checkpoint file")

    def encoder(self) -> Any:
        """The encoder this model was trained in the space of (None: the data itself), loaded and checked
        against the recorded digest (:func:`~difflab.encoders.attached.load_encoder`)."""
        if not self.config.get("encoder"):
            return None
        from ..encoders.attached import load_encoder
        run_dir = self.path.parent.parent if self.path.parent.name == "checkpoints" else self.path.parent
        return load_encoder(self.config["encoder"], run_dir)

    def denoiser(self, weights: str = "ema") -> Denoiser:
        """The denoiser with ``ema`` (default, falls back to ``model``) or ``model`` weights, and
        ``.encoder`` if it runs in an encoder's space."""
        den = build_denoiser(self.config)
        if self.config.get("encoder"):
            den.encoder = self.encoder()
        fname = f"{weights}.safetensors"
        if weights == "ema" and fname not in self.config.get("files", {}):
            fname = "model.safetensors"
        try:
            den.net.load_state_dict(self.tensors(fname))
        except RuntimeError as e:
            raise DifflabError(f"weights in {self.path / fname} do not fit the network in config.json: "
                               f"{str(e).splitlines()[0]}") from None
        return den.eval()

    def restore_optimizer(self, optimizer: torch.optim.Optimizer, state: dict[str, torch.Tensor] | None = None) -> None:
        """Load the saved optimizer moments into ``optimizer``, keeping ``optimizer``'s own settings (betas,
        weight decay, fused kernel: this invocation's, not the saved ones).  They are given to the load
        itself, so that torch places the state as they need (a fused kernel wants ``step`` on the
        parameters' device, which a checkpoint saved unfused would not have)."""
        if "optimizer_param_groups" not in self.config:
            raise DifflabError(f"checkpoint {self.path} holds no optimizer state; it cannot be resumed")
        state = self.tensors("train_state.safetensors") if state is None else state
        settings = {k: v for k, v in optimizer.param_groups[0].items() if k != "params"}
        groups = [{**g, **settings} for g in self.config["optimizer_param_groups"]]
        optimizer.load_state_dict(_optimizer_state(state, groups))


    def restore_training(self, net: nn.Module, ema: Any, optimizer: torch.optim.Optimizer,
                         generator: torch.Generator) -> int:
        """Put a run back where this checkpoint left it: weights, EMA weights and count, optimizer moments
        (:meth:`restore_optimizer`), random streams (:func:`training_state`).  Returns the step."""
        state = self.tensors("train_state.safetensors")
        net.load_state_dict(self.tensors("model.safetensors"))
        ema.model.load_state_dict(self.tensors("ema.safetensors"))
        ema.updates = int(state["ema.updates"])
        self.restore_optimizer(optimizer, state)
        generator.set_state(state["rng.train"])
        torch.set_rng_state(state["rng.global"])
        return self.step


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Open a checkpoint (see :func:`resolve_checkpoint` for the accepted paths) and check its format."""
    folder, _ = resolve_checkpoint(path)
    cfg_path = folder / "config.json"
    cfg = read_json(cfg_path, "checkpoint config")
    if cfg.get("format") != FORMAT:
        raise DifflabError(f"{cfg_path} is not a difflab checkpoint config")
    check_format(cfg, FORMAT, (FORMAT_VERSION,), f"checkpoint {folder}")
    return Checkpoint(folder, cfg)
