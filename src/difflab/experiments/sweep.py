"""``difflab sweep CONFIG``: train every variant of a grid on the same data, seed and budget, then
measure it with the evaluation suite; resumable, with a report (see :mod:`.report`).

A config (YAML or TOML) names the data, the network, the training options, the grid and the
evaluation::

    name: schedules-toy2d
    seed: 0
    data: {kind: toy2d, name: checkerboard, n: 20000}     # or {kind: mnist, data_dir: ..., ...}
    network: {type: mlp, hidden: 128, layers: 3}
    train: {batch_size: 512, lr: 0.002}
    grid:
      schedule: [linear, cosine, sigmoid, edm]            # or {name: cosine, T: 1000}
      prediction: [eps, v]                                # eps, x0, v, edm
      weighting: [uniform]                                # uniform, snr, min_snr, edm
      budget: [{steps: 3000}]                             # or {minutes: 5}
    stages: [0.25, 0.5, 1.0]         # quality vs training time: evaluated at these budget fractions
    sampling: {samplers: [ddim, dpmpp_2m], nfe: [5, 10, 20, 50], n: 2000,
               main: {sampler: dpmpp_2m, nfe: 20}}        # the setting of stages and the ranking

Every variant starts from the same initial weights (the network is built after seeding) and draws
the same batches, t and noise (one generator seeded with ``seed``).  Results go to
``OUT/variants/<id>/result.json``; a variant with a result is not redone, a variant killed during
training continues from its last completed stage checkpoint.
"""
from __future__ import annotations

import inspect
import itertools
import json
import math
import re
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from ..data import DATASETS, Dataset, load_dataset
from ..errors import DifflabError
from ..io import atomic_write_json, save_tensors

__all__ = ["load_config", "expand_grid", "run_sweep", "Variant"]


def load_config(path: str | Path) -> dict[str, Any]:
    """Read a sweep config from YAML (``.yaml``/``.yml``) or TOML (``.toml``) and check it."""
    path = Path(path)
    if not path.is_file():
        raise DifflabError(f"sweep config not found: {path}")
    text = path.read_text()
    try:
        if path.suffix == ".toml":
            try:
                import tomllib
            except ModuleNotFoundError:  # Python 3.10
                raise DifflabError("TOML sweep configs need Python >= 3.11 (tomllib); write the config in YAML") from None
            cfg = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            import yaml
            cfg = yaml.safe_load(text)
        else:
            raise DifflabError(f"sweep config must be .yaml, .yml or .toml, got {path.name}")
    except DifflabError:
        raise
    except Exception as e:
        raise DifflabError(f"cannot parse {path}: {str(e).splitlines()[0]}") from None
    if not isinstance(cfg, dict):
        raise DifflabError(f"{path} does not hold a mapping")
    cfg.setdefault("name", path.stem)
    check_config(cfg)
    return cfg


