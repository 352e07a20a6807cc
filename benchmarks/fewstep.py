"""Few-step generation: progressive distillation, consistency distillation, consistency training and reflow
on MNIST against the teacher's best samplers, and a figure of their trajectories on the 2-D checkerboard.

    python benchmarks/fewstep.py [--teacher RUN] [--teacher-minutes 10] [--budget-minutes M] [--n 1000]
                                 [--classifier DIR] [--work runs/fewstep]
    python benchmarks/fewstep.py --toy [--figure docs/fewstep_toy2d.png]     # the figure alone (~3 min)
    python benchmarks/fewstep.py --quick --work /tmp/fewstep_quick            # everything at tiny sizes

MNIST (``../shared/data/mnist``, images 0-7999 for training, 8000-9999 held out):

* **teacher**: ``--teacher RUN`` (its training time read from its ``log.jsonl``), or trained here with the
  ``difflab train`` defaults (UNet 16/32/64, cosine table, v-prediction, min-SNR-5) for ``--teacher-minutes``;
  its training time is the budget unit.
* **methods**, each given ``--budget-minutes`` (default: the teacher's own training time, the target's
  limit), counted in full (pairs, teacher calls, checkpoints): progressive distillation (``--pd-rounds``
  halvings from a ``2^rounds``-step DDIM teacher to 1 step; its intermediate students give 4 and 2 steps),
  consistency distillation (Heun teacher steps, 18 levels, 1/width weights), consistency training (iCT, from the
  teacher's weights) and reflow (``--pairs`` pairs from DPM-Solver++(2M), 20 steps).
* **scores**: FD, precision and recall (k = 3) of ``--n`` samples in the features of the MNIST classifier
  (``--classifier``, trained here if missing), each method at 1, 2 and 4 steps, beside the teacher's best
  of DDIM / DPM-Solver++(2M) / SDE-DPM-Solver++(2M) / UniPC at 4, 10 and 50 NFE (trailing grids), and the
  real-vs-real floor; the straightness (Liu et al.) of the teacher's and the reflowed flow's paths.
* **midpoint**: the two consistency models' 2-step sampling re-noised to a chosen sigma/alpha instead of the
  trailing grid's t = 1/2: the level is chosen by FD on sampling seed ``--seed + 1`` among MIDPOINTS (Song et
  al. 2023 and Song & Dhariwal 2023 search it too), then scored on ``--seed``; this row is the one the
  target reads for those two methods (about 3 minutes: 18 settings of 2 NFE, each scored).
* **target**: a 2-step FD within 1.5x of the teacher's 50-NFE FD, for at most the teacher's training time.

Every phase writes ``WORK/<phase>.json`` and a rerun skips finished phases; ``WORK/summary.md`` holds the
tables (also printed).  Expected runtime on the 2-core machine with defaults: teacher 10 min (0 with
``--teacher``), classifier ~5 min (0 with ``--classifier``), four methods x 10 min, evaluation ~20 min
(the teacher's 4 samplers x 64 NFE x 1000 images dominate): about 75 minutes.

``--toy`` trains on the 2-D checkerboard a flow-matching teacher (MLP, 3000 steps), its reflow (4000 pairs,
1500 steps) and a consistency distillation of it (3000 steps) - about 2.5 minutes of training in all - and
draws their sampling paths from the same 48 noises: the teacher's curved ODE paths (Euler, 64 steps), the
reflowed flow's straighter ones, the consistency model's one-step jumps (``--figure``).

``--quick`` runs all of it on scikit-learn's 8x8 digits and tiny budgets (a few seconds of training each):
a check that the script works, not a measurement.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

from difflab.io import atomic_write_json

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "mnist"
TEACHER_SAMPLERS = ("ddim", "dpmpp_2m", "dpmpp_2m_sde", "unipc")
TEACHER_NFE = (4, 10, 50)
STUDENT_STEPS = (1, 2, 4)
METHODS = ("progressive", "consistency", "consistency_training", "reflow")
MIDPOINTS = (0.2, 0.35, 0.5, 0.7, 1.0, 1.4, 2.0, 3.0)   # sigma/alpha candidates for 2-step consistency sampling


def phase(work: Path, name: str, fn, *args):
    """Run ``fn(*args)`` unless ``WORK/name.json`` exists; store its result there."""
    path = work / f"{name}.json"
    if path.is_file():
        print(f"[{name}] done before: {path}")
        return json.loads(path.read_text())
    print(f"[{name}] ...", flush=True)
    start = time.perf_counter()
    res = fn(*args)
    res["phase_seconds"] = time.perf_counter() - start
    atomic_write_json(path, res)   # a phase record is whole or absent: a rerun trusts it
    print(f"[{name}] {res['phase_seconds'] / 60:.1f} min", flush=True)
    return res


def load_data(a, part: str):
    import difflab as dl
    if a.quick:
        return dl.load_dataset("digits", index_range="0:1400" if part == "train" else "1400:1797")
    return dl.load_dataset("mnist", a.data_dir, "0:8000" if part == "train" else "8000:10000")


def train_config(a, minutes=None, steps=None, **kw):
    from difflab.train import TrainConfig
    # no milestones, as when BENCHMARKS.md's numbers were measured (difflab train keeps one at 30 % by default)
    return TrainConfig(minutes=minutes, steps=steps, seed=a.seed, progress=not a.no_progress, sample_every=0,
                       milestones=(), **({"sample_n": 4, "sample_steps": 2, "batch_size": 16} if a.quick else {}), **kw)


# -- phases --------------------------------------------------------------------------------------------
def phase_teacher(a, work: Path) -> dict:
    import difflab as dl
    if a.teacher:
        log = Path(a.teacher) / "log.jsonl"
        lines = log.read_text().splitlines() if log.is_file() else []
        secs = [json.loads(line).get("elapsed_s", 0.0) for line in lines]
        minutes = max(secs) / 60 if secs else a.teacher_minutes
        return {"run": str(a.teacher), "train_minutes": minutes}
    data = load_data(a, "train")
    network = {"channels": [8, 16]} if a.quick else None
    den = dl.create_denoiser(data.shape, network, seed=a.seed)          # the difflab train defaults
    res = dl.train(den, data, work / "teacher", train_config(a, *((None, 20) if a.quick else (a.teacher_minutes,))))
    return {"run": str(work / "teacher"), "train_minutes": res.seconds / 60, "steps": res.step}


def phase_classifier(a, work: Path) -> dict:
    from difflab.metrics import save_classifier, train_classifier
    if a.classifier:
        return {"classifier": a.classifier}
    data = load_data(a, "train")
    net = train_classifier(data.x, data.labels, steps=30 if a.quick else 1500, seed=0, progress=not a.no_progress)
    save_classifier(net, work / "classifier", {"data": "quick" if a.quick else "mnist", "steps": 1500})
    return {"classifier": str(work / "classifier")}


def method_options(a, method: str) -> dict:
    if method == "progressive":
        return {"rounds": a.pd_rounds}
    if method == "consistency_training" and a.quick:
        return {"s0": 2, "s1": 8}
    if method == "reflow":
        return {"pairs": 64 if a.quick else a.pairs, "pair_steps": 4 if a.quick else 20}
    return {}


def phase_distill(a, work: Path, method: str, teacher: dict) -> dict:
    from difflab.distill import distill
    minutes = a.budget_minutes or teacher["train_minutes"]
    cfg = train_config(a, *((None, 3 * a.pd_rounds) if a.quick else (minutes,)), lr=a.lr, warmup=a.warmup)
    data = None if method == "reflow" else load_data(a, "train")
    start = time.perf_counter()
    res = distill(teacher["run"], work / method, method, data, cfg, **method_options(a, method))
    results = res if isinstance(res, list) else [res]
    return {"student": str(work / method), "extra_minutes": (time.perf_counter() - start) / 60,
            "budget_minutes": minutes, "steps": [r.step for r in results]}


def student_runs(a, method: str, run: str) -> dict[int, tuple[str, dict]]:
    """steps -> (checkpoint, sampling options) of a method's students."""
    from difflab.distill import round_dir
    if method == "progressive":    # the round whose student makes n steps: rounds - log2(n)
        return {n: (str(round_dir(run, a.pd_rounds - int(math.log2(n)), a.pd_rounds)), {}) for n in STUDENT_STEPS
                if a.pd_rounds - int(math.log2(n)) >= 1}
    return {n: (run, {"steps": n}) for n in STUDENT_STEPS}


