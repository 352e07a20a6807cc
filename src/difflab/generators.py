"""Generators: anything that draws samples in data space, ``sample(n, seed) -> x``, so that diffusion models,
GANs and VAEs are compared through one API (``difflab compare``).

Sample i of ``sample(n, seed)`` depends only on (seed, i), on every device and batch size.
:func:`load_generator` opens a run folder or checkpoint of any kind by the ``format`` its config names;
each model family adds its loader to ``GENERATOR_LOADERS``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, runtime_checkable

from torch import Tensor

from .encoders.attached import data_space, decode_samples
from .errors import DifflabError

__all__ = ["Generator", "DiffusionGenerator", "GENERATOR_LOADERS", "load_generator"]


@runtime_checkable
class Generator(Protocol):
    """Draws ``n`` samples in data space; sample i depends only on (seed, i).  ``nfe`` is the network
    evaluations per sample of the last call, ``data_kind`` and ``data_shape`` what the samples are."""

    data_kind: str
    data_shape: tuple[int, ...]
    nfe: int

    def sample(self, n: int, seed: int = 0) -> Tensor: ...


@dataclass
class DiffusionGenerator:
    """A denoiser with a sampler setting (``sampler``, ``steps`` and its options)."""

    denoiser: Any
    sampler: str = "dpmpp_2m"
    steps: int = 20
    options: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 256
    progress: bool = False
    nfe: int = 0

    @property
    def data_kind(self) -> str:
        return data_space(self.denoiser)[0]

    @property
    def data_shape(self) -> tuple[int, ...]:
        return data_space(self.denoiser)[1]

    def sample(self, n: int, seed: int = 0) -> Tensor:
        from .sampling import sample
        res = sample(self.denoiser, n=n, sampler=self.sampler, steps=self.steps, seed=seed,
                     batch_size=self.batch_size, progress=self.progress, **self.options)
        self.nfe = res.nfe
        return decode_samples(self.denoiser, res.x)  # latent models: decoded to data space


def _load_diffusion(path: str | os.PathLike, **options: Any) -> Generator:
    from .train import load_checkpoint
    return DiffusionGenerator(load_checkpoint(path).denoiser("ema"), **options)


def _load_vae(path: str | os.PathLike, batch_size: int = 256, **sampler_options: Any) -> Generator:
    """A KL autoencoder decoding prior samples (sampler options do not apply to it)."""
    from .encoders.autoencoder import AutoencoderEncoder, VAEGenerator
    return VAEGenerator(AutoencoderEncoder.from_folder(path), batch_size=batch_size)


def _load_gan(path: str | os.PathLike, **options: Any) -> Generator:
    from .baselines import load_gan_generator
    return load_gan_generator(path, **options)


# config "format" -> loader(path, **options) -> Generator
GENERATOR_LOADERS: dict[str, Callable[..., Generator]] = {"difflab-checkpoint": _load_diffusion,
                                                          "difflab-autoencoder": _load_vae,
                                                          "difflab-gan": _load_gan}


def load_generator(path: str | os.PathLike, **options: Any) -> Generator:
    """The generator of a run folder or checkpoint, by the ``format`` of its config.json."""
    from .io import read_json
    from .train.checkpoint import resolve_checkpoint
    folder, _ = resolve_checkpoint(path)
    fmt = read_json(folder / "config.json", "checkpoint config").get("format")
    if fmt not in GENERATOR_LOADERS:
        raise DifflabError(f"{folder}: no generator for checkpoints of format {fmt!r} "
                           f"(known: {', '.join(GENERATOR_LOADERS)})")
    return GENERATOR_LOADERS[fmt](folder, **options)
