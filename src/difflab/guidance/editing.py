r"""Editing with a trained model: inpainting, super-resolution and image-to-image (SDEdit).

**Measurements as a denoiser wrapper.**  Inpainting and super-resolution observe :math:`y = A x_0` for a linear
operator A (keep the known pixels; average f x f blocks).  :class:`ConstrainedDenoiser` turns the model's
:math:`\hat x_0 = E[x_0 \mid x_t]` into an estimate that agrees with y, so every sampler works with it unchanged:

* ``posterior="projection"`` projects onto the images that agree with y,
  :math:`\hat x_0' = \hat x_0 + A^+(y - A\hat x_0)`, :math:`A^+ = A^\top(AA^\top)^{-1}` (the range-null-space form of
  Wang et al., arXiv:2212.00490).  For inpainting it is the replacement of Song et al. (arXiv:2011.13456,
  App. I) applied to x0; for super-resolution ILVR's low-pass replacement (Choi et al., arXiv:2108.02938) with
  :math:`\phi_N = A^+A`.  It treats the posterior covariance of :math:`x_0` as isotropic, so the known pixels do
  not inform the unknown ones beyond what :math:`x_t` carries: it is biased (measured on Gaussian data in
  ``tests/test_guidance.py``), and RePaint's resampling (the ``repaint`` sampler, Lugmayr et al.,
  arXiv:2201.09865) reduces the bias at the price of more steps.
* ``posterior="tweedie"`` conditions the Gaussian approximation of :math:`p(x_0 \mid x_t)` on y:
  :math:`\hat x_0' = \hat x_0 + CA^\top(ACA^\top)^{-1}(y - A\hat x_0)` with the posterior covariance from
  Tweedie's second-order formula :math:`C = \mathrm{Cov}[x_0 \mid x_t] = \frac{\sigma_t^2}{\alpha_t}\,
  \partial\hat x_0/\partial x_t` (Boys et al., arXiv:2310.06721).  For Gaussian data it is exactly
  :math:`E[x_0 \mid x_t, y]`, the denoiser of :math:`p(x_0 \mid y)`, so samplers draw the exact conditional.  The
  linear system is solved by conjugate gradients in measurement space, with :math:`C` applied by
  vector-Jacobian products of the network (the Jacobian of a denoiser is symmetric); each product counts as one
  network evaluation.

**SDEdit** (Meng et al., arXiv:2108.01073): noise an input to time ``strength`` with q(x_t | x_0), then run
any sampler from there (:func:`img2img`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ..denoisers.denoiser import as_time
from ..errors import DifflabError
from ..process.forward import expand
from .base import DenoiserWrapper, call

__all__ = ["LinearOperator", "ConstrainedDenoiser", "inpainting_operator", "downsampling_operator", "make_mask",
           "MASKS", "POSTERIORS", "inpaint", "super_resolve", "img2img", "bicubic_upsample", "conjugate_gradient"]

POSTERIORS = ("projection", "tweedie")


@dataclass(frozen=True)
class LinearOperator:
    r"""A measurement :math:`y = A x` with its adjoint and :math:`AA^\top = g\,I` (``gram``), so that
    :math:`A^+ = A^\top / g`."""

    A: Callable[[Tensor], Tensor]
    adjoint: Callable[[Tensor], Tensor]
    gram: float = 1.0

    def pinv(self, y: Tensor) -> Tensor:
        return self.adjoint(y) / self.gram


def inpainting_operator(mask: Tensor) -> LinearOperator:
    """Keep the known pixels (``mask`` 1 = known, broadcast over the batch) and zero the rest: A = A^T and
    A A^T = I on the known pixels."""
    m = mask.to(torch.float32)

    def keep(x: Tensor) -> Tensor:
        return x * m.to(device=x.device, dtype=x.dtype)

    return LinearOperator(keep, keep, 1.0)


def downsampling_operator(factor: int) -> LinearOperator:
    """Average over factor x factor blocks; the adjoint spreads each value over its block divided by f^2, and
    A A^T = I / f^2, so A^+ repeats each value over its block (nearest-neighbour upsampling)."""
    if factor < 2:
        raise DifflabError(f"super-resolution factor must be >= 2, got {factor}")

    def A(x: Tensor) -> Tensor:
        return F.avg_pool2d(x, factor)

    def adjoint(y: Tensor) -> Tensor:
        return F.interpolate(y, scale_factor=factor, mode="nearest") / factor**2

    return LinearOperator(A, adjoint, 1.0 / factor**2)


def conjugate_gradient(apply: Callable[[Tensor], Tensor], b: Tensor, iters: int, tol: float = 1e-10,
                       min_curvature: float = 1e-10) -> Tensor:
    """Solve ``apply(z) = b`` for a symmetric positive semi-definite operator, per sample (CG batched over the
    first dimension), from 0; stops after ``iters`` iterations or when every residual norm is below ``tol``
    times that of b.  A sample whose search direction meets curvature p^T apply(p) / |p|^2 at or below
    ``min_curvature`` times its first direction's (or a non-finite one) - the operator is not positive definite
    there, as a learned network's Jacobian need not be - keeps the iterate it has (truncated CG, Steihaug 1983)
    instead of taking an unbounded step; a stopped sample's z and r no longer change."""
    dot = lambda u, v: (u * v).flatten(1).sum(1)  # noqa: E731
    tiny = torch.finfo(b.dtype).tiny
    z, r = torch.zeros_like(b), b.clone()
    p, rr = r.clone(), dot(r, r)
    stop = tol**2 * rr
    active = rr > stop
    first = None
    for _ in range(iters):
        if not bool(active.any()):
            break
        ap = apply(p)
        curv = dot(p, ap)
        rayleigh = curv / dot(p, p).clamp_min(tiny)
        first = rayleigh if first is None else first
        active = active & torch.isfinite(rayleigh) & (rayleigh > min_curvature * first.abs()) & (rayleigh > 0)
        step = torch.where(active, rr / curv.clamp_min(tiny), torch.zeros_like(rr))
        keep = lambda new, old: torch.where(active.view(-1, *[1] * (old.ndim - 1)), new, old)  # noqa: E731
        z = keep(z + expand(step, z) * p, z)
        r = keep(r - expand(step, r) * ap, r)
        rr_new = dot(r, r)
        p = keep(r + expand(rr_new / rr.clamp_min(tiny), p) * p, p)
        rr = rr_new
        active = active & (rr > stop)
    return z