def check_config(cfg: dict[str, Any]) -> None:
    from ..losses import WEIGHTINGS
    from ..process.schedules import SCHEDULES
    from ..sampling import SAMPLERS
    for key in ("data", "grid", "sampling"):
        if key not in cfg:
            raise DifflabError(f"sweep config lacks the section {key!r}")
    unknown = set(cfg) - {"name", "seed", "data", "network", "train", "grid", "stages", "sampling", "eval"}
    if unknown:
        raise DifflabError(f"unknown sweep config keys: {', '.join(sorted(unknown))}")
    grid = cfg["grid"]
    unknown = set(grid) - {"schedule", "prediction", "weighting", "budget"}
    if unknown:
        raise DifflabError(f"unknown grid axes: {', '.join(sorted(unknown))} (schedule, prediction, weighting, budget)")
    for s in grid.get("schedule", ["cosine"]):
        name = s["name"] if isinstance(s, dict) else s
        if name not in SCHEDULES:
            raise DifflabError(f"grid.schedule: unknown schedule {name!r}; choose from {', '.join(SCHEDULES)}")
    for p in grid.get("prediction", ["v"]):
        if p not in ("eps", "x0", "v", "edm"):
            raise DifflabError(f"grid.prediction: unknown parameterisation {p!r} (eps, x0, v, edm)")
    for w in grid.get("weighting", ["min_snr"]):
        if w not in WEIGHTINGS:
            raise DifflabError(f"grid.weighting: unknown weighting {w!r}; choose from {', '.join(WEIGHTINGS)}")
    budgets = grid.get("budget")
    if not budgets:
        raise DifflabError("grid.budget is required: a list of {steps: N} or {minutes: M}")
    for b in budgets:
        if not isinstance(b, dict) or len(b) != 1 or next(iter(b)) not in ("steps", "minutes") \
                or not float(next(iter(b.values()))) > 0:
            raise DifflabError(f"grid.budget entries look like {{steps: 2000}} or {{minutes: 5}}, got {b!r}")
    st = cfg.get("stages", [1.0])
    if not st or sorted(st) != list(st) or st[-1] != 1.0 or st[0] <= 0:
        raise DifflabError(f"stages must increase and end at 1.0, got {st}")
    smp = cfg["sampling"]
    for name in smp.get("samplers", []):
        if name not in SAMPLERS:
            raise DifflabError(f"sampling.samplers: unknown sampler {name!r}")
    if not smp.get("samplers") or not smp.get("nfe"):
        raise DifflabError("sampling needs samplers: [...] and nfe: [...]")
    main = smp.get("main", {})
    if main and (main.get("sampler") not in smp["samplers"] or main.get("nfe") not in smp["nfe"]):
        raise DifflabError("sampling.main must name one of the samplers and one of the NFE values")
    kind = cfg["data"].get("kind")
    if kind not in DATASETS:
        raise DifflabError(f"data.kind must be one of {', '.join(DATASETS)}, got {kind!r}")


class Variant(dict):
    """One grid point: schedule, prediction, weighting, budget (a dict with an ``id``)."""

    @property
    def id(self) -> str:
        s = self["schedule"]
        sname = s["name"] if isinstance(s, dict) else s
        (bk, bv), = self["budget"].items()
        raw = f"{sname}-{self['prediction']}-{self['weighting']}-{bv:g}{'st' if bk == 'steps' else 'min'}"
        return re.sub(r"[^A-Za-z0-9_.-]", "_", raw)


def expand_grid(cfg: dict[str, Any]) -> list[Variant]:
    g = cfg["grid"]
    axes = [g.get("schedule", ["cosine"]), g.get("prediction", ["v"]), g.get("weighting", ["min_snr"]), g["budget"]]
    out = [Variant(schedule=s, prediction=p, weighting=w, budget=b) for s, p, w, b in itertools.product(*axes)]
    ids = [v.id for v in out]
    if len(set(ids)) != len(ids):
        raise DifflabError("the grid has repeated variants")
    return out


# -- data and evaluation, per data kind -------------------------------------------------------------
class _Task:
    """The data of a sweep, its held-out reference, the real-vs-real floor and the quality measure."""

    metric = ""
    keep_samples = 64        # samples of the main setting kept for the report's figure

    def __init__(self, cfg: dict[str, Any], out: Path, train: Dataset):
        self.train = train
        self.seed = int(cfg.get("seed", 0))
        self.n_eval = int(cfg["sampling"].get("n", 1000))
        self.floor: float | None = None
        self.floor_std: float | None = None

    def score(self, x: torch.Tensor) -> dict[str, float]:  # pragma: no cover - abstract
        raise NotImplementedError


