"""The explorer's state and API: its two models, their first-use training, the sampling jobs.

:class:`Explorer` holds the models the page uses (the learner's run or the built-in digits model; the 2-D
model of the score field), trains missing built-in models in a child process (:mod:`.builtin`), runs
long actions as jobs (:mod:`.jobs`) and answers the API as plain methods taking a dict of parameters, so
tests call them without a server; :mod:`.server` puts them behind HTTP.  Every user error is a
:class:`DifflabError` whose one line the page shows.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import torch

from ..errors import DifflabError
from ..process import schedule_from_spec
from ..sampling import SAMPLERS
from . import panels
from .builtin import BUILTINS, Recipe, builtin_folder, cache_dir, finish_builtin, load_data
from .jobs import Cancelled, Job, JobManager
from .models import ExploreModel, load_model, model_samples, run_data

__all__ = ["Explorer", "Slot", "MAX_STEPS"]

MAX_STEPS = 1000


class Slot:
    """One model of the page: ``role`` is ``model`` (forward, reverse and sampler panels) or ``toy`` (the score
    field); it is the learner's checkpoint at ``path`` or the built-in ``builtin`` trained by ``recipe``."""

    def __init__(self, role: str, path: str | None = None, builtin: str | None = None, recipe: Recipe | None = None,
                 folder: Path | None = None):
        self.role, self.path, self.builtin, self.recipe, self.folder = role, path, builtin, recipe, folder
        self.model: ExploreModel | None = None
        self.error: str | None = None
        self.job: Job | None = None

    @property
    def status(self) -> str:
        if self.model is not None:
            return "ready"
        if self.job is not None and self.job.state == "running":
            return "training"
        return "error" if self.error else "missing"

    def info(self) -> dict[str, Any]:
        return {"role": self.role, "status": self.status, "error": self.error, "path": self.path,
                "builtin": self.builtin, "summary": self.recipe.summary if self.recipe else None,
                "model": self.model.info() if self.model else None,
                "job": self.job.status(with_result=False) if self.job else None}

    def ready(self) -> ExploreModel:
        """The model, or a one-line reason why there is none yet."""
        if self.model is not None:
            return self.model
        what = f"the built-in {self.builtin} model" if self.builtin else f"the model {self.path}"
        if self.status == "training":
            raise DifflabError(f"{what} is still training ({self.job.message})")
        raise DifflabError(self.error or f"{what} is not trained yet")


def _param(params: dict[str, Any], key: str, default: Any, lo: float, hi: float, kind: type = int) -> Any:
    """A number parameter (``kind`` int or float), checked to lie in [lo, hi]."""
    v = params.get(key)
    if v is None or v == "":
        return default
    try:
        x = float(v)
    except (TypeError, ValueError):
        raise DifflabError(f"parameter {key} must be a number, got {v!r}") from None
    if kind is int:
        if not x.is_integer():
            raise DifflabError(f"parameter {key} must be a whole number, got {v!r}")
        x = int(x)
    if not lo <= x <= hi:   # also refuses NaN
        raise DifflabError(f"parameter {key} must be in [{lo:g}, {hi:g}], got {v!r}")
    return x


