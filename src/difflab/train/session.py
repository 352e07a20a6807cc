"""The scaffolding a difflab trainer shares with :func:`.loop.train`, for trainers of other models (the
autoencoder): a budget in steps (counted across resumes) or wall-clock minutes (of this invocation),
Ctrl-C turned into a clean stop, a progress bar with rate and ETA, ``log.jsonl`` records averaged over
``log_every`` steps, pictures every ``sample_every`` steps and at the end, a checkpoint every
``ckpt_every_minutes``, at the end and on Ctrl-C.

A trainer draws its batches and takes its optimiser step; around each step it asks :meth:`Session.running`
and reports with :meth:`Session.after_step`::

    with Session(out, cfg, step, save, picture, "autoencoder") as s:
        while s.running(step):
            ... one optimisation step ...
            step += 1
            s.after_step(step, {"loss": loss, ...}, {"lr": lr})
    elapsed, checkpoint = s.seconds, s.checkpoint
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Callable

from .loop import _Interrupt

__all__ = ["Session"]


class Session:
    """Budget, Ctrl-C, progress, log, pictures and checkpoints of one training invocation.

    ``cfg`` has ``steps``, ``minutes``, ``log_every``, ``sample_every``, ``ckpt_every_minutes`` and
    ``progress``; ``save(step) -> Path`` writes a checkpoint, ``picture(tag)`` a picture of the model."""

    def __init__(self, out: str | os.PathLike, cfg: Any, step: int, save: Callable[[int], Path],
                 picture: Callable[[str], None], desc: str = "training"):
        self.out, self.cfg, self.save, self.picture, self.desc = Path(out), cfg, save, picture, desc
        self.start_step = self.step = step
        self.budget_s = None if cfg.minutes is None else 60.0 * cfg.minutes
        self.history: list[dict[str, Any]] = []
        self.checkpoint: Path | None = None
        self.interrupted = False
        self.seconds = 0.0
        self._acc: dict[str, float] = {}
        self._n_acc = 0

    def __enter__(self) -> "Session":
        self._intr = _Interrupt().__enter__()
        self._log = open(self.out / "log.jsonl", "a")
        self.bar = None
        if self.cfg.progress:
            from tqdm.auto import tqdm
            if self.budget_s is None:
                self.bar = tqdm(total=self.cfg.steps, initial=self.step, desc=self.desc, unit="step", dynamic_ncols=True)
            else:
                self.bar = tqdm(total=int(self.budget_s), desc=self.desc, unit="s", dynamic_ncols=True,
                                bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f}s [{elapsed}<{remaining}{postfix}]")
        self.start = self._last_ckpt = self._t_log = time.perf_counter()
        self._s_log = self.step
        return self

    def fraction(self, step: int) -> float:
        """How much of the budget is spent, in [0, 1] (steps done / steps or wall clock / minutes)."""
        now = time.perf_counter() - self.start
        return max(0.0 if self.cfg.steps is None else step / self.cfg.steps,
                   0.0 if self.budget_s is None else now / self.budget_s)

    def running(self, step: int) -> bool:
        """False once the budget is spent or Ctrl-C was pressed (then ``interrupted`` is set)."""
        if self.cfg.steps is not None and step >= self.cfg.steps:
            return False
        if self.budget_s is not None and time.perf_counter() - self.start >= self.budget_s:
            return False
        self.interrupted = self._intr.hit
        return not self.interrupted

    def after_step(self, step: int, terms: dict[str, float], extra: dict[str, Any] | None = None) -> None:
        """Record step ``step`` (1-based count of steps done): ``terms`` are averaged into the next log record,
        ``extra`` (learning rate, ...) is logged as is; progress, pictures and timed checkpoints follow."""
        self.step = step
        for k, v in terms.items():
            self._acc[k] = self._acc.get(k, 0.0) + float(v)
        self._n_acc += 1
        now = time.perf_counter()
        if step % self.cfg.log_every == 0:
            rec = {"step": step, **{k: v / self._n_acc for k, v in self._acc.items()}, **(extra or {}),
                   "it_s": (step - self._s_log) / max(now - self._t_log, 1e-9), "elapsed_s": now - self.start}
            self._log.write(json.dumps(rec) + "\n")
            self._log.flush()
            self.history.append(rec)
            self._acc, self._n_acc, self._t_log, self._s_log = {}, 0, now, step
        if self.bar is not None:
            loss = terms.get("loss", next(iter(terms.values()), float("nan")))
            self.bar.set_postfix(step=step, loss=f"{float(loss):.4f}",
                                 it_s=f"{(step - self.start_step) / max(now - self.start, 1e-9):.2f}", refresh=False)
            if self.budget_s is None:
                self.bar.update(1)
            else:
                self.bar.n = min(now - self.start, self.budget_s)
                self.bar.refresh()
        if self.cfg.sample_every and step % self.cfg.sample_every == 0:
            self.picture(f"step_{step:07d}")
        if now - self._last_ckpt >= 60.0 * self.cfg.ckpt_every_minutes:
            self.checkpoint = self.save(step)
            self._last_ckpt = time.perf_counter()

    @property
    def it_per_s(self) -> float:
        return (self.step - self.start_step) / max(self.seconds, 1e-9)

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.close()
        self.seconds = time.perf_counter() - self.start
        try:
            if exc_type is None:
                if self.step > self.start_step or self.checkpoint is None:
                    self.checkpoint = self.save(self.step)
                if self.interrupted:
                    print(f"interrupted at step {self.step}; checkpoint saved to {self.checkpoint}; "
                          f"continue with --resume")
                else:
                    self.picture(f"step_{self.step:07d}")
        finally:
            self._log.close()
            self._intr.__exit__(exc_type, *exc)
