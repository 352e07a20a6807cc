"""Networks with no diffusion knowledge: ``net(x, timestep, **cond) -> y`` with ``y.shape == x.shape``."""
from __future__ import annotations

from typing import Any

from torch import nn

from ..errors import DifflabError
from .conditioning import LabelEmbedding, check_labels
from .defaults import default_network
from .mlp import MLP
from .mp import MPUNet
from .unet import UNet, timestep_embedding
from .wavenet import WaveNet

NETWORKS: dict[str, type[nn.Module]] = {"unet": UNet, "unet_mp": MPUNet, "mlp": MLP, "wavenet": WaveNet}


def build_network(cfg: dict[str, Any]) -> nn.Module:
    """Build a network from ``{"type": name, **kwargs}`` (checkpoint configs, :func:`default_network`)."""
    cfg = dict(cfg)
    kind = cfg.pop("type", "unet")
    if kind not in NETWORKS:
        raise DifflabError(f"unknown network type {kind!r}; choose from {', '.join(NETWORKS)}")
    try:
        return NETWORKS[kind](**cfg)
    except TypeError as e:
        raise DifflabError(f"bad network config: {e}") from None


__all__ = ["MLP", "UNet", "MPUNet", "WaveNet", "timestep_embedding", "build_network", "default_network", "NETWORKS",
           "LabelEmbedding", "check_labels"]