class ConstrainedDenoiser(DenoiserWrapper):
    r"""``inner`` made to agree with measurements :math:`y = A x_0` (the module docstring gives the two
    ``posterior`` rules).

    ``y`` holds one measurement per sample, ``(N, ...)``; a call on a batch uses the rows ``cond["row"]``
    (the samples' indices, which :func:`difflab.sample` slices per batch like any conditioning), else all."""

    def __init__(self, inner: Any, operator: LinearOperator, y: Tensor, posterior: str = "projection",
                 cg_iters: int = 20):
        super().__init__(inner)
        if posterior not in POSTERIORS:
            raise DifflabError(f"unknown posterior rule {posterior!r}; choose from {', '.join(POSTERIORS)}")
        self.op, self.y, self.posterior, self.cg_iters = operator, y, posterior, cg_iters

    def forward(self, x_t: Tensor, t: Tensor | float, **cond: Any) -> Tensor:
        rows = cond.pop("row", None)
        y = self.y if rows is None else self.y[rows]
        if y.shape[0] != x_t.shape[0]:
            raise DifflabError(f"{y.shape[0]} measurements for a batch of {x_t.shape[0]} samples")
        if self.posterior == "projection":
            x0, self.last_nfe = call(self.inner, x_t, t, **cond)
            return x0 + self.op.pinv(y.to(device=x0.device, dtype=x0.dtype) - self.op.A(x0))
        return self._tweedie(x_t, as_time(t, x_t), y, cond)

    def _tweedie(self, x_t: Tensor, t: Tensor, y: Tensor, cond: dict[str, Any]) -> Tensor:
        a, s = self.schedule.alpha_sigma(t)
        products = 0
        with torch.enable_grad():
            x = x_t.detach().requires_grad_(True)
            x0, n = call(self.inner, x, t, **cond)
            scale = expand(s**2 / a, x0).to(x0.dtype)

            def cov(v: Tensor) -> Tensor:   # C v = (sigma^2 / alpha) J^T v with J = d x0_hat / d x_t (symmetric)
                nonlocal products
                products += 1
                (g,) = torch.autograd.grad(x0, x, v, retain_graph=True)
                return scale * g

            y = y.to(device=x0.device, dtype=x0.dtype)
            z = conjugate_gradient(lambda w: self.op.A(cov(self.op.adjoint(w))), y - self.op.A(x0.detach()),
                                   self.cg_iters)
            step = cov(self.op.adjoint(z))
        self.last_nfe = n + products
        clip = getattr(self.inner, "clip_x0", None)
        if clip is not None:   # no correction moves a pixel further than across the data range
            step = step.clamp(-2 * clip, 2 * clip)
        out = x0.detach() + step
        # y is noiseless, so E[x0 | x_t, y] agrees with it exactly: project what is left of y - A x0' (nothing for
        # Gaussian data once CG has converged; for a network whose Jacobian is not a covariance at this noise
        # level CG stops at once, and this is the projection rule)
        return out + self.op.pinv(y - self.op.A(out))


