r"""Thresholding the denoiser's estimate :math:`\hat x_0` at sampling time: keep it in the data range.

* **Static** (DDPM's ``clip_sample``): :math:`\hat x_0 \leftarrow \mathrm{clamp}(\hat x_0, -c, c)`.
* **Dynamic** (Saharia et al. 2022, "Photorealistic text-to-image diffusion models with deep language
  understanding", sec. 2.3): per sample, :math:`s = \min(\max(1, q_p(|\hat x_0|)), s_{max})` with
  :math:`q_p` the p-quantile over the sample's values, then :math:`\hat x_0 \leftarrow \mathrm{clamp}(\hat x_0,
  -s, s) / s`.  Values beyond the quantile are clipped and the whole estimate is scaled back into [-1, 1]; an
  estimate already inside [-1, 1] (s = 1) is left alone.  :math:`s_{max} = 1` is static clipping at 1.

Both act on the estimate the sampler steps with, so :class:`ThresholdedDenoiser` wraps the *outermost*
denoiser: after guidance, whose extrapolation :math:`D_{neg} + w(D_{pos} - D_{neg})` is what leaves the data
range at large w (Imagen thresholds the guided estimate).  The sampler's update then uses the thresholded
:math:`\hat x_0` and the :math:`\hat\epsilon` implied by it at the same :math:`x_t`.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from ..denoisers.denoiser import as_time
from ..errors import DifflabError
from .base import DenoiserWrapper, call

__all__ = ["dynamic_threshold", "ThresholdedDenoiser"]


def dynamic_threshold(x0: Tensor, ratio: float, max_value: float = math.inf) -> Tensor:
    r"""Imagen's dynamic thresholding of a batch ``x0`` ``(B, ...)``: per sample :math:`s = \min(\max(1,
    q_{ratio}(|x_0|)), s_{max})` (linear interpolation between order statistics, as :func:`torch.quantile`),
    then :math:`\mathrm{clamp}(x_0, -s, s)/s`."""
    flat = x0.abs().flatten(1)
    if flat.dtype not in (torch.float32, torch.float64):
        flat = flat.float()          # torch.quantile takes float32 and float64 only (bf16 autocast output)
    s = torch.quantile(flat, ratio, dim=1).clamp(min=1.0, max=max_value).to(x0.dtype)
    s = s.reshape(-1, *([1] * (x0.ndim - 1)))
    return torch.maximum(torch.minimum(x0, s), -s) / s


class ThresholdedDenoiser(DenoiserWrapper):
    """``inner`` with its estimate clipped to ``[-clip, clip]`` (static) or dynamically thresholded at quantile
    ``ratio`` with the scale capped at ``max_value`` (exactly one of ``clip`` and ``ratio``)."""

    def __init__(self, inner: Any, clip: float | None = None, ratio: float | None = None,
                 max_value: float = math.inf):
        super().__init__(inner)
        if (clip is None) == (ratio is None):
            raise DifflabError("x0 thresholding: give either a static clip value or a dynamic quantile, not both")
        if clip is not None and not clip > 0:
            raise DifflabError(f"x0 clip value must be > 0, got {clip}")
        if ratio is not None and not 0 < ratio <= 1:
            raise DifflabError(f"dynamic x0 threshold quantile must be in (0, 1], got {ratio}")
        if not max_value >= 1:
            raise DifflabError(f"dynamic x0 threshold maximum must be >= 1, got {max_value}")
        if clip is not None and max_value != math.inf:
            raise DifflabError("a maximum of the dynamic threshold needs dynamic thresholding, not a static clip")
        self.clip, self.ratio, self.max_value = clip, ratio, float(max_value)

    def forward(self, x_t: Tensor, t: Tensor | float, **cond: Any) -> Tensor:
        x0, self.last_nfe = call(self.inner, x_t, as_time(t, x_t), **cond)
        if self.clip is not None:
            return x0.clamp(-self.clip, self.clip)
        return dynamic_threshold(x0, self.ratio, self.max_value)