class _PointTask(_Task):
    """2-D toys: exact samples as the reference; sliced Wasserstein (and MMD, energy distance) to it."""

    metric = "sliced_wasserstein"
    keep_samples = 2000

    def __init__(self, cfg: dict[str, Any], out: Path, train: Dataset):
        from ..data import sample_toy2d
        from ..metrics import sliced_wasserstein
        super().__init__(cfg, out, train)
        name = train.info.get("distribution")
        if name is None:
            raise DifflabError("point sweeps need a distribution with an exact sampler (data.kind: toy2d)")
        self.reference = sample_toy2d(name, 5000, self.seed + 1)
        # the floor: exact samples of the same count against the reference, averaged over 5 draws
        # (one draw of 2000 points varies by +-25%)
        floors = torch.tensor([sliced_wasserstein(sample_toy2d(name, self.n_eval, self.seed + 2 + k).double(),
                                                  self.reference.double()) for k in range(5)])
        self.floor, self.floor_std = float(floors.mean()), float(floors.std())

    def score(self, x: torch.Tensor) -> dict[str, float]:
        from ..metrics import energy_distance, mmd_rbf, sliced_wasserstein
        x = x.double()
        if not torch.isfinite(x).all():
            return {"sliced_wasserstein": math.inf, "mmd": math.inf, "energy": math.inf}
        return {"sliced_wasserstein": sliced_wasserstein(x, self.reference.double()),
                "mmd": mmd_rbf(x[:1000], self.reference[:1000].double()),
                "energy": energy_distance(x[:1000], self.reference[:1000].double())}


class _ImageTask(_Task):
    """Images: held-out images as the reference; the evaluation suite in a classifier's features."""

    metric = "fd"

    def __init__(self, cfg: dict[str, Any], out: Path, train: Dataset):
        super().__init__(cfg, out, train)
        d = cfg["data"]
        ref_range = d.get("ref_range", "8000:10000" if d["kind"] == "mnist" else None)
        if ref_range is None:
            raise DifflabError("data.ref_range (held-out images) is required for image sweeps other than mnist")
        self.reference = load_dataset(d["kind"], d.get("data_dir"), ref_range).x
        self.classifier = self._classifier(cfg, out)

    def _classifier(self, cfg, out: Path):
        from ..metrics import load_classifier, save_classifier, train_classifier
        path = cfg.get("eval", {}).get("classifier")
        if path:
            return load_classifier(path)
        folder = out / "classifier"
        if (folder / "classifier.json").is_file():
            return load_classifier(folder)
        if self.train.labels is None:
            raise DifflabError("image sweeps need eval.classifier (a difflab train-classifier folder) for unlabelled data")
        net = train_classifier(self.train.x, self.train.labels, steps=int(cfg.get("eval", {}).get("classifier_steps", 1500)),
                               progress=False)
        save_classifier(net, folder, {"data": self.train.name, **self.train.info})
        return net

    def score(self, x: torch.Tensor) -> dict[str, float]:
        """Quality of samples ``x`` (FD in the classifier's features; lower is better) and its floor."""
        from ..metrics.evaluate import evaluate_samples
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = evaluate_samples(x, self.train.x, self.reference, self.classifier, min_samples=0)
        self.floor = r["fd_floor"]
        return {k: r[k] for k in ("fd_samples", "kid_samples", "precision_samples", "recall_samples",
                                  "inception_score", "class_entropy")} | {"fd": r["fd_samples"]}


_TASKS: dict[str, type[_Task]] = {"points": _PointTask, "images": _ImageTask}


def _load_task(cfg: dict[str, Any], out: Path) -> _Task:
    d = dict(cfg["data"])
    kind = d.pop("kind")
    d.pop("ref_range", None)
    train_range = d.pop("train_range", None)
    data_dir = d.pop("data_dir", None)
    if "seed" in inspect.signature(DATASETS[kind]).parameters:   # sampled data sets draw with the sweep's seed
        d.setdefault("seed", int(cfg.get("seed", 0)))
    train = load_dataset(kind, data_dir, train_range, **d)
    if train.kind not in _TASKS:
        raise DifflabError(f"sweeps cannot evaluate data of kind {train.kind!r}")
    return _TASKS[train.kind](cfg, out, train)


