r"""Power-function EMA and post-hoc EMA reconstruction (Karras et al. 2024, "Analyzing and Improving the
Training Dynamics of Diffusion Models", section 3 and appendix C).

A *power-function EMA* with exponent :math:`\gamma` averages the weights :math:`\theta_\tau` of steps
:math:`\tau \le t` with the profile :math:`p_t(\tau) = (\gamma + 1)\,\tau^\gamma / t^{\gamma+1}`: its length
grows with training, as a fraction of it.  It is the recursion

.. math:: \hat\theta_t = \beta_t \hat\theta_{t-1} + (1 - \beta_t)\,\theta_t, \qquad
          \beta_t = (1 - 1/t)^{\gamma+1}, \quad t = 1, 2, \dots

(:math:`\beta_1 = 0`: no initialisation bias).  Its length is given as the profile's standard deviation
relative to its end, :math:`\sigma_\mathrm{rel} = \sqrt{(\gamma+1) / ((\gamma+2)^2 (\gamma+3))}`.

*Post-hoc reconstruction*: while training, two such averages (``sigma_rels``, e.g. 0.05 and 0.10) are saved
every ``every`` steps.  Any other profile :math:`p_r` (another :math:`\sigma_\mathrm{rel}`, ending at any
saved step) is approximated by the combination :math:`\sum_i x_i p_i` of the saved profiles closest in
:math:`L^2(0, \infty)`: :math:`A x = b` with :math:`A_{ij} = \langle p_i, p_j\rangle`,
:math:`b_i = \langle p_i, p_r\rangle`, closed forms below; the same :math:`x` combines the saved weights.
So one run gives the EMA of every length, chosen after training.
"""
from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import DifflabError
from ..io import load_tensors, save_tensors
from .ema import EMA

__all__ = ["sigma_rel_to_gamma", "gamma_to_sigma_rel", "PowerEMA", "profile_inner", "solve_coefficients",
           "snapshot_path", "list_snapshots", "reconstruct", "power_ema_state", "restore_power_emas",
           "check_fresh_run", "drop_snapshots_after"]

SNAPSHOT_DIR = "posthoc_ema"
SIGMA_REL_MAX = 1 / math.sqrt(12)     # gamma = 0: the uniform average
_NAME = re.compile(r"^sigma(?P<s>[0-9.]+)_step(?P<t>\d+)\.safetensors$")


def gamma_to_sigma_rel(gamma: float) -> float:
    r""":math:`\sigma_\mathrm{rel} = \sqrt{(\gamma+1) / ((\gamma+2)^2 (\gamma+3))}`, the std of the profile
    :math:`\propto \tau^\gamma` on [0, 1]."""
    return math.sqrt((gamma + 1) / ((gamma + 2) ** 2 * (gamma + 3)))


def sigma_rel_to_gamma(sigma_rel: float) -> float:
    r"""The exponent of a relative length: the largest root of
    :math:`\sigma_\mathrm{rel}^2 (\gamma+2)^2 (\gamma+3) = \gamma + 1`, for
    :math:`0 < \sigma_\mathrm{rel} \le 1/\sqrt{12}` (:math:`\gamma \ge 0`; :math:`1/\sqrt{12}`: the uniform
    average of the whole run, :math:`\gamma = 0`; for large :math:`\gamma`, :math:`\sigma_\mathrm{rel}
    \approx 1/\gamma`)."""
    if not 0 < sigma_rel <= SIGMA_REL_MAX:
        raise DifflabError(f"relative EMA length sigma_rel must be in (0, {SIGMA_REL_MAX:.4f}] (the uniform average "
                           f"of the run), got {sigma_rel}")
    s2 = sigma_rel ** 2
    # s2 (g^3 + 7 g^2 + 16 g + 12) - g - 1 = 0
    roots = np.roots([s2, 7 * s2, 16 * s2 - 1, 12 * s2 - 1])
    return float(max(max(r.real for r in roots if abs(r.imag) < 1e-7), 0.0))


