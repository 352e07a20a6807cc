r"""The loss of the KL autoencoder (Rombach et al., arXiv:2112.10752, sec. 3.1 and app. G; without their
patch discriminator).

Per image ``x`` with D pixel values, a posterior sample :math:`z = \mu + \sigma\epsilon` and its
reconstruction :math:`\hat x = D(z)`:

.. math::

    L = \frac1D \sum_i \rho(\hat x_i - x_i)
        + w_{\mathrm{feat}} \frac1F \lVert \phi(\hat x) - \phi(x) \rVert^2
        + \beta \frac1D \mathrm{KL}(q(z \mid x) \,\|\, N(0, I))

with :math:`\rho` the absolute value (``l1``) or the square (``l2``), :math:`\phi` the F features of a
frozen classifier (the perceptual term; Rombach et al. use LPIPS) and :math:`\beta` the KL weight.  Both
the reconstruction and the KL are divided by D, so :math:`\beta` weighs them as Rombach et al.'s summed
losses do (their 1e-6 is "a slight KL penalty").  With ``l2`` and :math:`\beta = 2\sigma_x^2` the loss is
the negative ELBO (per pixel, up to a constant) of a VAE with a Gaussian decoder of standard deviation
:math:`\sigma_x` (Kingma & Welling, arXiv:1312.6114).
"""
from __future__ import annotations

from typing import Callable

from torch import Tensor

from ..errors import DifflabError
from ..nn.autoencoder import KLAutoencoder

__all__ = ["RECONSTRUCTION_LOSSES", "reconstruction_loss", "autoencoder_loss"]

RECONSTRUCTION_LOSSES = ("l1", "l2")


def reconstruction_loss(x_hat: Tensor, x: Tensor, kind: str = "l1") -> Tensor:
    """Per-image mean of ``|x_hat - x|`` (``l1``) or ``(x_hat - x)^2`` (``l2``), shape ``(B,)``."""
    d = (x_hat - x).flatten(1)
    if kind == "l1":
        return d.abs().mean(1)
    if kind == "l2":
        return d.square().mean(1)
    raise DifflabError(f"unknown reconstruction loss {kind!r}; choose from {', '.join(RECONSTRUCTION_LOSSES)}")


def autoencoder_loss(net: KLAutoencoder, x: Tensor, eps: Tensor, kind: str = "l1", kl_weight: float = 1e-4,
                     features: Callable[[Tensor], Tensor] | None = None,
                     feature_weight: float = 0.0) -> dict[str, Tensor]:
    """The terms of the loss above per image, ``(B,)`` each: ``loss`` (the total), ``rec``, ``kl`` (KL / D,
    before its weight) and ``feat`` (0 without ``features``).  ``eps`` ``(B, c, h, w)`` is the posterior
    sample's standard normal noise."""
    x_hat, q = net(x, eps)
    d = x[0].numel()
    out = {"rec": reconstruction_loss(x_hat, x, kind), "kl": q.kl() / d, "feat": x.new_zeros(x.shape[0])}
    if features is not None and feature_weight > 0:
        out["feat"] = (features(x_hat) - features(x)).square().mean(1)
    out["loss"] = out["rec"] + kl_weight * out["kl"] + feature_weight * out["feat"]
    return out