def evaluate(den, setting: dict, a, model, train, held) -> dict:
    import difflab as dl
    from difflab.metrics.evaluate import evaluate_samples
    setting = dict(setting)
    res = dl.sample(den, n=a.n, seed=a.seed, progress=not a.no_progress, **setting)
    scores = evaluate_samples(res.x.clamp(-1, 1), train.x, held.x, model, min_samples=min(1000, a.n))
    return {**setting, "nfe": res.nfe, "fd": scores["fd_samples"], "precision": scores["precision_samples"],
            "recall": scores["recall_samples"], "fd_floor": scores["fd_floor"], "seconds": res.seconds}


def phase_evaluate(a, work: Path, teacher: dict, classifier: dict, students: dict) -> dict:
    import difflab as dl
    from difflab.distill import straightness
    from difflab.metrics import load_classifier
    from difflab.sampling import nfe_settings
    model = load_classifier(classifier["classifier"])
    train, held = load_data(a, "train"), load_data(a, "held")
    out: dict = {"teacher": [], "students": {}}
    t_den = dl.load(teacher["run"])
    for nfe in TEACHER_NFE:
        for name in TEACHER_SAMPLERS:
            steps, opts = nfe_settings(name, nfe)
            setting = {"sampler": name, "steps": steps, "grid": "trailing", **opts}
            r = evaluate(t_den, setting, a, model, train, held)
            out["teacher"].append({"target_nfe": nfe, **r})
            print(f"teacher {name} {nfe} NFE: FD {r['fd']:.2f}", flush=True)
    for method, info in students.items():
        rows = []
        for n, (run, extra) in student_runs(a, method, info["student"]).items():
            den = dl.load(run)
            r = evaluate(den, {**den.sampling, **extra}, a, model, train, held)
            rows.append({"steps": n, **r})
            print(f"{method} {n} steps: FD {r['fd']:.2f}", flush=True)
        out["students"][method] = rows
    z = torch.randn(256, *t_den.data_shape, generator=torch.Generator().manual_seed(a.seed))
    reflowed = dl.load(students["reflow"]["student"])
    out["straightness"] = {"teacher": straightness(t_den, z), "reflow": straightness(reflowed, z)}
    return out