class PowerEMA(EMA):
    r"""The power-function EMA of ``model``'s parameters (buffers copied), for ``sigma_rel``: :class:`EMA` with
    the decay :math:`\beta_t = (1 - 1/t)^{\gamma+1}` of update ``t`` (one per optimisation step from the start
    of the run; ``t`` is the number of updates done)."""

    def __init__(self, model: nn.Module, sigma_rel: float):
        super().__init__(model, 0.0, warmup=False)
        self.sigma_rel, self.gamma = sigma_rel, sigma_rel_to_gamma(sigma_rel)

    @property
    def t(self) -> int:
        return self.updates

    def current_decay(self) -> float:
        return (1.0 - 1.0 / (self.updates + 1)) ** (self.gamma + 1.0)


def profile_inner(t_i: np.ndarray, g_i: np.ndarray, t_j: np.ndarray, g_j: np.ndarray) -> np.ndarray:
    r""":math:`\langle p_i, p_j\rangle = \int_0^{m} p_i p_j\,d\tau = \frac{(\gamma_i+1)(\gamma_j+1)\,
    m^{\gamma_i+\gamma_j+1}}{(\gamma_i+\gamma_j+1)\, t_i^{\gamma_i+1} t_j^{\gamma_j+1}}`, :math:`m =
    \min(t_i, t_j)`, in float64 through logarithms (exponents of a few, times of thousands), broadcast."""
    t_i, g_i, t_j, g_j = (np.asarray(v, dtype=np.float64) for v in (t_i, g_i, t_j, g_j))
    m = np.minimum(t_i, t_j)
    log = (np.log(g_i + 1) + np.log(g_j + 1) + (g_i + g_j + 1) * np.log(m) - np.log(g_i + g_j + 1)
           - (g_i + 1) * np.log(t_i) - (g_j + 1) * np.log(t_j))
    return np.exp(log)


def solve_coefficients(snapshots: list[tuple[int, float]], t_r: int, gamma_r: float) -> tuple[np.ndarray, float]:
    r"""Least-squares coefficients of the saved profiles ``(t_i, gamma_i)`` for the target ``(t_r, gamma_r)``,
    and the relative L2 error of the fit, :math:`\lVert\sum_i x_i p_i - p_r\rVert / \lVert p_r\rVert`
    (:math:`x^\top A x - 2 x^\top b + \langle p_r, p_r\rangle` under the root)."""
    t = np.array([s[0] for s in snapshots], dtype=np.float64)
    g = np.array([s[1] for s in snapshots], dtype=np.float64)
    a = profile_inner(t[:, None], g[:, None], t[None, :], g[None, :])
    b = profile_inner(t, g, np.full_like(t, t_r), np.full_like(g, gamma_r))
    x, *_ = np.linalg.lstsq(a, b, rcond=None)
    rr = float(profile_inner(t_r, gamma_r, t_r, gamma_r))
    return x, math.sqrt(max(float(x @ a @ x - 2 * x @ b + rr), 0.0) / rr)


def snapshot_path(run_dir: str | os.PathLike, sigma_rel: float, step: int) -> Path:
    return Path(run_dir) / SNAPSHOT_DIR / f"sigma{sigma_rel:.4f}_step{step:07d}.safetensors"


def save_snapshot(run_dir: str | os.PathLike, ema: PowerEMA) -> Path:
    path = snapshot_path(run_dir, ema.sigma_rel, ema.t)
    save_tensors(ema.model.state_dict(), path)       # atomic: a snapshot is whole or absent
    return path


def check_fresh_run(run_dir: str | os.PathLike) -> None:
    """A new run must not mix its snapshots with an earlier run's in the same folder."""
    if list_snapshots(run_dir):
        raise DifflabError(f"{Path(run_dir) / SNAPSHOT_DIR} holds post-hoc EMA snapshots of an earlier run; "
                           f"--resume it, or remove that folder or choose another --out")


def drop_snapshots_after(run_dir: str | os.PathLike, step: int) -> int:
    """On a resume from ``step``: delete the snapshots an interrupted invocation wrote after its last
    checkpoint (a trajectory the resumed run does not follow); returns how many."""
    stale = [p for _, t, p in list_snapshots(run_dir) if t > step]
    for p in stale:
        p.unlink()
    return len(stale)