def _loss_buckets(den, task: _Task, weighting: str, seed: int, buckets: int = 10, n: int = 512) -> dict[str, list]:
    """Held-out loss per t bucket [k/B, (k+1)/B): the variant's own training objective and, comparable
    across variants, the x0 mean squared error."""
    from ..devices import module_device
    from ..losses import denoising_loss
    from ..process import q_sample
    x = task.reference[:n].float().to(module_device(den))
    g = torch.Generator().manual_seed(seed + 7)
    obj, mse = [], []
    with torch.no_grad():
        for k in range(buckets):
            t = (k + torch.rand(x.shape[0], generator=g, dtype=torch.float64)) / buckets
            t = t.clamp(1e-4, 1.0)
            eps = torch.randn(x.shape, generator=g).to(x.device)
            obj.append(float(denoising_loss(den, x, t, eps, weighting).mean()))
            x_t = q_sample(den.schedule, x, t, eps=eps).float()
            mse.append(float(((den(x_t, t) - x) ** 2).flatten(1).mean(1).mean()))
    return {"t_mid": [(k + 0.5) / buckets for k in range(buckets)], "objective": obj, "x0_mse": mse}


# -- one variant ----------------------------------------------------------------------------------
def _run_variant(cfg: dict[str, Any], v: Variant, task: _Task, folder: Path, bar, device: str = "cpu") -> dict[str, Any]:
    from ..denoisers import Denoiser
    from ..nn import build_network, default_network
    from ..process import schedule_from_spec
    from ..sampling import nfe_settings, sample
    from ..train import TrainConfig, load_checkpoint, train
    seed = int(cfg.get("seed", 0))
    stages = list(cfg.get("stages", [1.0]))
    smp = cfg["sampling"]
    main = smp.get("main") or {"sampler": smp["samplers"][0], "nfe": max(smp["nfe"])}
    (bkind, bval), = v["budget"].items()
    net_cfg = dict(cfg.get("network") or {})
    default = default_network(task.train.shape)
    if net_cfg.get("type", default["type"]) == default["type"]:
        net_cfg = {**default, **net_cfg}
    torch.manual_seed(seed)
    den = Denoiser(build_network(net_cfg), schedule_from_spec(v["schedule"]), v["prediction"],
                   clip_x0=task.train.clip_x0)
    tkw = {k: val for k, val in (cfg.get("train") or {}).items()}
    tkw.update(seed=seed, weighting=v["weighting"], progress=False, sample_every=0, device=device)
    state_file = folder / "stages.json"
    done = json.loads(state_file.read_text()) if state_file.is_file() else []
    run_dir = folder / "run"

    def quality(den_eval, sampler: str, nfe: int, n: int) -> dict[str, Any] | None:
        st = nfe_settings(sampler, nfe)
        if st is None:
            return None
        steps, opts = st
        t0 = time.perf_counter()
        res = sample(den_eval, n=n, sampler=sampler, steps=steps, seed=seed, progress=False, **opts,
                     batch_size=task.train.sample_batch_size)
        return {"sampler": sampler, "target_nfe": nfe, "nfe": res.nfe, "seconds": time.perf_counter() - t0,
                **task.score(res.x)}, res.x

    train_seconds = sum(s["train_seconds_stage"] for s in done)
    result = None
    for k, frac in enumerate(stages):
        if k < len(done):
            continue
        prev = stages[k - 1] if k else 0.0
        if bkind == "steps":
            budget = {"steps": max(1, round(frac * bval))}
        else:
            budget = {"minutes": (frac - prev) * bval}
        bar.set_postfix_str(f"{v.id}: training to {frac:.0%}")
        resume = (run_dir / "checkpoints" / "latest").exists()  # after a finished stage or a kill
        ck = load_checkpoint(run_dir) if resume else None
        if ck is not None and bkind == "steps" and ck.step >= budget["steps"]:  # killed after training
            den_eval = ck.denoiser("ema").to(device)
            rec = {"stage": frac, "steps": ck.step, "train_seconds_stage": 0.0, "it_per_s": None, "final_loss": None}
        else:
            res = train(den, task.train, run_dir, TrainConfig(**tkw, **budget), resume=resume)
            den_eval = res.ema
            rec = {"stage": frac, "steps": res.step, "train_seconds_stage": res.seconds, "it_per_s": res.it_per_s,
                   "final_loss": res.final_loss}
        train_seconds += rec["train_seconds_stage"]
        rec["train_seconds"] = train_seconds
        if frac < 1.0:
            q, _ = quality(den_eval, main["sampler"], main["nfe"], task.n_eval)
            rec["quality"] = q
        else:
            bar.set_postfix_str(f"{v.id}: evaluating")
            table, main_x = [], None
            for sampler in smp["samplers"]:
                for nfe in smp["nfe"]:
                    out = quality(den_eval, sampler, nfe, task.n_eval)
                    if out is None:
                        continue
                    q, x = out
                    table.append(q)
                    if sampler == main["sampler"] and nfe == main["nfe"]:
                        main_x, rec["quality"] = x, q
            save_tensors({"samples": main_x[:task.keep_samples].float()}, folder / "samples.safetensors")
            result = {"variant": dict(v), "id": v.id, "data_kind": task.train.kind, "metric": task.metric, "main": main,
                      "quality": table, "loss_buckets": _loss_buckets(den_eval, task, v["weighting"], seed)}
        done.append(rec)
        atomic_write_json(state_file, done)
        bar.update(1)
    assert result is not None
    result["stages"] = done
    result["floor"], result["floor_std"] = task.floor, task.floor_std
    result["params"] = sum(p.numel() for p in den.net.parameters())
    return result