def phase_midpoint(a, work: Path, classifier: dict, students: dict) -> dict:
    """The re-noising level of 2-step consistency sampling (Song et al. 2023 search it too), chosen by FD on
    sampling seed ``seed + 1`` among MIDPOINTS, then scored on the reported seed."""
    import argparse as _argparse

    import difflab as dl
    from difflab.metrics import load_classifier
    model = load_classifier(classifier["classifier"])
    train, held = load_data(a, "train"), load_data(a, "held")
    choose = _argparse.Namespace(**{**vars(a), "seed": a.seed + 1})
    out = {}
    for method in ("consistency", "consistency_training"):
        den = dl.load(students[method]["student"])
        search = []
        for level in MIDPOINTS:
            r = evaluate(den, {**den.sampling, "steps": 2, "sigma_ratios": str(level)}, choose, model, train, held)
            search.append({"sigma_mid": level, **r})
            print(f"{method} 2 steps, sigma_mid {level} (seed {choose.seed}): FD {r['fd']:.2f}", flush=True)
        best = min(search, key=lambda r: r["fd"])["sigma_mid"]
        r = evaluate(den, {**den.sampling, "steps": 2, "sigma_ratios": str(best)}, a, model, train, held)
        out[method] = {"search": search, "sigma_mid": best, "choose_seed": choose.seed, "reported": r}
        print(f"{method} 2 steps, sigma_mid {best} (seed {a.seed}): FD {r['fd']:.2f}", flush=True)
    return {"methods": out}


