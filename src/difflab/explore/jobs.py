"""Long actions of the explorer as server-side jobs: progress the page polls, and a cancel flag.

A :class:`Job` runs a function in a thread; the function reports a fraction done and a message with
:meth:`Job.report` and calls :meth:`Job.check` at every unit of work, which raises :class:`Cancelled`
once the page has asked to cancel.  Sampling jobs check it at every network evaluation through
:class:`Watch`, a denoiser wrapper that also counts those evaluations (the NFE shown on the page).
"""
from __future__ import annotations

import itertools
import sys
import threading
import time
import traceback
from typing import Any, Callable

from torch import Tensor

from ..denoisers.denoiser import NFECounter
from ..errors import DifflabError

__all__ = ["Cancelled", "Job", "JobManager", "Watch"]


class Cancelled(Exception):
    """Raised inside a job's work when the page cancelled it."""


class Job:
    """One long action: ``state`` is ``running``, ``done``, ``cancelled`` or ``error``."""

    def __init__(self, job_id: str, kind: str):
        self.id, self.kind = job_id, kind
        self.state = "running"
        self.fraction = 0.0
        self.message = "starting"
        self.result: Any = None
        self.error: str | None = None
        self.started = time.monotonic()
        self.ended: float | None = None
        self._cancel = threading.Event()
        self.finished = threading.Event()

    def report(self, fraction: float, message: str) -> None:
        self.fraction = min(max(float(fraction), 0.0), 1.0)
        self.message = message

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancel_requested(self) -> bool:
        return self._cancel.is_set()

    def check(self) -> None:
        """Raise :class:`Cancelled` if the page asked to cancel this job."""
        if self._cancel.is_set():
            raise Cancelled

    def status(self, with_result: bool = True) -> dict[str, Any]:
        """What the page polls: state, fraction, message, seconds, ETA (and the result once done)."""
        elapsed = (self.ended or time.monotonic()) - self.started
        eta = elapsed * (1 - self.fraction) / self.fraction if self.state == "running" and self.fraction > 0.02 else None
        out = {"id": self.id, "kind": self.kind, "state": self.state, "fraction": self.fraction,
               "message": self.message, "seconds": round(elapsed, 2), "eta_s": None if eta is None else round(eta, 1),
               "error": self.error}
        if with_result and self.state == "done":
            out["result"] = self.result
        return out


class JobManager:
    """Runs jobs in threads and keeps the newest ``keep`` of them for polling."""

    def __init__(self, keep: int = 32):
        self.jobs: dict[str, Job] = {}
        self.keep = keep
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def submit(self, kind: str, work: Callable[[Job], Any], on_end: Callable[[Job], None] | None = None) -> Job:
        """Start ``work(job)`` in a thread; its return value becomes ``job.result``; ``on_end(job)`` runs after
        it whatever the outcome."""
        with self._lock:
            job = Job(f"{kind}-{next(self._ids)}", kind)
            self.jobs[job.id] = job
            for old in list(self.jobs)[:-self.keep]:
                if self.jobs[old].state != "running":
                    del self.jobs[old]
        threading.Thread(target=self._run, args=(job, work, on_end), name=job.id, daemon=True).start()
        return job

    @staticmethod
    def _run(job: Job, work: Callable[[Job], Any], on_end: Callable[[Job], None] | None) -> None:
        try:
            job.result = work(job)
            job.state, job.fraction, job.message = "done", 1.0, "done"
        except Cancelled:
            job.state, job.message = "cancelled", "cancelled"
        except DifflabError as e:
            job.state, job.error = "error", str(e)
        except Exception as e:  # noqa: BLE001 - the page gets one line, the terminal the traceback
            traceback.print_exc(file=sys.stderr)
            job.state, job.error = "error", f"internal error: {type(e).__name__}: {e}".splitlines()[0]
        finally:
            job.ended = time.monotonic()
            if on_end is not None:
                on_end(job)
            job.finished.set()

    def get(self, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        if job is None:
            raise DifflabError(f"no job {job_id!r} (finished jobs are kept for a while only)")
        return job

    def cancel_all(self) -> None:
        for job in list(self.jobs.values()):
            job.cancel()


class Watch(NFECounter):
    """A denoiser wrapper for a job: counts network evaluations (``nfe``, as :class:`NFECounter`), checks the
    job's cancel flag before each one and reports ``nfe / expected`` as the job's progress."""

    def __init__(self, denoiser, job: Job, expected: int, what: str = ""):
        super().__init__(denoiser)
        self.train(bool(getattr(denoiser, "training", False)))   # sample() restores the mode it finds here
        self.job, self.expected, self.what = job, max(1, expected), what
        self.offset = 0.0      # progress already done by earlier runs of the same job
        self.share = 1.0       # the fraction of the job this run stands for

    def forward(self, x_t: Tensor, t: Tensor | float, **cond: Any) -> Tensor:
        self.job.check()
        out = super().forward(x_t, t, **cond)
        self.job.report(self.offset + self.share * min(1.0, self.nfe / self.expected),
                        f"{self.what}{self.nfe} network evaluations")
        return out
