"""Progress of long work: one bar factory for every loop of difflab.

On a terminal: a tqdm bar with the rate and the time left, redrawn in place.  Elsewhere (a pipe, a log file,
CI): the same information as a quiet line every ``quiet_seconds`` (and at the end), so that logs stay readable
instead of filling with redrawn bars.
"""
from __future__ import annotations

import sys
from typing import Any, Iterable

from tqdm import tqdm

__all__ = ["progress_bar", "QUIET_SECONDS"]

QUIET_SECONDS = 30.0


class _LineBar(tqdm):
    """A tqdm whose every refresh is a full line (no carriage-return redraws), and whose close writes the final
    state as one more line (tqdm's own close marks the bar disabled first and then ends the line it redrew)."""

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:  # noqa: D401
        text = (msg if msg is not None else self.__str__()).strip("\r")
        if text:                     # tqdm clears a bar by displaying '': nothing to write on a line log
            self.fp.write(text + "\n")
            self.fp.flush()
        return False                 # (so tqdm writes no '\r' after it)

    def close(self) -> None:
        if not self.disable and self.leave:
            self._ema_dt = lambda: None      # the final line shows the overall rate, as tqdm's does
            self.display()
            self.leave = False               # tqdm's close then only "clears", which writes nothing here
        super().close()


def progress_bar(iterable: Iterable | None = None, *, total: float | None = None, desc: str = "", unit: str = "it",
                 enabled: bool = True, quiet_seconds: float = QUIET_SECONDS, **kw: Any) -> tqdm:
    """A progress bar (``enabled=False``: silent).  Keyword arguments go to tqdm."""
    stream = kw.pop("file", sys.stderr)
    interactive = hasattr(stream, "isatty") and stream.isatty()
    cls = tqdm if interactive else _LineBar
    if not interactive:
        # maxinterval too: tqdm's monitor thread otherwise forces a redraw every 10 s once miniters has grown
        kw.update(mininterval=quiet_seconds, maxinterval=quiet_seconds, dynamic_ncols=False, ncols=100, ascii=True,
                  leave=True)
    else:
        kw.setdefault("dynamic_ncols", True)
    return cls(iterable, total=total, desc=desc, unit=unit, disable=not enabled, file=stream, **kw)
