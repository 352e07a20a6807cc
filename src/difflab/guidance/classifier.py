r"""Classifier guidance (Dhariwal & Nichol, arXiv:2105.05233, sec. 4): the gradient of a noise-aware
classifier's :math:`\log p(y \mid x_t)` is added to the model's score with a scale s,

.. math:: \nabla\log p_s(x_t \mid y) = \nabla\log p(x_t) + s\,\nabla_{x_t}\log p(y \mid x_t),

which in terms of the denoiser (Tweedie: :math:`\nabla\log p = (\alpha\hat x_0 - x_t)/\sigma^2`) is

.. math:: \hat x_0' = \hat x_0 + s\,\frac{\sigma_t^2}{\alpha_t}\,\nabla_{x_t}\log p(y \mid x_t).

The classifier is any ``classifier(x_t, t) -> logits (B, K)``: a :class:`~difflab.metrics.SmallCNN` trained on
noisy images (``difflab train-classifier --noisy``, with the model's schedule), or an exact posterior.
Each call evaluates the model and the classifier (with its backward pass): 2 evaluations per sample.

``interval = (lo, hi)`` guides only where :math:`\tilde\sigma = \sigma/\alpha` lies in (lo, hi] (elsewhere the
model alone, 1 evaluation).  The factor :math:`\sigma^2/\alpha` is :math:`\tilde\sigma^2\alpha`: at the top
of a cosine schedule (:math:`\tilde\sigma \sim 10^4`) it multiplies a learned classifier's gradient, which
carries no information about pure noise, by about :math:`10^4`, and the next step of a sampler carries that
shift into :math:`x` scaled by its :math:`\alpha`.  With the exact posterior the product is finite and right;
with a learned one, an upper bound (e.g. ``(0, 80)``) keeps the first step from being thrown off.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from ..denoisers.denoiser import as_time
from ..errors import DifflabError
from ..process.forward import expand
from .base import DenoiserWrapper, call, check_interval, in_interval

__all__ = ["ClassifierGuidance"]


class ClassifierGuidance(DenoiserWrapper):
    """``inner`` guided towards ``label`` by ``classifier`` with scale ``scale``.  A class-conditional ``inner``
    also gets the label (as Dhariwal & Nichol's conditional models), unless ``label_to_model`` is False."""

    def __init__(self, inner: Any, classifier: Callable[[Tensor, Tensor], Tensor], scale: float,
                 label_to_model: bool | None = None, interval: tuple[float, float] | None = None):
        super().__init__(inner)
        sched = getattr(classifier, "schedule", None)
        if sched is not None and sched.config() != inner.schedule.config():
            raise DifflabError("the guidance classifier was trained on another noise schedule than the model's; "
                               "train it with the model's --schedule and --timesteps")
        self.classifier, self.scale = classifier, float(scale)
        self.interval = check_interval(interval, "classifier guidance")
        self.label_to_model = self.num_classes > 0 if label_to_model is None else label_to_model

    def log_prob_grad(self, x_t: Tensor, t: Tensor, label: Tensor) -> Tensor:
        r""":math:`\nabla_{x_t}\log p(y \mid x_t)` for the requested labels."""
        with torch.enable_grad():
            x = x_t.detach().requires_grad_(True)
            logp = torch.log_softmax(self.classifier(x, t), dim=-1)
            picked = logp.gather(1, label.long().reshape(-1, 1).to(logp.device)).sum()
            (grad,) = torch.autograd.grad(picked, x)
        return grad

    def forward(self, x_t: Tensor, t: Tensor | float, label: Tensor | None = None, **cond: Any) -> Tensor:
        if label is None:
            raise DifflabError("classifier guidance needs the class labels to guide towards")
        t = as_time(t, x_t)
        if self.label_to_model:
            cond = {**cond, "label": label}
        x0, n = call(self.inner, x_t, t, **cond)
        inside = in_interval(self.schedule, t, self.interval)
        if self.scale == 0 or not bool(inside.any()):
            self.last_nfe = n
            return x0
        a, s = self.schedule.alpha_sigma(t)
        grad = self.log_prob_grad(x_t, t, label).to(x0.dtype)
        self.last_nfe = n + 1
        return x0 + expand(torch.where(inside, self.scale * s**2 / a, 0.0), x0) * grad
