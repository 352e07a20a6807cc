"""A training budget, steps or wall clock, and its progress bar: what every trainer checks between steps.

``steps`` counts all optimisation steps of a run (across resumes); ``minutes`` the wall clock of this
invocation, so a resumed minute budget starts afresh (as in :mod:`difflab.train.loop`).  The bar counts
steps for a step budget and seconds for a minute budget, with the rate (steps/s) and the ETA.
"""
from __future__ import annotations

import sys
import time
from typing import Any

__all__ = ["Budget"]


class Budget:
    def __init__(self, steps: int | None, minutes: float | None, step: int = 0, progress: bool = True,
                 desc: str = "training"):
        self.steps, self.seconds = steps, None if minutes is None else 60.0 * minutes
        self.start_step, self.start = step, time.perf_counter()
        self.bar = None
        if progress:
            from tqdm.auto import tqdm
            if self.seconds is None:
                self.bar = tqdm(total=steps, initial=step, desc=desc, unit="step", dynamic_ncols=True)
            else:
                self.bar = tqdm(total=int(self.seconds), desc=desc, unit="s", dynamic_ncols=True,
                                bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f}s [{elapsed}<{remaining}{postfix}]")

    def elapsed(self) -> float:
        """Seconds since this invocation started."""
        return time.perf_counter() - self.start

    def fraction(self, step: int) -> float:
        """The fraction of the budget spent at ``step``: steps done over ``steps``, or wall clock over
        ``minutes``, whichever is further."""
        return max(0.0 if self.steps is None else step / self.steps,
                   0.0 if self.seconds is None else self.elapsed() / self.seconds)

    def spent(self, step: int) -> bool:
        return self.fraction(step) >= 1.0

    def rate(self, step: int) -> float:
        """Steps per second of this invocation."""
        return (step - self.start_step) / max(self.elapsed(), 1e-9)

    def update(self, step: int, **postfix: Any) -> None:
        """Advance the bar to ``step`` (or to the elapsed seconds) with ``postfix`` and the rate."""
        if self.bar is None:
            return
        self.bar.set_postfix(step=step, **postfix, it_s=f"{self.rate(step):.2f}", refresh=False)
        if self.seconds is None:
            self.bar.update(step - self.bar.n)
        else:
            self.bar.n = min(self.elapsed(), self.seconds)
            self.bar.refresh()

    def write(self, text: str) -> None:
        """A line on stderr that does not break the bar."""
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
