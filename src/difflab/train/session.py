"""What every difflab trainer does around its optimisation step (diffusion, autoencoder, GAN, distillation):
a budget in steps (counted across resumes) or wall-clock minutes (of this invocation), Ctrl-C turned into a
clean stop, a progress bar with rate and time left (:mod:`difflab.progress`), ``log.jsonl`` records averaged
over ``log_every`` steps, pictures every ``sample_every`` steps and at the end, a checkpoint every
``ckpt_every_minutes``, at the end and on Ctrl-C, and checkpoints kept at chosen fractions of the budget
(*milestones*, for quality against training time).

A trainer draws its batches and takes its step; around each step it asks :meth:`Session.running` and
reports with :meth:`Session.after_step`::

    with Session(out, cfg, step, save, picture, "training") as s:
        while s.running(step):
            ... one optimisation step ...
            step += 1
            s.after_step(step, {"loss": loss}, extra={"lr": lr})
    seconds, checkpoint = s.seconds, s.checkpoint

The terms may be tensors on the training device: they are summed there (in float64, as Python floats would
be) and read back only at log steps, so the step itself never waits for the device.  Under torchrun
(:mod:`difflab.distributed`) only rank 0 writes logs, pictures and checkpoints and shows the bar; the logged
terms are averaged over the ranks, the ranks agree on when to stop (a minute budget, Ctrl-C) and on the
budget fraction, and they wait for rank 0's last checkpoint before leaving.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from .. import distributed
from ..errors import DifflabError
from .milestones import keep_milestone, milestones_due

__all__ = ["Session", "Interrupt", "LoopConfig", "RunResult", "with_overrides", "LR_SCHEDULES", "adamw"]

LR_SCHEDULES = ("constant", "cosine")


@dataclass
class LoopConfig:
    """The options every trainer shares (the diffusion, autoencoder and GAN configs extend it, each with its
    own defaults)."""

    steps: int | None = None          # total optimisation steps (counted across resumes)
    minutes: float | None = None      # wall-clock budget of this invocation
    batch_size: int = 64
    lr: float = 2e-3
    adam_betas: tuple[float, float] = (0.9, 0.999)  # AdamW (beta1, beta2)
    warmup: int = 200                 # linear LR warm-up steps
    lr_schedule: str = "constant"     # after warm-up: "constant" or "cosine" decay to 0 over the budget
    grad_clip: float = 1.0
    seed: int = 0
    log_every: int = 25
    sample_every: int = 1000          # steps between pictures (0: only at the end)
    ckpt_every_minutes: float = 5.0   # also saved at the end and on Ctrl-C
    keep: int = 3                     # newest checkpoints kept
    milestones: tuple[float, ...] = ()  # fractions of the budget whose checkpoints are also kept (RUN/milestones)
    progress: bool = True

    def check(self) -> None:
        if self.steps is None and self.minutes is None:
            raise DifflabError("give a training budget: steps or minutes")
        if self.steps is not None and self.steps < 1:
            raise DifflabError(f"steps must be >= 1, got {self.steps}")
        if self.minutes is not None and self.minutes <= 0:
            raise DifflabError(f"minutes must be > 0, got {self.minutes}")
        if self.batch_size < 1:
            raise DifflabError(f"batch size must be >= 1, got {self.batch_size}")
        if not self.lr > 0:
            raise DifflabError(f"learning rate must be > 0, got {self.lr}")
        if len(self.adam_betas) != 2 or not all(0 <= b < 1 for b in self.adam_betas):
            raise DifflabError(f"Adam betas must be two numbers in [0, 1), got {tuple(self.adam_betas)}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise DifflabError(f"unknown learning-rate schedule {self.lr_schedule!r}; choose from {', '.join(LR_SCHEDULES)}")
        if self.keep < 1 or self.log_every < 1:
            raise DifflabError(f"keep and log_every must be >= 1, got {self.keep} and {self.log_every}")
        m = list(self.milestones)
        if m != sorted(set(m)) or any(not 0 < f <= 1 for f in m):
            raise DifflabError(f"milestones must be increasing fractions of the budget in (0, 1], got {m}")


@dataclass
class RunResult:
    """What a trainer returns: steps done, this invocation's seconds and rate, whether Ctrl-C stopped it, the
    last checkpoint, the log records."""

    step: int
    seconds: float
    it_per_s: float
    interrupted: bool
    checkpoint: Path | None
    history: list[dict[str, Any]] = field(default_factory=list)


def adamw(params: Any, lr: float, betas: Sequence[float], weight_decay: float = 0.0):
    """AdamW (Loshchilov & Hutter, arXiv:1711.05101) as every difflab trainer makes it: the fused kernel where
    torch has one for the parameters' device (CPU, CUDA): one pass over all parameters, 2.8 ms instead of 13 ms
    a step for the 0.69M MNIST UNet on this CPU; ``betas`` may be a list read back from run.json."""
    import torch
    params = list(params)
    fused = all(p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.AdamW(params, lr=lr, betas=tuple(map(float, betas)), weight_decay=weight_decay, fused=fused)


def with_overrides(cls: type, config: Any, overrides: dict[str, Any], what: str = "training") -> Any:
    """A trainer's config: ``config`` (default ``cls()``) with ``overrides`` (its field names, refused by name
    otherwise), checked."""
    cfg = config or cls()
    if overrides:
        unknown = set(overrides) - set(cls.__dataclass_fields__)
        if unknown:
            raise DifflabError(f"unknown {what} options: {', '.join(sorted(unknown))}")
        cfg = cls(**{**asdict(cfg), **overrides})
    cfg.check()
    return cfg


class Interrupt:
    """Turns SIGINT into a flag checked between steps, so a step is never cut in half; a second Ctrl-C
    aborts at once."""

    def __init__(self) -> None:
        self.hit = False
        self.old: Any = None

    def __enter__(self) -> "Interrupt":
        try:
            self.old = signal.signal(signal.SIGINT, self._handler)
        except ValueError:  # not the main thread
            self.old = None
        return self

    def _handler(self, signum, frame) -> None:  # noqa: ANN001
        if self.hit:
            raise KeyboardInterrupt
        self.hit = True

    def __exit__(self, *exc: Any) -> None:
        if self.old is not None:
            signal.signal(signal.SIGINT, self.old)


class Session:
    """Budget, Ctrl-C, progress, log, pictures, checkpoints and milestones of one training invocation.

    Args:
        cfg: has ``steps``, ``minutes``, ``log_every``, ``sample_every``, ``ckpt_every_minutes``, ``progress``.
        step: the step the run starts from (its checkpoint's, on a resume).
        save: ``save(step) -> Path`` writes a checkpoint (it may read :attr:`total_seconds`); None: it declined.
        picture: ``picture(tag)`` writes a picture of the model.
        seconds_before: training seconds of the earlier invocations of a resumed run.
        milestones: increasing fractions of the budget at which a checkpoint is also kept in ``RUN/milestones``.
        on_log: called with each log record before it is written (to add fields such as warnings).
    """

    def __init__(self, out: str | os.PathLike, cfg: Any, step: int, save: Callable[[int], Path],
                 picture: Callable[[str], None], desc: str = "training", seconds_before: float = 0.0,
                 milestones: Sequence[float] = (), on_log: Callable[[dict[str, Any]], None] | None = None):
        self.out, self.cfg, self.save, self.picture, self.desc = Path(out), cfg, save, picture, desc
        self.start_step = self.step = step
        self.budget_s = None if cfg.minutes is None else 60.0 * cfg.minutes
        self.seconds_before = seconds_before
        self.milestones = list(milestones)
        # on a resume, the milestones the steps already done have reached were kept before
        self.kept = milestones_due(self.milestones, step / cfg.steps if cfg.steps else 0.0, 0) if step else 0
        self.on_log = on_log
        self.history: list[dict[str, Any]] = []
        self.checkpoint: Path | None = None
        self.interrupted = False
        self.seconds = 0.0
        self._sums: dict[str, Any] = {}
        self._counts: dict[str, int] = {}
        self._shown: dict[str, str] = {}                 # the bar's postfix for tensor terms: last logged values
        self.main = distributed.is_main()
        self._agreed_elapsed: float | None = None        # several ranks: the slowest rank's clock at this step

    # -- the budget -------------------------------------------------------------------------------
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    @property
    def total_seconds(self) -> float:
        """Training seconds of the whole run so far (earlier invocations included)."""
        return self.seconds_before + self.elapsed()

    def fraction(self, step: int) -> float:
        """How much of the budget is spent, in [0, 1]: steps done / steps or wall clock / minutes, whichever
        is further (several ranks: the clock all ranks agreed on in :meth:`running`, so they use one learning
        rate)."""
        elapsed = self.elapsed() if self._agreed_elapsed is None else self._agreed_elapsed
        return min(1.0, max(0.0 if self.cfg.steps is None else step / self.cfg.steps,
                            0.0 if self.budget_s is None else elapsed / self.budget_s))

    def running(self, step: int) -> bool:
        """False once the budget is spent or Ctrl-C was pressed (then ``interrupted`` is set).  Several ranks
        decide together (one small all-reduce of the stop flag and the clock a step), so none is left waiting."""
        if self.cfg.steps is not None and step >= self.cfg.steps:
            return False
        elapsed, hit = self.elapsed(), self._intr.hit
        if distributed.world() > 1:
            import torch
            agreed = distributed.all_max(torch.tensor([elapsed, float(hit)], dtype=torch.float64)).tolist()
            elapsed, hit = agreed[0], bool(agreed[1])
            self._agreed_elapsed = elapsed
        if self.budget_s is not None and elapsed >= self.budget_s:
            return False
        self.interrupted = hit
        return not self.interrupted

    @property
    def it_per_s(self) -> float:
        return (self.step - self.start_step) / max(self.seconds or self.elapsed(), 1e-9)

    # -- the loop ---------------------------------------------------------------------------------
    def __enter__(self) -> "Session":
        from ..devices import keep_freed_cpu_memory
        from ..progress import progress_bar
        if str(getattr(self.cfg, "device", "cpu")).startswith("cpu"):
            keep_freed_cpu_memory()   # large CPU activations reuse memory instead of faulting in fresh pages
        self._intr = Interrupt().__enter__()
        self.out.mkdir(parents=True, exist_ok=True)
        self._log = open(self.out / "log.jsonl", "a") if self.main else None
        shown = self.cfg.progress and self.main
        if self.budget_s is None:
            self.bar = progress_bar(total=self.cfg.steps, initial=self.step, desc=self.desc, unit="step",
                                    enabled=shown)
        else:
            self.bar = progress_bar(total=int(self.budget_s), desc=self.desc, unit="s", enabled=shown,
                                    bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f}s [{elapsed}<{remaining}{postfix}]")
        self.start = self._last_ckpt = self._t_log = time.perf_counter()
        self._s_log = self.step
        return self

    def write(self, text: str) -> None:
        """A line beside the progress bar (a warning)."""
        self.bar.write(text, file=sys.stderr)

    def after_step(self, step: int, terms: dict[str, Any], extra: dict[str, Any] | None = None,
                   postfix: dict[str, str] | None = None) -> None:
        """Record step ``step`` (the count of steps done): each of ``terms`` (numbers, or 0-d tensors read only
        at log steps) is averaged, over the steps that reported it, into the next log record (and over the
        ranks); ``extra`` (learning rate, gradient norm, ...) is logged as it is at that step; ``postfix`` is
        shown on the bar (default: the first term; a tensor term shows its last logged average).  Pictures,
        checkpoints and milestones follow."""
        self.step = step
        for k, v in terms.items():
            v = v.detach().double() if hasattr(v, "detach") else float(v)  # float64 sums, as Python floats
            self._sums[k] = self._sums[k] + v if k in self._sums else v
            self._counts[k] = self._counts.get(k, 0) + 1
        now = time.perf_counter()
        if step % self.cfg.log_every == 0:
            means = self._means()
            extra = {k: float(v) if hasattr(v, "detach") else v for k, v in (extra or {}).items()}  # a tensor: now read
            rec = {"step": step, **means, **extra,
                   "it_s": (step - self._s_log) / max(now - self._t_log, 1e-9), "elapsed_s": now - self.start}
            if self.on_log is not None:
                self.on_log(rec)
            if self._log is not None:
                self._log.write(json.dumps(rec) + "\n")
                self._log.flush()
            self.history.append(rec)
            self._shown = {k: f"{v:.4f}" for k, v in means.items()}
            self._sums, self._counts, self._t_log, self._s_log = {}, {}, now, step
        if postfix is None and terms:
            name, value = next(iter(terms.items()))
            text = self._shown.get(name, "") if hasattr(value, "detach") else f"{float(value):.4f}"
            postfix = {name: text} if text else None
        self.bar.set_postfix(step=step, **(postfix or {}),
                             it_s=f"{(step - self.start_step) / max(now - self.start, 1e-9):.2f}", refresh=False)
        if self.budget_s is None:
            self.bar.update(step - self.bar.n)
        else:   # an update, not n = ...; refresh(): tqdm then redraws only every mininterval (30 s off a terminal)
            self.bar.update(min(now - self.start, self.budget_s) - self.bar.n)
        if self.cfg.sample_every and step % self.cfg.sample_every == 0 and self.main:
            self.picture(f"step_{step:07d}")
        due = milestones_due(self.milestones, self.fraction(step), self.kept)
        if not self.main:
            self.kept = due
        elif due > self.kept or now - self._last_ckpt >= 60.0 * self.cfg.ckpt_every_minutes:
            written = self.save(step)   # None: the trainer refused to write (non-finite weights)
            self._last_ckpt = time.perf_counter()
            if written is not None:
                self.checkpoint = written
                if due > self.kept:
                    keep_milestone(written)
                    self.kept = due

    def _means(self) -> dict[str, float]:
        """The log record's averages of the terms since the last log step (over the ranks, too): the one
        place the summed tensors are read back from the device."""
        import torch
        names = list(self._sums)
        if not names:
            return {}
        device = next((v.device for v in self._sums.values() if hasattr(v, "device")), "cpu")
        means = torch.stack([torch.as_tensor(self._sums[k], dtype=torch.float64, device=device) / self._counts[k]
                             for k in names])
        return dict(zip(names, distributed.all_mean(means).tolist()))

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        self.bar.close()
        self.seconds = self.elapsed()
        try:
            if exc_type is None and not self.main:
                distributed.barrier()   # rank 0 writes the last checkpoint and picture meanwhile
            elif exc_type is None:
                if self.checkpoint is None or not self.checkpoint.name.endswith(f"{self.step:07d}"):
                    self.checkpoint = self.save(self.step) or self.checkpoint
                if not self.interrupted and self.milestones and self.milestones[-1] == 1.0 \
                        and self.kept < len(self.milestones) and self.checkpoint is not None:
                    keep_milestone(self.checkpoint)   # a minute budget ends just before its 1.0 milestone
                if self.interrupted:
                    print(f"interrupted at step {self.step}; checkpoint saved to {self.checkpoint}; "
                          f"continue with --resume")
                else:
                    self.picture(f"step_{self.step:07d}")
                distributed.barrier()
        finally:
            if self._log is not None:
                self._log.close()
            self._intr.__exit__(exc_type, *exc)
