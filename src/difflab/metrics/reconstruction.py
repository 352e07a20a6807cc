r"""How well an autoencoder reconstructs held-out images: PSNR, the classifier's accuracy on the
reconstructions, and the FD of the reconstructions (the floor a latent diffusion model with this
autoencoder can reach: its samples are decoded by the same decoder).

PSNR of an image with values in [-1, 1]: :math:`10 \log_{10}(1 / \mathrm{MSE})` with the MSE taken on
[0, 1] (peak 1), averaged over images.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..errors import DifflabError

__all__ = ["psnr", "reconstruct", "reconstruction_report"]


def psnr(x_hat: Tensor, x: Tensor) -> Tensor:
    """Per-image PSNR in dB of ``x_hat`` (clamped to [-1, 1]) against ``x``, both ``(N, C, H, W)`` in [-1, 1]."""
    mse = ((x_hat.clamp(-1, 1) - x) / 2).double().square().flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-12))


@torch.no_grad()
def reconstruct(net: Any, x: Tensor, batch_size: int = 256) -> Tensor:
    """``D(mu(x))`` of a :class:`~difflab.nn.autoencoder.KLAutoencoder`, in batches, in eval mode."""
    was_training = net.training
    net.eval()
    out = torch.cat([net(x[i:i + batch_size])[0] for i in range(0, x.shape[0], batch_size)])
    net.train(was_training)
    return out


def reconstruction_report(net: Any, heldout: Tensor, labels: Tensor | None = None, classifier: Any = None,
                          train: Tensor | None = None) -> dict[str, Any]:
    """``psnr`` (mean and std over images); with a classifier and labels its ``accuracy`` on the
    reconstructions and on the originals; with a classifier and ``train`` images the FD of the
    reconstructions against the held-out originals (``fd_reconstructions``) beside the real-vs-real floor
    (:func:`~.evaluate.evaluate_samples`)."""
    if heldout.shape[0] == 0:
        raise DifflabError("no held-out images to measure the reconstructions on")
    x_hat = reconstruct(net, heldout)
    p = psnr(x_hat, heldout)
    out: dict[str, Any] = {"n": int(heldout.shape[0]), "psnr": float(p.mean()), "psnr_std": float(p.std())}
    if classifier is not None and labels is not None:
        acc = lambda x: float((classifier.probabilities(x).argmax(1) == labels).double().mean())  # noqa: E731
        out["accuracy"], out["accuracy_original"] = acc(x_hat.clamp(-1, 1)), acc(heldout)
    if classifier is not None and train is not None and heldout.shape[0] >= 10:
        import warnings

        from .evaluate import evaluate_samples
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # small held-out sets: the floor beside it is at the same count
            ev = evaluate_samples(x_hat, train, heldout, classifier, min_samples=0)
        out["fd_reconstructions"], out["fd_floor"] = ev["fd_samples"], ev["fd_floor"]
    return out
