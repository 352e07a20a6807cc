"""Networks with no diffusion knowledge: ``net(x, timestep, **cond) -> y`` with ``y.shape == x.shape``."""
from __future__ import annotations

from typing import Any

from torch import nn

from ..io import build_registered
from .defaults import default_network
from .mlp import MLP
from .unet import UNet, timestep_embedding
from .wavenet import WaveNet

NETWORKS: dict[str, type[nn.Module]] = {"unet": UNet, "mlp": MLP, "wavenet": WaveNet}


def build_network(cfg: dict[str, Any]) -> nn.Module:
    """Build a network from ``{"type": name, **kwargs}`` (checkpoint configs, :func:`default_network`)."""
    return build_registered(NETWORKS, cfg, "type", "network", default="unet")


__all__ = ["MLP", "UNet", "WaveNet", "timestep_embedding", "build_network", "default_network", "NETWORKS"]
