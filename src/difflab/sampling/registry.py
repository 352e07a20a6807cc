r"""The sampler registry: every sampler's facts in one place, so that nothing branches on sampler names.

Each sampler is a short function
``sample_<name>(denoiser, x_T, ts, *, generator=None, callback=None, **opts, **cond) -> x_0``:

* ``denoiser(x_t, t, **cond) -> x0_hat`` with ``denoiser.schedule`` (:class:`~difflab.denoisers.DenoiserFn`);
  ``cond`` (class labels, ...) is passed to every call unchanged;
* ``ts``: decreasing float64 times ending at 0 (see :mod:`.grids`);
* ``generator``: a ``torch.Generator`` or per-sample :class:`~.noise.SampleNoise`;
* ``callback(info)`` after each step with ``info = {"i", "t", "x", "x0_hat"}`` (x is the new state).

Coefficients are computed in float64 from the schedule; the state keeps the dtype of ``x_T``.
:func:`register` records, beside the function, its order, network evaluations per step, whether it is
stochastic (always, or when an option is positive), its recommended grid and start, and how it spends
an NFE budget (:meth:`SamplerInfo.for_nfe`).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor

from ..errors import DifflabError
from .noise import SampleNoise

__all__ = ["SAMPLERS", "SamplerInfo", "register", "get_sampler", "emit", "Callback", "Noise"]

Callback = Callable[[dict[str, Any]], None] | None
Noise = torch.Generator | SampleNoise | None


@dataclass(frozen=True)
class SamplerInfo:
    """What is known of a sampler.

    Attributes:
        nfe_per_step: network evaluations per step, or a function of the options (Langevin loops).
        stochastic: True/False, or the name of the option that makes it stochastic when positive
            (``"eta"`` for DDIM, ``"s_churn"`` for Euler/Heun).
        grid, sigma_max: the recommended time grid and start (sigma/alpha) of :meth:`for_nfe`;
            ``"default"``/None leave the schedule's default grid.
        recommended: options of the recommended setting (e.g. UniPC of order 3).
        adaptive: the solver chooses its own steps (only the grid's ends matter).
        budget: ``nfe -> (steps, options)`` where the default rule (``nfe // nfe_per_step``) does not apply.
    """

    name: str
    fn: Callable[..., Tensor]
    order: int
    nfe_per_step: int | Callable[[dict[str, Any]], int]
    stochastic: bool | str
    summary: str
    grid: str = "default"
    sigma_max: float | None = None
    recommended: dict[str, Any] = field(default_factory=dict)
    adaptive: bool = False
    budget: Callable[[int], tuple[int, dict[str, Any]]] | None = None

    @property
    def options(self) -> list[str]:
        """The keyword options the sampler takes (besides ``generator`` and ``callback``)."""
        return [p.name for p in inspect.signature(self.fn).parameters.values()
                if p.kind is p.KEYWORD_ONLY and p.name not in ("generator", "callback")]

    def defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in inspect.signature(self.fn).parameters.values()
                if p.kind is p.KEYWORD_ONLY and p.name not in ("generator", "callback")}

    def check(self, opts: dict[str, Any]) -> None:
        """Refuse options the sampler does not have, naming the ones it has."""
        known = self.options
        for k in opts:
            if k not in known:
                raise DifflabError(f"sampler {self.name!r} has no option {k!r}; its options: {', '.join(known) or 'none'}")

    def is_stochastic(self, opts: dict[str, Any] | None = None) -> bool:
        if isinstance(self.stochastic, bool):
            return self.stochastic
        return float({**self.defaults(), **(opts or {})}[self.stochastic]) > 0

    def nfe_of_step(self, opts: dict[str, Any] | None = None) -> int:
        if callable(self.nfe_per_step):
            return self.nfe_per_step({**self.defaults(), **(opts or {})})
        return self.nfe_per_step

    def settings(self) -> dict[str, Any]:
        """The recommended setting for any number of steps: its options, time grid and start."""
        opts: dict[str, Any] = dict(self.recommended)
        if self.grid != "default":
            opts["grid"] = self.grid
        if self.sigma_max is not None:
            opts["sigma_max"] = self.sigma_max
        return opts

    def for_nfe(self, nfe: int) -> tuple[int, dict[str, Any]] | None:
        """Steps and options of the recommended setting that spend about ``nfe`` network evaluations per
        sample (None if the sampler cannot be that cheap)."""
        opts = self.settings()
        if self.budget is not None:
            steps, extra = self.budget(nfe)
            opts.update(extra)
        else:
            steps = nfe // self.nfe_of_step(opts)
        return (steps, opts) if steps >= 1 else None


SAMPLERS: dict[str, SamplerInfo] = {}


def register(name: str, **facts: Any) -> Callable[[Callable[..., Tensor]], Callable[..., Tensor]]:
    """Decorator: record ``fn`` under ``name`` with its :class:`SamplerInfo` facts."""
    def deco(fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
        SAMPLERS[name] = SamplerInfo(name, fn, **facts)
        return fn
    return deco


def get_sampler(name: str) -> SamplerInfo:
    if name not in SAMPLERS:
        raise DifflabError(f"unknown sampler {name!r}; choose from {', '.join(sorted(SAMPLERS))}")
    return SAMPLERS[name]


def emit(callback: Callback, i: int, t: Tensor, x: Tensor, x0_hat: Tensor) -> None:
    """Report step ``i`` (estimate made at time ``t``, new state ``x``) to the callback."""
    if callback is not None:
        callback({"i": i, "t": t, "x": x, "x0_hat": x0_hat})