# -- report ---------------------------------------------------------------------------------------------
def summary(teacher: dict, distilled: dict, ev: dict, mid: dict | None = None) -> str:
    best = {n: min((r for r in ev["teacher"] if r["target_nfe"] == n), key=lambda r: r["fd"]) for n in TEACHER_NFE}
    floor = ev["teacher"][0]["fd_floor"]
    lines = [f"Teacher: {teacher['run']}, {teacher['train_minutes']:.1f} min of training. Real-vs-real FD floor "
             f"{floor:.2f}. Cells: FD / precision / recall.", "",
             "| model | " + " | ".join(f"{n} step{'s' * (n > 1)}" for n in STUDENT_STEPS) + " | extra training (min) |",
             "|---" * (len(STUDENT_STEPS) + 2) + "|"]
    fmt = lambda r: f"{r['fd']:.2f} / {r['precision']:.2f} / {r['recall']:.2f}" if r else ""  # noqa: E731
    for method, rows in ev["students"].items():
        by = {r["steps"]: r for r in rows}
        lines.append(f"| {method} | " + " | ".join(fmt(by.get(n)) for n in STUDENT_STEPS)
                     + f" | {distilled[method]['extra_minutes']:.1f} |")
    lines += ["", "| teacher, best sampler | " + " | ".join(f"{n} NFE" for n in TEACHER_NFE) + " |",
              "|---" * (len(TEACHER_NFE) + 1) + "|",
              "| | " + " | ".join(f"{fmt(best[n])} ({best[n]['sampler']})" for n in TEACHER_NFE) + " |", ""]
    mid = (mid or {}).get("methods", {})
    for method, m in mid.items():
        lines.append(f"* {method}, 2 steps re-noised to sigma/alpha {m['sigma_mid']} (chosen by FD on sampling seed "
                     f"{m['choose_seed']} among {', '.join(map(str, MIDPOINTS))}): {fmt(m['reported'])}")
    lines.append("")
    ref = best[50]["fd"]
    for method, rows in ev["students"].items():
        two = next((r for r in rows if r["steps"] == 2), None)
        if two is None:
            continue
        if method in mid:   # the level chosen on another seed, not the better of the two on this one
            two = mid[method]["reported"]
        ok_fd = two["fd"] <= 1.5 * ref
        ok_t = distilled[method]["extra_minutes"] <= teacher["train_minutes"] * 1.02
        how = f" (re-noised to sigma/alpha {two['sigma_ratios']})" if "sigma_ratios" in two else ""
        lines.append(f"* {method}: 2-step FD {two['fd']:.2f}{how} vs 1.5 x {ref:.2f} = {1.5 * ref:.2f} "
                     f"({'met' if ok_fd else 'not met'}); {distilled[method]['extra_minutes']:.1f} min vs the "
                     f"teacher's {teacher['train_minutes']:.1f} ({'within' if ok_t else 'over'})")
    st = ev["straightness"]
    lines.append(f"* straightness S (Liu et al.) / excess path length: teacher {st['teacher']['S']:.4f} / "
                 f"{st['teacher']['excess_length']:.4f}, reflowed flow {st['reflow']['S']:.4f} / "
                 f"{st['reflow']['excess_length']:.4f} (S is in each model's own time; the length compares)")
    return "\n".join(lines)


