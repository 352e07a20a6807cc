"""A new denoiser for a data shape: the default network (or one given), a schedule and a parameterisation
(what ``difflab train`` builds from its flags)."""
from __future__ import annotations

import inspect
from typing import Any, Sequence

import torch

from ..data.kinds import kind_of_shape
from ..nn import NETWORKS, build_network, default_network
from ..process.schedules import Schedule, schedule_from_spec
from .denoiser import Denoiser

__all__ = ["create_denoiser"]


def create_denoiser(shape: Sequence[int], network: dict[str, Any] | None = None,
                    schedule: str | dict[str, Any] | Schedule = "cosine", timesteps: int | None = 1000,
                    prediction: str = "v", clip_x0: float | None = 1.0, sigma_data: float = 0.5,
                    seed: int | None = None) -> Denoiser:
    """A freshly initialised :class:`Denoiser` for samples of ``shape``.

    Args:
        network: network options laid over :func:`~difflab.nn.default_network` of the shape (``{"type":
            "unet", "channels": [32, 64]}``, or only the fields to change); another ``type`` keeps the default's
            options that it also takes (``{"type": "unet_mp"}``: the magnitude-preserving UNet at the default's
            widths, depth and attention levels).
        schedule, timesteps: a schedule spec (:func:`~difflab.process.schedule_from_spec`); VP schedules
            become ``timesteps``-step tables (None or 0: continuous time).
        seed: seeds the global RNG before the network is built, so its initial weights are reproducible.
    """
    cfg = default_network(shape)
    if network:
        kind = network.get("type", cfg["type"])
        if kind != cfg["type"] and kind in NETWORKS:   # another network: keep the default's options it shares
            accepts = inspect.signature(NETWORKS[kind]).parameters
            cfg = {k: v for k, v in cfg.items() if k in accepts}
        cfg = {**cfg, **network}
    if seed is not None:
        torch.manual_seed(seed)
    net = build_network(cfg)
    if hasattr(net, "check_input"):
        net.check_input(tuple(shape))
    den = Denoiser(net, schedule_from_spec(schedule, timesteps), prediction, clip_x0=clip_x0, sigma_data=sigma_data)
    den.data_shape = tuple(shape)
    den.data_kind = kind_of_shape(den.data_shape)
    return den