def power_ema_state(power_emas: list[PowerEMA]) -> dict[str, torch.Tensor]:
    """The power EMAs' weights for a checkpoint's training state (their count is the step)."""
    return {f"posthoc_ema.{pe.sigma_rel:.4f}.{k}": v for pe in power_emas for k, v in pe.model.state_dict().items()}


def restore_power_emas(training: dict[str, Any], state: dict[str, torch.Tensor], power_emas: list[PowerEMA],
                       step: int) -> None:
    """Put the power EMAs back from a checkpoint's training record and state; a run resumed with other lengths
    than it was trained with is refused (their averages would not start at step 0)."""
    saved = tuple(training.get("posthoc_ema", ()))
    if tuple(round(s, 4) for s in saved) != tuple(round(pe.sigma_rel, 4) for pe in power_emas):
        now = ",".join(f"{pe.sigma_rel:g}" for pe in power_emas) or "off"
        raise DifflabError(f"cannot resume with --posthoc-ema {now}: the run was trained with "
                           f"{','.join(f'{s:g}' for s in saved) or 'none'}")
    for pe in power_emas:
        prefix = f"posthoc_ema.{pe.sigma_rel:.4f}."
        pe.model.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
        pe.updates = step


def list_snapshots(run_dir: str | os.PathLike) -> list[tuple[float, int, Path]]:
    """``(sigma_rel, step, file)`` of every snapshot of a run, by step."""
    folder = Path(run_dir) / SNAPSHOT_DIR
    out = []
    for p in sorted(folder.glob("*.safetensors")) if folder.is_dir() else []:
        m = _NAME.match(p.name)
        if m:
            out.append((float(m["s"]), int(m["t"]), p))
    return sorted(out, key=lambda s: (s[1], s[0]))


def reconstruct(run_dir: str | os.PathLike, sigma_rel: float, step: int | None = None,
                max_error: float = 0.05) -> tuple[dict[str, torch.Tensor], dict]:
    """Weights of the power-function EMA of length ``sigma_rel`` ending at ``step`` (default: the last
    snapshot), from the snapshots saved up to ``step``; returns (state dict, report with the coefficients
    and the relative L2 error of the reconstructed profile, refused above ``max_error``)."""
    snaps = list_snapshots(run_dir)
    if not snaps:
        raise DifflabError(f"{run_dir} has no post-hoc EMA snapshots (train with --posthoc-ema SIGMAS)")
    steps = sorted({s[1] for s in snaps})
    step = steps[-1] if step is None else step
    if step not in steps:
        raise DifflabError(f"no post-hoc EMA snapshot at step {step}; saved steps: {steps[0]}..{steps[-1]} "
                           f"({len(steps)} of them)")
    used = [s for s in snaps if s[1] <= step]
    gamma_r = sigma_rel_to_gamma(sigma_rel)
    x, error = solve_coefficients([(t, sigma_rel_to_gamma(s)) for s, t, _ in used], step, gamma_r)
    if error > max_error:
        raise DifflabError(f"sigma_rel {sigma_rel} at step {step} is not reachable from the saved EMAs "
                           f"(profile error {error:.3f} > {max_error}); choose a length between the saved ones "
                           f"({', '.join(sorted({f'{s[0]:g}' for s in used}))})")
    # one snapshot in memory at a time, summed in float64; integer or constant tensors (buffers) are copied
    acc: dict[str, torch.Tensor] = {}
    first: dict[str, torch.Tensor] = {}
    varies: set[str] = set()
    for coef, (_, _, path) in zip(x, used):
        for k, v in load_tensors(path, what="post-hoc EMA snapshot").items():
            if k not in first:
                first[k] = v
            elif not torch.equal(v, first[k]):
                varies.add(k)
            if v.is_floating_point():
                acc[k] = acc[k] + float(coef) * v.double() if k in acc else float(coef) * v.double()
    state = {k: acc[k].to(v.dtype) if k in varies and k in acc else v for k, v in first.items()}
    report = {"sigma_rel": sigma_rel, "gamma": gamma_r, "step": step, "profile_error": error,
              "snapshots": [{"sigma_rel": s, "step": t, "coefficient": float(c)} for (s, t, _), c in zip(used, x)]}
    return state, report