# -- the 2-D figure -------------------------------------------------------------------------------------
def toy_figure(a, work: Path) -> Path:
    """Teacher (flow matching), its reflow and its consistency distillation on the checkerboard; their paths."""
    import difflab as dl
    from difflab.distill import distill
    from difflab.viz import paths_figure
    steps = (30, 20, 20) if a.quick else (3000, 1500, 3000)
    data = dl.load_dataset("toy2d", name="checkerboard", n=4000 if a.quick else 20000)
    teacher = work / "toy_teacher"
    kw = dict(batch_size=256, sample_every=0, sample_n=4, sample_steps=2, progress=not a.no_progress, seed=a.seed)
    start = time.perf_counter()
    if not (teacher / "checkpoints" / "latest").is_file():
        den = dl.create_denoiser(data.shape, schedule="flow", prediction="velocity", clip_x0=None, seed=a.seed)
        dl.train(den, data, teacher, dl.TrainConfig(steps=steps[0], weighting="flow", lr=2e-3, **kw))
    runs = {"reflow": {"pairs": 500 if a.quick else 4000, "pair_steps": 10 if a.quick else 32,
                       "pair_sampler": "dpmpp_2m"}, "consistency": {"weighting": "unit"}}   # as README's table
    lr = {"reflow": 1e-3, "consistency": 2e-4}
    for k, (method, opts) in enumerate(runs.items()):
        if not (work / f"toy_{method}" / "checkpoints" / "latest").is_file():
            distill(teacher, work / f"toy_{method}", method, data,
                    dl.TrainConfig(steps=steps[k + 1], lr=lr[method], warmup=100, **kw), **opts)
    print(f"toy training: {(time.perf_counter() - start) / 60:.1f} min", flush=True)
    from difflab.sampling import SampleNoise, get_sampler
    z = torch.randn(48, 2, generator=torch.Generator().manual_seed(a.seed))   # x_T: all schedules have sigma(1) = 1
    paths = {}
    for label, run in (("teacher: flow matching, Euler 64", teacher), ("reflow, Euler 64", work / "toy_reflow"),
                       ("consistency distillation, 1 step", work / "toy_consistency")):
        den = dl.load(run)
        sampler, n = (den.sampling["sampler"], 1) if den.prediction.startswith("consistency_") else ("euler", 64)
        xs = [z]
        get_sampler(sampler).fn(den, z, dl.time_grid(den.schedule, n, "trailing"),
                                generator=SampleNoise(a.seed, range(48)), callback=lambda d: xs.append(d["x"].detach()))
        paths[label] = torch.stack(xs)
    return paths_figure(paths, a.figure, data=data.x[:3000], lim=3.5, title="sampling paths from the same noise")


def main(argv=None) -> int:
    from difflab.metrics import classifier_folder
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", help="an existing teacher run (else one is trained with the defaults)")
    ap.add_argument("--teacher-minutes", type=float, default=10.0)
    ap.add_argument("--budget-minutes", type=float, help="each method's budget (default: the teacher's training time)")
    ap.add_argument("--pd-rounds", type=int, default=4, help="progressive distillation from 2^rounds DDIM steps")
    ap.add_argument("--pairs", type=int, default=4096, help="reflow pairs")
    ap.add_argument("--lr", type=float, default=2e-4, help="the students' learning rate (they start from the teacher)")
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--n", type=int, default=1000, help="samples per score")
    ap.add_argument("--classifier", type=classifier_folder, help="an MNIST classifier folder (difflab train-classifier)")
    ap.add_argument("--data-dir", default=str(DEFAULT_DATA))
    ap.add_argument("--work", default="runs/fewstep")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--toy", action="store_true", help="only the 2-D checkerboard figure")
    ap.add_argument("--figure", default=str(ROOT / "docs" / "fewstep_toy2d.png"))
    ap.add_argument("--quick", action="store_true", help="tiny sizes on the 8x8 digits: a check that it runs")
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)
    if a.quick:
        a.n, a.pd_rounds = min(a.n, 40), min(a.pd_rounds, 3)
        if a.figure == str(ROOT / "docs" / "fewstep_toy2d.png"):
            a.figure = str(Path(a.work) / "fewstep_toy2d.png")
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    print(f"figure: {toy_figure(a, work)}")
    if a.toy:
        return 0
    teacher = phase(work, "teacher", phase_teacher, a, work)
    classifier = phase(work, "classifier", phase_classifier, a, work)
    distilled = {m: phase(work, f"distill_{m}", phase_distill, a, work, m, teacher) for m in METHODS}
    ev = phase(work, "evaluate", phase_evaluate, a, work, teacher, classifier, distilled)
    mid = phase(work, "midpoint", phase_midpoint, a, work, classifier, distilled)
    text = summary(teacher, distilled, ev, mid)
    (work / "summary.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