def _wait_for_results(out: Path, variants: list, poll_seconds: float = 2.0) -> None:
    """Rank 0 waits for the other ranks' variants by their ``result.json`` files, not by a collective: a variant
    may train far longer than a process group's timeout (torchrun ends every rank if one fails)."""
    import time
    while not all((out / "variants" / v.id / "result.json").is_file() for v in variants):
        time.sleep(poll_seconds)


def run_sweep(config: str | Path | dict[str, Any], out: str | Path | None = None, progress: bool = True,
              report: bool = True, device: str = "cpu") -> Path:
    """Run (or continue) a sweep and write its report; returns the output folder.  ``device``: where each
    variant trains and samples.  Under torchrun the variants still to do are spread over the ranks (rank r takes
    every W-th, :func:`difflab.distributed.my_share`, and trains it alone); rank 0 writes the report once all
    are done."""
    from .. import distributed
    from ..progress import progress_bar
    cfg = load_config(config) if not isinstance(config, dict) else config
    if isinstance(config, dict):
        check_config(cfg)
    out = Path(out or Path("sweeps_out") / cfg["name"])
    out.mkdir(parents=True, exist_ok=True)
    if distributed.is_main():
        atomic_write_json(out / "config.json", cfg)
    variants = expand_grid(cfg)
    stages = len(cfg.get("stages", [1.0]))
    todo = [v for v in variants if not (out / "variants" / v.id / "result.json").is_file()]
    done_units = sum(len(json.loads((out / "variants" / v.id / "stages.json").read_text()))
                     for v in todo if (out / "variants" / v.id / "stages.json").is_file())
    bar = progress_bar(total=len(variants) * stages, initial=(len(variants) - len(todo)) * stages + done_units,
                       desc=f"sweep {cfg['name']}", unit="stage", enabled=progress and distributed.is_main())
    task = _load_task(cfg, out) if todo else None
    for v in distributed.my_share(todo):
        folder = out / "variants" / v.id
        folder.mkdir(parents=True, exist_ok=True)
        with distributed.solo():
            res = _run_variant(cfg, v, task, folder, bar, device)
        atomic_write_json(folder / "result.json", res)
        q = res["stages"][-1]["quality"]
        bar.write(f"{v.id}: {res['metric']} {q[res['metric']]:.4f} (floor {res['floor']:.4f}) "
                  f"after {res['stages'][-1]['steps']} steps, {res['stages'][-1]['train_seconds']:.0f}s")
    bar.close()
    if distributed.world() > 1 and distributed.is_main():
        _wait_for_results(out, todo)
    if report and distributed.is_main():
        from .report import write_report
        write_report(out)
    return out