class Explorer:
    """The explorer's models, jobs and API.

    Args:
        run: the learner's checkpoint (run folder, checkpoint folder or weights file); None: built-in digits.
        toy_run: a 2-D model for the score field; None: the run itself when it is 2-D, else built-in
            checkerboard.
        cache: where built-in models are cached (default :func:`.builtin.cache_dir`).
        budgets: training overrides per built-in name (tests: ``{"checkerboard": {"steps": 50}}``).
        train_missing: start training the built-in models that are not cached yet (toy first: it is quick).
    """

    def __init__(self, run: str | os.PathLike | None = None, toy_run: str | os.PathLike | None = None,
                 cache: str | os.PathLike | None = None, budgets: dict[str, dict[str, Any]] | None = None,
                 train_missing: bool = True):
        self.cache = Path(cache) if cache else cache_dir()
        self.budgets = budgets or {}
        self.jobs = JobManager()
        self._lock = threading.Lock()          # the forward panel's data, found once
        self._train_lock = threading.Lock()    # the queue of first-use trainings
        self._forward_data: tuple[torch.Tensor, str, str] | None = None
        self.main = self._open("model", run, "digits")
        if toy_run is None and self.main.model is not None and self.main.model.kind == "points":
            self.toy = self.main
        else:
            self.toy = self._open("toy", toy_run, "checkerboard")
        self._remove_abandoned()
        self._pending = [s for s in (self.toy, self.main) if s.builtin and s.model is None and not s.error]
        if train_missing:
            self._train_next()

    # -- models ----------------------------------------------------------------------------------------
    def _open(self, role: str, path: str | os.PathLike | None, builtin: str) -> Slot:
        if path is not None:
            slot = Slot(role, path=str(path))
            try:
                slot.model = load_model(path)
            except DifflabError as e:
                slot.error = f"cannot open {path}: {e}"
            return slot
        recipe = BUILTINS[builtin].with_budget(**self.budgets.get(builtin, {}))
        slot = Slot(role, builtin=builtin, recipe=recipe, folder=builtin_folder(builtin, recipe, self.cache))
        if (slot.folder / "checkpoints" / "latest").is_file():
            self._load_builtin(slot)
        return slot

    def _remove_abandoned(self) -> None:
        """Delete the temporary folders of trainings whose explorer process is gone (killed mid-training)."""
        for tmp in self.cache.glob(".tmp-*"):
            m = re.fullmatch(r"\.tmp-.+-(\d+)-train-\d+", tmp.name)
            if m is None:
                continue
            try:
                os.kill(int(m.group(1)), 0)
            except ProcessLookupError:
                shutil.rmtree(tmp, ignore_errors=True)
            except OSError:
                pass

    def _load_builtin(self, slot: Slot) -> None:
        try:
            slot.model = load_model(slot.folder, f"built-in {slot.builtin}: {slot.recipe.summary}")
            slot.error = None
        except DifflabError as e:
            slot.error = f"the cached built-in {slot.builtin} model is unreadable ({e}); delete {slot.folder}"

    def _train_next(self) -> None:
        with self._train_lock:
            while self._pending:
                slot = self._pending.pop(0)
                if slot.model is None and (slot.job is None or slot.job.state != "running"):
                    self._start_training(slot)
                    return

    def _start_training(self, slot: Slot) -> Job:
        def on_end(job: Job) -> None:
            if job.state == "done":
                self._load_builtin(slot)
            elif job.state == "error":
                slot.error = job.error
            self._train_next()

        slot.error = None
        slot.job = self.jobs.submit("train", lambda job: self._train(slot, job), on_end)
        return slot.job

    def _train(self, slot: Slot, job: Job) -> dict[str, Any]:
        """Train a built-in model in a child process, reading its ``log.jsonl`` for progress; cancel kills it."""
        import difflab
        recipe = slot.recipe
        self.cache.mkdir(parents=True, exist_ok=True)
        tmp = self.cache / f".tmp-{slot.folder.name}-{os.getpid()}-{job.id}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        env = dict(os.environ)
        src = str(Path(difflab.__file__).resolve().parents[1])    # the child imports this very difflab
        env["PYTHONPATH"] = src + os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else src
        cmd = [sys.executable, "-m", "difflab.explore", slot.builtin, str(tmp), "--budget",
               json.dumps(recipe.train)]
        steps, minutes = recipe.train.get("steps"), recipe.train.get("minutes")
        what = f"training the built-in {slot.builtin} model"
        job.report(0.0, f"{what}: starting")
        err_path = tmp / "stderr.txt"
        with open(err_path, "w") as err:
            # a session of its own: Ctrl-C in the terminal reaches the server, which cancels the job
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, env=env,
                                    start_new_session=True)
            try:
                while proc.poll() is None:
                    if job.cancel_requested:
                        proc.terminate()
                        try:
                            proc.wait(10)
                        except subprocess.TimeoutExpired:
                            proc.kill()
                            proc.wait()
                        raise Cancelled
                    self._report_training(job, tmp / "log.jsonl", what, steps, minutes)
                    time.sleep(0.25)
                job.check()     # cancelled as it ended: its run may be an interrupted one, not the recipe's
            except BaseException:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        if proc.returncode != 0:
            lines = [ln.strip() for ln in err_path.read_text(errors="replace").splitlines() if ln.strip()]
            shutil.rmtree(tmp, ignore_errors=True)
            reason = lines[-1].removeprefix("difflab: error: ") if lines else f"exit status {proc.returncode}"
            raise DifflabError(f"{what} failed: {reason}")
        err_path.unlink()
        return {"folder": str(finish_builtin(tmp, slot.folder))}

    @staticmethod
    def _report_training(job: Job, log: Path, what: str, steps: int | None, minutes: float | None) -> None:
        rec: dict[str, Any] = {}
        try:
            lines = log.read_text().splitlines()
            rec = json.loads(lines[-1]) if lines else {}
        except (OSError, ValueError):
            pass
        step = int(rec.get("step", 0))
        elapsed = time.monotonic() - job.started
        frac = max(step / steps if steps else 0.0, elapsed / (60 * minutes) if minutes else 0.0)
        budget = f"of at most {steps}" if steps else ""
        cap = f" (at most {minutes:g} min)" if minutes else ""
        loss = f", loss {rec['loss']:.4f}" if "loss" in rec else ""
        job.report(min(frac, 0.99), f"{what}: step {step} {budget}{cap}{loss}")

    # -- the API -----------------------------------------------------------------------------------------
    def state(self, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Both models, the samplers, and the forward panel's examples."""
        x, kind, note = self.forward_data()
        return {"model": self.main.info(), "toy": self.toy.info(),
                "samplers": [{"name": s.name, "summary": s.summary, "order": s.order,
                              "nfe_per_step": s.nfe_of_step(s.settings()), "adaptive": s.adaptive,
                              "stochastic": s.is_stochastic(s.settings())} for s in SAMPLERS.values()],
                "forward": {"kind": kind, "examples": int(x.shape[0]) if kind == "images" else 1, "note": note},
                "max_steps": MAX_STEPS}

    def forward_data(self) -> tuple[torch.Tensor, str, str]:
        """The forward panel's clean examples, their kind, and where they come from."""
        with self._lock:
            if self._forward_data is None:
                self._forward_data = self._find_forward_data()
            return self._forward_data

    def _find_forward_data(self) -> tuple[torch.Tensor, str, str]:
        slot = self.main
        if slot.builtin:
            return load_data(slot.recipe).x[:256], "images", "scikit-learn digits (the built-in model's data)"
        m = slot.model
        if m is None:
            return load_data(BUILTINS["digits"]).x[:256], "images", "scikit-learn digits (the run could not be opened)"
        try:
            return run_data(m.config, m.shape), m.kind, "the run's training data"
        except DifflabError as e:
            n = 16 if m.kind == "images" else 1000
            return model_samples(m, n), m.kind, f"the model's own samples (its training data: {e})"

    def _forward_schedules(self) -> dict[str, Any]:
        slot = self.main
        if slot.model is not None:
            return panels.forward_schedules(slot.model.denoiser.schedule, f"{slot.model.info()['schedule']} (this model)")
        if slot.builtin:
            m = slot.recipe.model
            return panels.forward_schedules(schedule_from_spec(m["schedule"], m["timesteps"]),
                                            f"{m['schedule']} table (this model)")
        return panels.forward_schedules(None)

    def schedules(self, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return panels.schedule_curves(self._forward_schedules())

    def forward(self, params: dict[str, Any]) -> dict[str, Any]:
        x, kind, note = self.forward_data()
        t = _param(params, "t", 0.5, 0.0, 1.0, float)
        seed = _param(params, "seed", 0, 0, 2**31 - 1)
        if kind == "images":
            index = _param(params, "index", 0, 0, x.shape[0] - 1)
            x0 = x[index:index + 1]
        else:
            index, x0 = 0, x[:1000]
        return {**panels.forward_view(x0, kind, self._forward_schedules(), t, seed), "index": index, "note": note}

    def _cond(self, model: ExploreModel, params: dict[str, Any], n: int) -> tuple[dict | None, float | None]:
        label = params.get("label")
        label = None if label in (None, "", "none") else _param(params, "label", None, 0, 10**6)
        cond = panels.label_cond(label, n, model.num_classes)
        guidance = _param(params, "guidance", 1.0, 0.0, 20.0, float) if cond else None
        return cond, guidance

    def start_sample(self, params: dict[str, Any]) -> dict[str, Any]:
        """A reverse-process job: the trajectory of one sampler run."""
        m = self.main.ready()
        sampler = str(params.get("sampler", "ddim"))
        if sampler not in SAMPLERS:
            raise DifflabError(f"unknown sampler {sampler!r}; choose from {', '.join(SAMPLERS)}")
        steps = _param(params, "steps", 50, 1, MAX_STEPS)
        seed = _param(params, "seed", 0, 0, 2**31 - 1)
        n = 9 if m.kind == "images" else 500
        cond, guidance = self._cond(m, params, n)
        frames = 100 if m.shape[-1] <= 16 else 50
        job = self.jobs.submit("sample", lambda job: panels.reverse_run(
            m.denoiser, m.kind, job, sampler, steps, seed, n, cond, guidance, max_frames=frames))
        return job.status()

    def start_compare(self, params: dict[str, Any]) -> dict[str, Any]:
        """A samplers-side-by-side job at one NFE budget."""
        m = self.main.ready()
        nfe = _param(params, "nfe", 10, 1, 200)
        seed = _param(params, "seed", 0, 0, 2**31 - 1)
        names = params.get("samplers")
        if names is not None:
            names = [s for s in (names.split(",") if isinstance(names, str) else names) if s]
            bad = [s for s in names if s not in SAMPLERS]
            if bad:
                raise DifflabError(f"unknown sampler {bad[0]!r}; choose from {', '.join(SAMPLERS)}")
        n = 16 if m.kind == "images" else 500
        cond, guidance = self._cond(m, params, n)
        job = self.jobs.submit("compare", lambda job: panels.compare_run(
            m.denoiser, m.kind, job, nfe, seed, n, names, cond, guidance))
        return job.status()

    def score(self, params: dict[str, Any]) -> dict[str, Any]:
        """The score field of the 2-D model along a sampling trajectory."""
        m = self.toy.ready()
        sampler = str(params.get("sampler", "ddim"))
        if sampler not in SAMPLERS:
            raise DifflabError(f"unknown sampler {sampler!r}; choose from {', '.join(SAMPLERS)}")
        steps = _param(params, "steps", 40, 1, 200)
        seed = _param(params, "seed", 0, 0, 2**31 - 1)
        if self.toy.recipe is not None:
            data = load_data(self.toy.recipe).x
        else:
            try:
                data = run_data(m.config, m.shape)
            except DifflabError:
                data = model_samples(m, 1000)
        return panels.score_view(m.denoiser, data, sampler, steps, seed)

    def start_training(self, params: dict[str, Any]) -> dict[str, Any]:
        """(Re)start the first-use training of a built-in model (``role``: ``model`` or ``toy``)."""
        role = params.get("role", "model")
        slot = {"model": self.main, "toy": self.toy}.get(role)
        if slot is None:
            raise DifflabError(f"unknown role {role!r}; choose model or toy")
        if not slot.builtin:
            raise DifflabError(f"the {role} is the given checkpoint {slot.path}; only built-in models are trained here")
        if slot.model is not None:
            raise DifflabError(f"the built-in {slot.builtin} model is trained already ({slot.folder})")
        if slot.job is not None and slot.job.state == "running":
            return slot.job.status()
        return self._start_training(slot).status()

    def job_status(self, job_id: str) -> dict[str, Any]:
        return self.jobs.get(job_id).status()

    def cancel(self, job_id: str) -> dict[str, Any]:
        job = self.jobs.get(job_id)
        job.cancel()
        return job.status()

    def close(self, timeout: float = 15.0) -> None:
        """Cancel every job (killing training processes) and wait for them to end."""
        self.jobs.cancel_all()
        for job in list(self.jobs.jobs.values()):
            job.finished.wait(timeout)
