"""The encoder attached to a denoiser: recorded in its checkpoint, loaded and checked with it, and the
decode step that brings its samples back to data space.

A model trained on encoded data (``LatentData``) runs in the encoder's space; ``denoiser.encoder`` holds
that encoder (a denoiser without one works on the data itself: pixels or points).  Every consumer of
samples in data space (``difflab sample``, ``difflab eval``, generators, the trainer's sample grids)
calls :func:`decode_samples` and :func:`data_space`, the one place where samples are decoded.

Checkpoint record (key ``"encoder"`` of a diffusion checkpoint's config; absent: identity, as in every
checkpoint written before encoders existed)::

    {"name": "autoencoder", "config": {... encoder.config() ...}, "digest": "<SHA-256 of config and weights>",
     "path": "/abs/path/AE_RUN/checkpoints/step_0004000", "relpath": "../AE_RUN/checkpoints/step_0004000"}

``path`` is the encoder's checkpoint folder, ``relpath`` the same relative to the diffusion run folder
(so that runs moved together still find each other).  Loading refuses, by name, an encoder that is
missing or whose digest differs from the recorded one.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

from ..errors import DifflabError
from .base import Encoder

__all__ = ["ENCODER_LOADERS", "encoder_record", "load_encoder", "check_same_encoder", "data_space",
           "decode_samples", "decode_trajectory"]


def _load_autoencoder(record: dict[str, Any], run_dir: Path | None) -> Encoder:
    from .autoencoder import AutoencoderEncoder
    places = [Path(record["path"])] if record.get("path") else []
    if record.get("relpath") and run_dir is not None:
        places.append(run_dir / record["relpath"])
    for p in places:
        if (p / "config.json").is_file():
            return AutoencoderEncoder.from_folder(p)
    raise DifflabError(f"this latent model needs the autoencoder it was trained with, which is missing: "
                       f"{' or '.join(str(p) for p in places) or '(no path recorded)'}")


# encoder name -> loader(record, diffusion run folder or None) -> Encoder
ENCODER_LOADERS: dict[str, Callable[[dict[str, Any], Path | None], Encoder]] = {"autoencoder": _load_autoencoder}


def encoder_record(encoder: Encoder, run_dir: str | os.PathLike) -> dict[str, Any]:
    """What a checkpoint of a model trained in ``encoder``'s space records about it (see the module doc)."""
    rec: dict[str, Any] = {"name": encoder.name, "config": encoder.config(), "digest": encoder.digest()}
    folder = getattr(encoder, "folder", None)
    if encoder.name in ENCODER_LOADERS and folder is None and encoder.state_dict():  # weights: found by folder
        raise DifflabError(f"the {encoder.name} encoder was not loaded from a checkpoint folder, so a model "
                           f"trained in its space could not find it again; save it and load it first")
    if folder is not None:
        folder = Path(folder).resolve()
        rec["path"] = str(folder)
        rec["relpath"] = os.path.relpath(folder, Path(run_dir).resolve())
    return rec


def load_encoder(record: dict[str, Any], run_dir: str | os.PathLike | None = None) -> Encoder:
    """The encoder a checkpoint records, refused by name if missing or if its digest differs."""
    name = record.get("name")
    if name not in ENCODER_LOADERS:
        raise DifflabError(f"checkpoint names an unknown encoder {name!r} (known: {', '.join(ENCODER_LOADERS)})")
    enc = ENCODER_LOADERS[name](record, None if run_dir is None else Path(run_dir))
    if enc.digest() != record.get("digest"):
        where = getattr(enc, "folder", None) or name
        raise DifflabError(f"the {name} at {where} is not the one this model was trained with (digest "
                           f"{enc.digest()[:12]}... != recorded {str(record.get('digest'))[:12]}...)")
    return enc.eval()


def check_same_encoder(config: dict[str, Any], encoder: Encoder | None, what: str) -> None:
    """Refuse to continue ``what`` (a checkpoint config) with data encoded by another encoder."""
    recorded = (config.get("encoder") or {}).get("digest")
    given = None if encoder is None else encoder.digest()
    if recorded != given:
        name = lambda d: "no encoder (data space)" if d is None else f"encoder {d[:12]}..."  # noqa: E731
        raise DifflabError(f"{what} was trained with {name(recorded)}; the data now given is in {name(given)}")


def data_space(denoiser: Any) -> tuple[str, tuple[int, ...]]:
    """(data kind, sample shape) of ``denoiser``'s samples once decoded."""
    enc = getattr(denoiser, "encoder", None)
    if enc is None:
        return denoiser.data_kind, tuple(denoiser.data_shape)
    return enc.data_kind, tuple(enc.data_shape)


@torch.no_grad()
def decode_samples(denoiser: Any, z: Tensor, batch_size: int = 256) -> Tensor:
    """Samples of ``denoiser`` (in its space) -> data space: decoded by its encoder, in batches; unchanged
    without one."""
    enc = getattr(denoiser, "encoder", None)
    if enc is None:
        return z
    enc.eval()
    return torch.cat([enc.decode(z[i:i + batch_size]) for i in range(0, z.shape[0], batch_size)]).float()


def decode_trajectory(denoiser: Any, traj: dict[str, Any]) -> dict[str, Any]:
    """A recorded reverse trajectory (``sample(..., trajectory=...)``) with its states and estimates decoded."""
    if getattr(denoiser, "encoder", None) is None or not traj:
        return traj
    return {**traj, **{k: [decode_samples(denoiser, x) for x in traj[k]] for k in ("x", "x0_hat")}}
