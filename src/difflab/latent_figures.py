r"""The latent space, shown: interpolations, a 2-D projection by class, and the forward process in pixel
and latent space side by side (matplotlib, imported where used, through :mod:`.viz`).

* :func:`slerp`: spherical interpolation between two Gaussian noises.  A linear mix
  :math:`(1-\lambda) z_0 + \lambda z_1` of two independent N(0, I) draws in d dimensions has norm about
  :math:`\sqrt{d((1-\lambda)^2 + \lambda^2)}`, only :math:`0.71\sqrt d` half-way: far from the shell
  where the prior's mass lies, so a generator decodes it to a washed-out image.  Slerp keeps the norm
  (Shoemake 1985; White, "Sampling Generative Networks", arXiv:1609.04468).
* :func:`noise_interpolations`: images generated from slerp and from the linear path (a decoder, or a
  diffusion model's deterministic DDIM map from x_T to x_0, Song et al., arXiv:2010.02502).
* :func:`digit_interpolations`: between two encoded images, linearly in the latent space and decoded
  (the autoencoder's "decoded path") against the pixel cross-fade.
* :func:`pca_figure`: the first two principal components of flattened pixels and of latents,
  coloured by class.
* :func:`forward_pixel_latent_figure`: :math:`x_t = \alpha_t x_0 + \sigma_t\epsilon` on pixels, the same
  on the scaled latent :math:`z_0 = E(x_0)` (its channels), and the decoded :math:`D(z_t)`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import Tensor

from .encoders.attached import decode_samples
from .errors import DifflabError
from .process.forward import q_sample
from .process.schedules import Schedule
from .viz import _plt, _save, _show

__all__ = ["slerp", "noise_interpolations", "ode_generate", "digit_interpolations", "interpolation_figure",
           "pca", "pca_figure", "forward_pixel_latent_figure"]


def slerp(z0: Tensor, z1: Tensor, lam: Tensor) -> Tensor:
    r""":math:`\frac{\sin((1-\lambda)\theta)}{\sin\theta} z_0 + \frac{\sin(\lambda\theta)}{\sin\theta} z_1`,
    :math:`\cos\theta = \langle z_0, z_1\rangle / (\lVert z_0\rVert\lVert z_1\rVert)`, for one pair ``z0, z1``
    of any shape and ``lam`` ``(K,)``; returns ``(K, *z0.shape)``.  Nearly parallel pairs fall back to the
    linear path (the limit as theta -> 0)."""
    a, b = z0.double().flatten(), z1.double().flatten()
    lam = lam.double()[:, None]
    cos = (a @ b / (a.norm() * b.norm())).clamp(-1.0, 1.0)
    theta = torch.arccos(cos)
    if float(theta.sin()) < 1e-6:
        out = (1 - lam) * a + lam * b
    else:
        out = (torch.sin((1 - lam) * theta) * a + torch.sin(lam * theta) * b) / theta.sin()
    return out.reshape(-1, *z0.shape).to(z0.dtype)


@torch.no_grad()
def ode_generate(denoiser, steps: int = 50) -> Callable[[Tensor], Tensor]:
    """``x_T -> x_0`` by deterministic DDIM (eta = 0) with ``steps`` steps, decoded to data space for a
    latent model: the map from noise to images that noise interpolations go through."""
    from .sampling import sample_ddim, time_grid
    ts = time_grid(denoiser.schedule, steps)

    @torch.no_grad()
    def generate(z: Tensor) -> Tensor:
        x_T = z if denoiser.schedule.variance_preserving else z * float(denoiser.schedule.sigma(ts[0]))
        return decode_samples(denoiser, sample_ddim(denoiser.eval(), x_T, ts, eta=0.0))
    return generate


@torch.no_grad()
def noise_interpolations(generate: Callable[[Tensor], Tensor], shape: Sequence[int], n: int = 9,
                         seed: int = 0) -> dict[str, Tensor]:
    """Images ``generate(z)`` along the spherical and the linear path between two noises of ``shape``
    (sample 0 and 1 of ``seed``'s per-sample streams), ``n`` points each."""
    from .sampling.noise import SampleNoise
    z = SampleNoise(seed, range(2)).randn(tuple(shape))
    lam = torch.linspace(0, 1, n)
    lin = (1 - lam.view(-1, *[1] * len(shape))) * z[0] + lam.view(-1, *[1] * len(shape)) * z[1]
    return {"spherical (slerp)": generate(slerp(z[0], z[1], lam)), "linear": generate(lin)}


@torch.no_grad()
def digit_interpolations(encoder, x_a: Tensor, x_b: Tensor, n: int = 9) -> dict[str, Tensor]:
    """Between images ``x_a`` and ``x_b`` ``(C, H, W)``: decoded linear interpolation of their latents
    ``E(x_a), E(x_b)``, and the pixel cross-fade, ``n`` points each."""
    lam = torch.linspace(0, 1, n).view(-1, 1, 1, 1)
    z = encoder.eval().encode(torch.stack([x_a, x_b]))
    return {"latent, decoded": encoder.decode((1 - lam) * z[0] + lam * z[1]),
            "pixels (cross-fade)": (1 - lam) * x_a + lam * x_b}


def interpolation_figure(rows: dict[str, Tensor], path: str | os.PathLike, title: str) -> Path:
    """One row of images per entry of ``rows`` (each ``(K, C, H, W)``), columns labelled by lambda."""
    plt = _plt()
    k = next(iter(rows.values())).shape[0]
    fig, axes = plt.subplots(len(rows), k, figsize=(1.1 * k + 1.4, 1.2 * len(rows) + 0.5), squeeze=False)
    for r, (name, imgs) in enumerate(rows.items()):
        for c in range(k):
            _show(axes[r, c], imgs[c].clamp(-1, 1))
            if r == 0:
                axes[r, c].set_title(f"{c / max(k - 1, 1):.2f}", fontsize=7)
        axes[r, 0].set_ylabel(name, fontsize=7)
    fig.suptitle(title, fontsize=9)
    return _save(plt, fig, path)


def pca(x: Tensor, k: int = 2) -> tuple[Tensor, Tensor]:
    """Projections ``(N, k)`` of the flattened, centred ``x`` on its first ``k`` principal axes, and the
    fraction of the variance each explains ``(k,)`` (SVD in float64)."""
    a = x.double().flatten(1)
    a = a - a.mean(0)
    _, s, vh = torch.linalg.svd(a, full_matrices=False)
    return a @ vh[:k].T, (s[:k] ** 2) / (s**2).sum()


def pca_figure(spaces: dict[str, Tensor], labels: Tensor, path: str | os.PathLike,
               classes: Sequence[str] | None = None) -> Path:
    """One panel per entry of ``spaces`` (e.g. pixels and latents of the same images, ``(N, ...)``): the
    first two principal components, points coloured by class."""
    plt = _plt()
    if labels is None:
        raise DifflabError("a PCA figure by class needs labelled images")
    fig, axes = plt.subplots(1, len(spaces), figsize=(4.2 * len(spaces) + 0.8, 4.0), squeeze=False)
    cmap = plt.get_cmap("tab10")
    n_cls = int(labels.max()) + 1
    for ax, (name, x) in zip(axes[0], spaces.items()):
        p, frac = pca(x)
        for c in range(n_cls):
            m = labels == c
            ax.scatter(p[m, 0].numpy(), p[m, 1].numpy(), s=3, color=cmap(c % 10), alpha=0.6, linewidths=0,
                       label=classes[c] if classes else str(c))
        ax.set_title(f"{name} {tuple(x.shape[1:])}: PC1 {frac[0]:.0%}, PC2 {frac[1]:.0%} of variance", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0, -1].legend(fontsize=7, markerscale=4, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.suptitle("first two principal components, coloured by class", fontsize=9)
    return _save(plt, fig, path)


def _channels_image(z: Tensor) -> Tensor:
    """A latent ``(c, h, w)`` as one grey image ``(1, h, c * w + c - 1)``: channels side by side, z / 3
    mapped to [-1, 1] (latents have about unit standard deviation), a white column between channels."""
    c, h, w = z.shape
    out = torch.ones(1, h, c * (w + 1) - 1)
    for i in range(c):
        out[0, :, i * (w + 1): i * (w + 1) + w] = (z[i] / 3).clamp(-1, 1)
    return out


@torch.no_grad()
def forward_pixel_latent_figure(x0: Tensor, encoder, schedule: Schedule, ts: Sequence[float],
                                path: str | os.PathLike, seed: int = 0) -> Path:
    """For each image of ``x0`` ``(K, C, H, W)`` three rows at the times ``ts``: pixels :math:`x_t`, the scaled
    latent :math:`z_t` (channels side by side) and the decoded :math:`D(z_t)`, each space with its own
    noise (seeded)."""
    plt = _plt()
    g = torch.Generator().manual_seed(seed)
    z0 = encoder.eval().encode(x0)
    eps_x, eps_z = torch.randn(x0.shape, generator=g), torch.randn(z0.shape, generator=g)
    labels = ("pixels $x_t$", "latent $z_t$", "decoded $D(z_t)$")
    fig, axes = plt.subplots(3 * len(x0), len(ts), figsize=(1.5 * len(ts) + 1.4, 3.4 * len(x0) + 0.5), squeeze=False)
    for c, t in enumerate(ts):
        x_t = q_sample(schedule, x0, float(t), eps=eps_x)
        z_t = q_sample(schedule, z0, float(t), eps=eps_z)
        d_t = encoder.decode(z_t)
        for k in range(len(x0)):
            for j, img in enumerate((x_t[k], _channels_image(z_t[k]), d_t[k])):
                ax = axes[3 * k + j, c]
                _show(ax, img.clamp(-1, 1))
                if c == 0:
                    ax.set_ylabel(labels[j], fontsize=7)
        axes[0, c].set_title(f"t={t:g}", fontsize=8)
    fig.suptitle(r"forward process $\alpha_t x_0 + \sigma_t\epsilon$ in pixel space and in the latent space "
                 r"(same $t$, same schedule)", fontsize=9)
    return _save(plt, fig, path)
