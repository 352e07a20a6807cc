"""The default network for a data shape, sized for a 2-core CPU (the library's, the CLI's and the sweeps'
one choice)."""
from __future__ import annotations

from typing import Any, Sequence

from ..errors import DifflabError

__all__ = ["default_network"]


def default_network(shape: Sequence[int]) -> dict[str, Any]:
    """A network config (``{"type": ..., **kwargs}`` for :func:`~difflab.nn.build_network`) for samples of
    ``shape``: images (C, H, W) get a UNet of 2 levels up to 16 px, 3 levels above; points (D,) an MLP;
    waveforms (C, L) a :class:`~difflab.nn.wavenet.WaveNet`."""
    shape = tuple(shape)
    if len(shape) == 3:
        c, h, w = shape
        if max(h, w) <= 16:
            return dict(type="unet", in_channels=c, channels=[32, 64], layers_per_block=2, attention_levels=[1])
        return dict(type="unet", in_channels=c, channels=[16, 32, 64], layers_per_block=1, attention_levels=[2])
    if len(shape) == 1:
        return dict(type="mlp", dim=shape[0])
    if len(shape) == 2:   # waveforms (C, L): a DiffWave of 12 layers, receptive field 2,047 + 2 * 6 samples
        return dict(type="wavenet", in_channels=shape[0], channels=32, layers=12, cycle=10, time_embed_dim=128)
    raise DifflabError(f"no default network for samples of shape {shape}")
