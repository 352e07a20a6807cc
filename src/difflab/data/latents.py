"""Latent data: a data set encoded once by an encoder (latent diffusion, Rombach et al., arXiv:2112.10752).

:class:`LatentData` (kind ``"latents"``) holds the scaled latents ``x`` ``(N, c, h, w)`` of a data set, its
labels and class names, and the encoder that made them, so that a model trained on it records that
encoder in its checkpoint (:mod:`difflab.encoders.attached`).  Latents have about unit standard deviation
(the encoder's scale) and no natural range, so x0_hat is not clipped.

:func:`encode_dataset` computes the latents once and caches them under ``$DIFFLAB_CACHE/latents`` (default
``~/.cache/difflab/latents``), keyed by the SHA-256 of the encoder's digest and the data; a changed
encoder or data set misses the cache, a broken entry is recomputed.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from ..errors import DifflabError
from ..io import cache_dir as _cache_dir
from ..io import load_bundle_tensors, read_json, save_bundle, sha256_bytes
from .kinds import DATA_KINDS, Dataset

__all__ = ["LatentData", "encode_dataset", "latent_cache_dir"]

CACHE_FORMAT = "difflab-latents"


@dataclass
class LatentData(Dataset):
    """Scaled latents ``x`` ``(N, c, h, w)`` of a data set, its ``labels``, and ``encoder`` (the
    :class:`~difflab.encoders.base.Encoder` whose ``encode`` produced them)."""

    name: str = "latents"
    encoder: Any = None
    kind: ClassVar[str] = "latents"
    clip_x0: ClassVar[float | None] = None


DATA_KINDS[LatentData.kind] = LatentData


def latent_cache_dir() -> Path:
    return _cache_dir("latents")


@torch.no_grad()
def _encode(data: Dataset, encoder: Any, batch_size: int, progress: bool) -> torch.Tensor:
    starts = range(0, len(data), batch_size)
    if progress:
        from tqdm.auto import tqdm
        starts = tqdm(starts, desc=f"encoding {data.name}", unit="batch", leave=False)
    encoder.eval()
    return torch.cat([encoder.encode(data.x[i:i + batch_size]) for i in starts]).float()


def encode_dataset(data: Dataset, encoder: Any, batch_size: int = 256, use_cache: bool = True,
                   progress: bool = False) -> LatentData:
    """``data`` encoded by ``encoder`` (``encoder.encode(x)``, scale included), as :class:`LatentData`;
    computed once per (encoder digest, data) and cached (see the module doc)."""
    if isinstance(data, LatentData):
        raise DifflabError(f"{data.name} is already encoded")
    digest = encoder.digest()
    key = sha256_bytes([CACHE_FORMAT, digest, str(tuple(data.x.shape)), str(data.x.dtype), data.x])[:32]
    folder, cfg_name = latent_cache_dir(), f"{key}.json"
    z = None
    if use_cache and (folder / cfg_name).is_file():
        try:
            z = load_bundle_tensors(folder, read_json(folder / cfg_name, "cached latents"), f"{key}.safetensors",
                                    what="cached latents")["latents"]
        except (DifflabError, KeyError):
            z = None  # a broken entry is recomputed and rewritten
    if z is None:
        z = _encode(data, encoder, batch_size, progress)
        if use_cache:
            save_bundle(folder, cfg_name, {"format": CACHE_FORMAT, "format_version": 1, "encoder_digest": digest,
                                           "data": data.name, "n": len(data), "data_shape": list(data.shape)},
                        {f"{key}.safetensors": {"latents": z}})
    info = {**data.info, "encoded_from": {"name": data.name, "kind": data.kind, "shape": list(data.shape)},
            "encoder_digest": digest}
    return LatentData(z, data.labels, name=f"{data.name} ({encoder.name} latents)", info=info,
                      classes=data.classes, encoder=encoder)
