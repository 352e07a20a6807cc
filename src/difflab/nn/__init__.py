"""Networks with no diffusion knowledge."""
from .mlp import MLP
from .unet import UNet, timestep_embedding

NETWORKS = {"unet": UNet, "mlp": MLP}


def build_network(cfg: dict):
    """Build a network from ``{"type": name, **kwargs}`` (checkpoint configs)."""
    from ..errors import DifflabError
    cfg = dict(cfg)
    kind = cfg.pop("type", "unet")
    if kind not in NETWORKS:
        raise DifflabError(f"unknown network type {kind!r}; choose from {', '.join(NETWORKS)}")
    try:
        return NETWORKS[kind](**cfg)
    except TypeError as e:
        raise DifflabError(f"bad network config: {e}") from None


__all__ = ["MLP", "UNet", "timestep_embedding", "build_network", "NETWORKS"]
