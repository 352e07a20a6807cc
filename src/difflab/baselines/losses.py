r"""GAN objectives on discriminator logits :math:`l = D(x)` (``(B,)`` tensors), and the R1 penalty.

* Non-saturating loss (Goodfellow et al., "Generative Adversarial Nets", arXiv:1406.2661, sec. 3):
  :math:`L_D = E_x[\mathrm{softplus}(-l_{real})] + E_z[\mathrm{softplus}(l_{fake})]`, i.e.
  :math:`-\log\sigma(l_{real}) - \log(1 - \sigma(l_{fake}))`, and :math:`L_G = E_z[\mathrm{softplus}(-l_{fake})]
  = -\log\sigma(l_{fake})` (the generator maximises :math:`\log D(G(z))` instead of minimising
  :math:`\log(1 - D(G(z)))`, whose gradient vanishes when D rejects the fakes).
* Hinge loss (Lim & Ye, "Geometric GAN", arXiv:1705.02894; Miyato et al., arXiv:1802.05957, eq. 16):
  :math:`L_D = E[\max(0, 1 - l_{real})] + E[\max(0, 1 + l_{fake})]`, :math:`L_G = -E[l_{fake}]`.
* R1 (Mescheder et al., "Which Training Methods for GANs do actually Converge?", arXiv:1801.04406,
  eq. 9): :math:`R_1 = \tfrac{\gamma}{2} E_{x \sim p_{data}}\|\nabla_x D(x)\|^2`, on real data only;
  :func:`r1_penalty` returns the expectation (without :math:`\gamma/2`), differentiable in D's weights.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import DifflabError

__all__ = ["GAN_LOSSES", "d_loss", "g_loss", "r1_penalty"]


def _nonsaturating(l_real: Tensor | None, l_fake: Tensor) -> Tensor:
    if l_real is None:
        return F.softplus(-l_fake).mean()
    return F.softplus(-l_real).mean() + F.softplus(l_fake).mean()


def _hinge(l_real: Tensor | None, l_fake: Tensor) -> Tensor:
    if l_real is None:
        return -l_fake.mean()
    return F.relu(1.0 - l_real).mean() + F.relu(1.0 + l_fake).mean()


# name -> loss(l_real, l_fake) for D, loss(None, l_fake) for G
GAN_LOSSES: dict[str, Callable[[Tensor | None, Tensor], Tensor]] = {"nonsaturating": _nonsaturating, "hinge": _hinge}


def _loss(name: str) -> Callable[[Tensor | None, Tensor], Tensor]:
    if name not in GAN_LOSSES:
        raise DifflabError(f"unknown GAN loss {name!r}; choose from {', '.join(GAN_LOSSES)}")
    return GAN_LOSSES[name]


def d_loss(name: str, l_real: Tensor, l_fake: Tensor) -> Tensor:
    """The discriminator's loss (scalar) from its logits on a real and a generated batch."""
    return _loss(name)(l_real, l_fake)


def g_loss(name: str, l_fake: Tensor) -> Tensor:
    """The generator's loss (scalar) from the discriminator's logits on a generated batch."""
    return _loss(name)(None, l_fake)


def r1_penalty(l_real: Tensor, x_real: Tensor) -> Tensor:
    r""":math:`E\|\nabla_x D(x)\|^2` over the batch: ``l_real = D(x_real)`` ``(B,)`` computed from ``x_real``
    ``(B, ...)`` with ``requires_grad``; the squared norm is summed over each sample's dimensions and
    averaged over the batch.  The gradient graph is kept (``create_graph``), so the result can be
    back-propagated into D's weights (a double backward)."""
    (grad,) = torch.autograd.grad(l_real.sum(), x_real, create_graph=True)
    return grad.pow(2).flatten(1).sum(1).mean()
