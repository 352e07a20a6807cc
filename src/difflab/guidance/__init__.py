"""Guidance and editing: wrappers that turn a denoiser into a new denoiser, so every sampler works with them.

* :class:`ClassifierFreeGuidance`, :class:`Autoguidance` (with the guidance interval and rescaling),
  :class:`ClassifierGuidance`;
* :class:`ThresholdedDenoiser`: static clipping or dynamic thresholding of the (guided) x0 estimate;
* :class:`ConstrainedDenoiser` for inpainting and super-resolution, :func:`inpaint`, :func:`super_resolve`,
  :func:`img2img` (SDEdit).

Convention: guidance scale w = 1 is the model itself, w = 0 the weaker prediction (unconditional model, or the
weaker model of autoguidance), w > 1 guides.
"""
from __future__ import annotations

import math
from typing import Any, Callable

from torch import Tensor

from ..errors import DifflabError
from .base import DenoiserWrapper
from .cfg import Autoguidance, ClassifierFreeGuidance, rescale_guided
from .classifier import ClassifierGuidance
from .thresholding import ThresholdedDenoiser, dynamic_threshold
from .editing import (MASKS, POSTERIORS, ConstrainedDenoiser, LinearOperator, bicubic_upsample, conjugate_gradient,
                      downsampling_operator, img2img, inpaint, inpainting_operator, make_mask, super_resolve)

__all__ = ["DenoiserWrapper", "ClassifierFreeGuidance", "Autoguidance", "ClassifierGuidance", "rescale_guided",
           "ThresholdedDenoiser", "dynamic_threshold", "ConstrainedDenoiser", "LinearOperator", "POSTERIORS",
           "conjugate_gradient", "inpainting_operator", "downsampling_operator", "make_mask", "MASKS", "inpaint",
           "super_resolve", "img2img", "bicubic_upsample", "guided_denoiser", "class_labels"]


def guided_denoiser(denoiser: Any, scale: float = 1.0, autoguide: Any | None = None,
                    interval: tuple[float, float] | None = None, rescale: float = 0.0,
                    classifier: Callable[[Tensor, Tensor], Tensor] | None = None,
                    classifier_scale: float = 0.0,
                    classifier_interval: tuple[float, float] | None = None, clip_x0: float | None = None,
                    threshold: float | None = None, threshold_max: float = math.inf) -> Any:
    """The denoiser with the guidance asked for: autoguidance by ``autoguide`` (a weaker denoiser) or, for a
    class-conditional model, classifier-free guidance, at ``scale`` (1: none) on the noise levels of
    ``interval``; then classifier guidance by ``classifier`` at ``classifier_scale`` (0: none) on those of
    ``classifier_interval``; last, the guided estimate clipped to ``[-clip_x0, clip_x0]`` or dynamically
    thresholded at quantile ``threshold`` (:class:`ThresholdedDenoiser`; None: neither)."""
    if scale != 1.0 or interval is not None or rescale:
        if autoguide is not None:
            denoiser = Autoguidance(denoiser, autoguide, scale, interval, rescale)
        elif int(getattr(denoiser, "num_classes", 0)) > 0:
            denoiser = ClassifierFreeGuidance(denoiser, scale, interval, rescale)
        else:
            raise DifflabError("a guidance scale needs a class-conditional model (classifier-free guidance) or "
                               "a weaker model to guide with (--autoguide CKPT); this model is unconditional")
    elif autoguide is not None:
        raise DifflabError("--autoguide needs a guidance scale other than 1 (--guidance W)")
    if classifier_interval is not None and (classifier is None or not classifier_scale):
        raise DifflabError("a classifier guidance interval needs classifier guidance (a classifier and a scale)")
    if classifier is not None and classifier_scale:
        denoiser = ClassifierGuidance(denoiser, classifier, classifier_scale, interval=classifier_interval)
    if clip_x0 is not None or threshold is not None:
        denoiser = ThresholdedDenoiser(denoiser, clip_x0, threshold, threshold_max)
    return denoiser


def class_labels(denoiser: Any, spec: str | int, n: int) -> tuple[Tensor, int | None]:
    """Labels for ``n`` samples of class ``spec`` (an index or a class name), or for ``spec == "all"`` ``n``
    samples of every class in turn; and the grid row length that shows one class a row (None otherwise)."""
    import torch

    from ..nn.conditioning import check_labels
    k = int(getattr(denoiser, "num_classes", 0))
    names = list(getattr(denoiser, "classes", None) or [])
    if str(spec) == "all":
        check_labels(torch.zeros(1, dtype=torch.long), k)
        return torch.arange(k).repeat_interleave(n), n
    if str(spec) in names and not str(spec).lstrip("-").isdigit():
        label = names.index(str(spec))
    else:
        try:
            label = int(spec)
        except ValueError:
            raise DifflabError(f"unknown class {spec!r}; the model's classes: {', '.join(names) or 'none'}") from None
    return check_labels(torch.full((n,), label), k, allow_null=False), None