def _left(h: int, w: int, g: torch.Generator) -> Tensor:
    m = torch.ones(h, w)
    m[:, : w // 2] = 0
    return m


def _centre(h: int, w: int, g: torch.Generator) -> Tensor:
    m = torch.ones(h, w)
    m[h // 4: h - h // 4, w // 4: w - w // 4] = 0
    return m


def _random(h: int, w: int, g: torch.Generator) -> Tensor:
    return (torch.rand(h, w, generator=g) < 0.5).float()   # half of the pixels known


# built-in masks (1 = known pixel): the left half erased, a centre box erased, half of the pixels at random
MASKS: dict[str, Callable[[int, int, torch.Generator], Tensor]] = {"left": _left, "centre": _centre, "random": _random}


def make_mask(kind: str, shape: tuple[int, ...], seed: int = 0) -> Tensor:
    """A built-in mask of ``shape`` (C, H, W) as a float tensor of 0/1 (1 = known)."""
    if kind not in MASKS:
        raise DifflabError(f"unknown mask {kind!r}; choose from {', '.join(MASKS)} or give a mask image")
    if len(shape) != 3:
        raise DifflabError(f"built-in masks are for images (C, H, W); the samples have shape {tuple(shape)}")
    c, h, w = shape
    return MASKS[kind](h, w, torch.Generator().manual_seed(seed)).expand(c, h, w).clone()


def _check_images(x: Tensor, shape: tuple[int, ...], what: str, denoiser: Any = None) -> None:
    if getattr(denoiser, "encoder", None) is not None:
        raise DifflabError("editing works on a model of the data itself; this one runs in an autoencoder's latent "
                           "space")
    if tuple(x.shape[1:]) != tuple(shape):
        raise DifflabError(f"{what} has shape {tuple(x.shape[1:])}; the model makes {tuple(shape)}")


def inpaint(denoiser: Any, images: Tensor, mask: Tensor, sampler: str = "ddpm", steps: int = 250, seed: int = 0,
            resample: int = 1, posterior: str = "projection", cg_iters: int = 20, progress: bool = False,
            cond: dict[str, Any] | None = None, **opts: Any):
    """Fill the unknown pixels (``mask`` 0) of ``images`` (N, *shape) in the model's range; ``mask`` of the
    model's sample shape, 1 = known.  ``resample > 1`` uses the RePaint sampler (``resample`` passes per step);
    ``posterior`` is the rule of :class:`ConstrainedDenoiser`.  Returns the
    :class:`~difflab.sampling.api.SampleResult`."""
    from ..sampling import sample
    shape = tuple(denoiser.data_shape)
    _check_images(images, shape, "the image", denoiser)
    if tuple(mask.shape[-len(shape):]) != shape:
        raise DifflabError(f"the mask is {tuple(mask.shape[-len(shape):])}, the images {shape}: give a mask of the "
                           f"same size")
    op = inpainting_operator(mask)
    constrained = ConstrainedDenoiser(denoiser, op, op.A(images), posterior, cg_iters)
    if resample > 1:
        sampler, opts = "repaint", {**opts, "resample": resample}
    return sample(constrained, n=len(images), sampler=sampler, steps=steps, seed=seed, progress=progress,
                  cond=_with_rows(cond, len(images)), **opts)


def super_resolve(denoiser: Any, low: Tensor, factor: int = 2, sampler: str = "ddpm", steps: int = 250,
                  seed: int = 0, posterior: str = "projection", cg_iters: int = 20, progress: bool = False,
                  cond: dict[str, Any] | None = None, **opts: Any):
    """Images of the model's size whose f x f block means equal ``low`` (N, C, H/f, W/f) (ILVR)."""
    from ..sampling import sample
    shape = tuple(denoiser.data_shape)
    _check_images(low, tuple(low.shape[1:]), "the low-resolution image", denoiser)
    if tuple(low.shape[1:]) != (shape[0], shape[1] // factor, shape[2] // factor) or shape[1] % factor:
        raise DifflabError(f"a {factor}x super-resolution to {shape} takes images of "
                           f"{(shape[0], shape[1] // factor, shape[2] // factor)}, got {tuple(low.shape[1:])}")
    constrained = ConstrainedDenoiser(denoiser, downsampling_operator(factor), low, posterior, cg_iters)
    return sample(constrained, n=len(low), sampler=sampler, steps=steps, seed=seed, progress=progress,
                  cond=_with_rows(cond, len(low)), **opts)


def bicubic_upsample(low: Tensor, factor: int) -> Tensor:
    """The classical baseline: bicubic interpolation, clamped to [-1, 1]."""
    return F.interpolate(low, scale_factor=factor, mode="bicubic", align_corners=False).clamp(-1, 1)


def img2img(denoiser: Any, images: Tensor, strength: float, sampler: str = "ddim", steps: int = 50, seed: int = 0,
            progress: bool = False, cond: dict[str, Any] | None = None, **opts: Any):
    """SDEdit: noise ``images`` to t = ``strength`` in (0, 1] and denoise with ``sampler`` over ``steps``
    steps from there (the grid of the schedule truncated at ``strength``)."""
    from ..sampling import sample
    if not 0.0 < strength <= 1.0:
        raise DifflabError(f"strength must be in (0, 1], got {strength}")
    _check_images(images, tuple(denoiser.data_shape), "the image", denoiser)
    return sample(denoiser, n=len(images), sampler=sampler, steps=steps, seed=seed, progress=progress,
                  t_start=strength, x0_start=images, cond=cond, **opts)


def _with_rows(cond: dict[str, Any] | None, n: int) -> dict[str, Any]:
    """Conditioning plus the row index of each sample, so that a batch finds its own measurements."""
    return {**(cond or {}), "row": torch.arange(n)}
