"""Guidance and editing on MNIST: how far classifier-free guidance, its interval, classifier guidance and
autoguidance move requested-class accuracy, FD, precision and recall; inpainting and super-resolution.

    python benchmarks/guidance.py --work runs/guidance --classifier runs/mnist_classifier
    python benchmarks/guidance.py --work /tmp/g --quick        # seconds: every phase at toy sizes

Models (MNIST images 0-7999, ``difflab train`` defaults, this CPU alone):

* a class-conditional model (``--conditional``, label dropout 0.1), checkpointed after ``--minutes`` (10) and
  trained on to ``--long-minutes`` (30) in one run (constant learning rate, exact resume);
* an unconditional model trained ``--minutes`` whose EMA weights at 30% of that run are kept as the weak model
  of autoguidance (the weak model comes out of the same 10 minutes);
* a noise-aware classifier on the model's schedule (``difflab train-classifier --noisy``) for classifier guidance.

For each conditional model, method (CFG; CFG with the guidance interval sigma/alpha in (0.28, 5.42] of
Kynkaanniemi et al. 2024; classifier guidance of the unconditional (null-label) model, below sigma/alpha 80) and
scale in ``--scales``, and for classifier guidance of the unconditional model at ``--uncond-classifier-scales``: ``--n`` samples (an equal number per class), DPM-Solver++(2M) with 20 steps on the trailing grid,
scored against held-out images 8000-9999 by the evaluation classifier (``--classifier``, trained here if
missing): accuracy of the requested class, FD, precision, recall.  Autoguidance of the unconditional model:
precision and recall against the scale.  Inpainting (left half erased, held-out digits) and 2x super-resolution
(14x14 -> 28x28) with the unconditional model: classifier accuracy against the true labels, and PSNR for
super-resolution, beside bicubic upsampling.

Expected runtime on this 2-core CPU: about 40 minutes of training, 6 of classifiers, and under a minute per
guided setting (1000 samples x 20 steps x up to 2 evaluations; 57 settings): about 1.5 hours in all.  Each phase writes
``WORK/<phase>.json``; a rerun skips finished ones.  The summary is ``WORK/summary.json``, a Markdown table on
stdout and the figure ``WORK/guidance.png``.
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from pathlib import Path

import torch

import difflab as dl
from difflab.io import atomic_write_json
from difflab.metrics import load_classifier, save_classifier, train_classifier
from difflab.process.forward import q_sample

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "mnist"
INTERVAL = (0.28, 5.42)          # Kynkaanniemi et al. (2024), EDM2's interval in sigma (= sigma/alpha here)
SAMPLER = dict(sampler="dpmpp_2m", steps=20, grid="trailing")
METHODS = ("cfg", "cfg_interval", "classifier")
# classifier guidance below sigma/alpha 80 only (Karras et al.'s top level): at t = 1 (sigma/alpha ~ 1e4 on the
# cosine schedule) the factor sigma^2/alpha multiplies the learned classifier's gradient of pure noise by ~2e4;
# on the trailing 20-step grid this skips the first evaluation only (the next is at sigma/alpha ~ 13)
CLASSIFIER_INTERVAL = (0.0, 80.0)


def _json(path: Path, obj=None):
    if obj is None:
        return json.loads(path.read_text())
    atomic_write_json(path, obj)   # a phase record is whole or absent: a rerun trusts it
    return obj


def _data(a, rng: str):
    return dl.load_dataset("digits" if a.quick else "mnist", None if a.quick else a.data_dir,
                           ("0:1500" if rng == "train" else "1500:1797") if a.quick else
                           ("0:8000" if rng == "train" else "8000:10000"))


def _train(a, out: Path, minutes: float, conditional: bool, resume: bool = False, total: float | None = None) -> dict:
    """Train (or resume) for ``minutes`` of wall clock; ``--quick`` counts steps instead, up to ``total`` minutes
    x 60 in all."""
    data = _data(a, "train")
    if resume:
        den = dl.load_checkpoint(out).denoiser("model").train()
    else:
        net = {"num_classes": data.num_classes} if conditional else {}
        if a.quick:
            net["channels"] = [8, 16]
        den = dl.create_denoiser(data.shape, net, seed=a.seed)
    budget = {"steps": max(2, int((total or minutes) * 60))} if a.quick else {"minutes": minutes}
    # no milestones, as when BENCHMARKS.md's numbers were measured (difflab train keeps one at 30 % by default)
    res = dl.train(den, data, out, resume=resume, seed=a.seed, progress=not a.no_progress, sample_every=0,
                   milestones=(), **budget)
    return {"steps": res.step, "seconds": res.seconds, "it_per_s": res.it_per_s}


# -- phases ------------------------------------------------------------------------------------------
def phase_train_cond(a, work: Path) -> dict:
    r10 = _train(a, work / "cond", a.minutes, conditional=True)
    shutil.copytree(work / "cond", work / "cond_short", dirs_exist_ok=True)
    r30 = _train(a, work / "cond", a.long_minutes - a.minutes, conditional=True, resume=True, total=a.long_minutes)
    return {"short": r10, "long": r30}


def phase_train_uncond(a, work: Path) -> dict:
    r_weak = _train(a, work / "uncond", 0.3 * a.minutes, conditional=False)
    shutil.copytree(work / "uncond", work / "uncond_weak", dirs_exist_ok=True)
    r = _train(a, work / "uncond", 0.7 * a.minutes, conditional=False, resume=True, total=a.minutes)
    return {"weak": r_weak, "main": r}


def phase_classifiers(a, work: Path) -> dict:
    data = _data(a, "train")
    out = {}
    t0 = time.perf_counter()
    sched = dl.load(work / "cond").schedule
    noisy = train_classifier(data.x, data.labels, steps=30 if a.quick else 3000, seed=a.seed,
                                        progress=not a.no_progress, schedule=sched)
    save_classifier(noisy, work / "noisy_classifier", {"noisy": True})
    out["noisy_seconds"] = time.perf_counter() - t0
    if not a.classifier:
        t0 = time.perf_counter()
        clf = train_classifier(data.x, data.labels, steps=30 if a.quick else 1500, seed=a.seed,
                                          progress=not a.no_progress)
        save_classifier(clf, work / "eval_classifier", {})
        out["eval_seconds"] = time.perf_counter() - t0
    return out


NOISE_LEVELS = (0.1, 0.3, 1.0, 3.0, 10.0)    # sigma/alpha of the noisy classifier's accuracy check


def phase_noisy_accuracy(a, work: Path) -> dict:
    """The noise-aware classifier's accuracy on held-out digits noised to each sigma/alpha in ``NOISE_LEVELS``
    (one noise draw): how much class information its gradient can carry at each level."""
    clf = load_classifier(work / "noisy_classifier")
    sched = dl.load(work / "cond").schedule
    held = _data(a, "ref")
    g = torch.Generator().manual_seed(a.seed)
    out = {}
    for r in NOISE_LEVELS:
        t = sched.t_of_sigma_ratio(torch.full((len(held.x),), r, dtype=torch.float64)).float()
        x_t = q_sample(sched, held.x, t, eps=torch.randn(held.x.shape, generator=g))
        with torch.no_grad():
            pred = torch.cat([clf(x_t[i:i + 500], t[i:i + 500]).argmax(1) for i in range(0, len(t), 500)])
        out[f"{r:g}"] = float((pred == held.labels).double().mean())
    return {"accuracy_by_sigma_ratio": out, "n": len(held.x)}


def _eval_classifier(a, work: Path):
    return load_classifier(a.classifier or work / "eval_classifier")


def _score(a, work: Path, x: torch.Tensor, labels: torch.Tensor | None) -> dict:
    import warnings

    from difflab.metrics.evaluate import evaluate_samples
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = evaluate_samples(x.clamp(-1, 1), _data(a, "train").x, _data(a, "ref").x, _eval_classifier(a, work),
                             min_samples=0, seed=a.seed, labels=labels)
    keys = ("fd_samples", "fd_floor", "precision_samples", "recall_samples", "precision_floor", "recall_floor",
            "class_accuracy", "class_entropy")
    return {k: r[k] for k in keys if k in r}


def phase_guide(a, work: Path, model: str, method: str, scale: float, seed: int | None = None) -> dict:
    """One guided setting: ``model`` is ``short`` / ``long`` (the conditional model at ``--minutes`` /
    ``--long-minutes``) or ``uncond`` (the unconditional model, classifier guidance only); sampling seed
    ``seed`` (default ``--seed``)."""
    seed = a.seed if seed is None else seed
    from difflab.guidance import ClassifierFreeGuidance, ClassifierGuidance
    den = dl.load(work / {"short": "cond_short", "long": "cond", "uncond": "uncond"}[model])
    k = den.num_classes or _data(a, "train").num_classes
    labels = torch.arange(k).repeat_interleave(math.ceil(a.n / k))[: a.n]
    if method == "classifier":
        clf = load_classifier(work / "noisy_classifier")
        guided = ClassifierGuidance(den, clf, scale, label_to_model=False, interval=CLASSIFIER_INTERVAL)
    else:
        guided = ClassifierFreeGuidance(den, scale, INTERVAL if method == "cfg_interval" else None)
    t0 = time.perf_counter()
    res = dl.sample(guided, n=a.n, seed=seed, cond={"label": labels}, batch_size=a.batch, progress=not a.no_progress,
                    **SAMPLER)
    out = {"nfe": res.nfe, "s_per_image": (time.perf_counter() - t0) / a.n, "seed": seed,
           **_score(a, work, res.x, labels)}
    if scale in (1.0, 3.0) and seed == a.seed:
        dl.save_grid(res.x[:: max(1, a.n // 100)][:100], work / f"grid_{model}_{method}_{scale:g}.png", nrow=10)
    return out


def phase_autoguide(a, work: Path, scale: float) -> dict:
    from difflab.guidance import Autoguidance
    den, weak = dl.load(work / "uncond"), dl.load(work / "uncond_weak")
    res = dl.sample(Autoguidance(den, weak, scale), n=a.n, seed=a.seed, batch_size=a.batch,
                    progress=not a.no_progress, **SAMPLER)
    return {"nfe": res.nfe, **_score(a, work, res.x, None)}


def phase_editing(a, work: Path) -> dict:
    from difflab.guidance import bicubic_upsample, downsampling_operator, inpaint, make_mask, super_resolve
    den = dl.load(work / "uncond")
    held = _data(a, "ref")
    x, y = held.x[: a.n_edit], held.labels[: a.n_edit]
    clf = _eval_classifier(a, work)
    acc = lambda imgs: float((clf.probabilities(imgs.clamp(-1, 1)).argmax(1) == y).double().mean())  # noqa: E731
    psnr = lambda imgs: float((10 * torch.log10(4 / ((imgs.clamp(-1, 1) - x) ** 2).flatten(1).mean(1))).mean())  # noqa: E731
    mask = make_mask("left", tuple(den.data_shape))
    out = {"n": len(x), "accuracy_originals": acc(x), "accuracy_half_erased": acc(x * mask - (1 - mask))}
    for posterior in ("projection", "tweedie"):
        n = len(x) if posterior == "projection" else min(len(x), a.n_tweedie)
        t0 = time.perf_counter()
        res = inpaint(den, x[:n], mask, posterior=posterior, cg_iters=5, seed=a.seed, batch_size=a.batch,
                      progress=not a.no_progress, **SAMPLER)
        right = (clf.probabilities(res.x.clamp(-1, 1)).argmax(1) == y[:n]).double()
        out[f"inpaint_{posterior}"] = {"n": n, "nfe": res.nfe, "s_per_image": (time.perf_counter() - t0) / n,
                                       "accuracy": float(right.mean()),   # and on the digits both rules inpaint:
                                       "accuracy_first_tweedie_n": float(right[: min(n, a.n_tweedie)].mean())}
        dl.save_grid(torch.cat([x[:10], (x * mask - (1 - mask))[:10], res.x[:10]]), work / f"inpaint_{posterior}.png",
                     nrow=10)
    op = downsampling_operator(2)
    low = op.A(x)
    res = super_resolve(den, low, 2, seed=a.seed, batch_size=a.batch, progress=not a.no_progress, **SAMPLER)
    bic = bicubic_upsample(low, 2)
    out["superres"] = {"diffusion": {"psnr": psnr(res.x), "accuracy": acc(res.x)},
                       "bicubic": {"psnr": psnr(bic), "accuracy": acc(bic)},
                       "nearest": {"psnr": psnr(op.pinv(low)), "accuracy": acc(op.pinv(low))}, "nfe": res.nfe}
    dl.save_grid(torch.cat([op.pinv(low)[:10], bic[:10], res.x[:10], x[:10]]), work / "superres.png", nrow=10)
    return out


# -- orchestration -----------------------------------------------------------------------------------
def phases(a) -> list[tuple[str, tuple]]:
    out = [("train_cond", ()), ("train_uncond", ()), ("classifiers", ()), ("noisy_accuracy", ())]
    out += [(f"guide_{m}_{meth}_{s:g}", (m, meth, s)) for m in ("short", "long") for meth in METHODS for s in a.scales]
    out += [(f"guide_uncond_classifier_{s:g}", ("uncond", "classifier", s)) for s in a.uncond_classifier_scales]
    out += [(f"autoguide_{s:g}", (s,)) for s in a.auto_scales]
    return out + [("editing", ())]


def check_phases(a, work: Path) -> list[tuple[str, tuple]]:
    """For each conditional model whose curve meets the target on ``--seed``: its CFG settings (both methods) at
    scales in [1, 2] - where the best FD and the target's settings lie - drawn again with ``--check-seed``."""
    out = []
    for model in ("short", "long"):
        rows = {(meth, s): _json(work / f"guide_{model}_{meth}_{s:g}.json") for meth in METHODS for s in a.scales}
        if target_settings(rows)[1]:
            out += [(f"check_{model}_{meth}_{s:g}_seed{a.check_seed}", (model, meth, s, a.check_seed))
                    for meth in ("cfg", "cfg_interval") for s in a.scales if 1 <= s <= 2]
    return out


def target_settings(rows: dict) -> tuple[float, list]:
    """The best FD among ``rows`` ({(method, scale): record}) and the settings meeting the target there (empty
    list: not met): requested-class accuracy >= 0.98 at FD <= 1.1 x the best."""
    fd_best = min(q["fd_samples"] for q in rows.values())
    return fd_best, [k for k, q in rows.items() if q["class_accuracy"] >= 0.98 and q["fd_samples"] <= 1.1 * fd_best]


def run(a, work: Path, name: str, args: tuple) -> dict:
    if name.startswith("guide_") or name.startswith("check_"):
        return phase_guide(a, work, *args)
    if name.startswith("autoguide_"):
        return phase_autoguide(a, work, *args)
    fn = {"train_cond": phase_train_cond, "train_uncond": phase_train_uncond, "classifiers": phase_classifiers,
          "noisy_accuracy": phase_noisy_accuracy, "editing": phase_editing}[name]
    return fn(a, work)


def _cells(q: dict, nfe: bool = True, accuracy: bool = True) -> str:
    """A setting's scores as Markdown table cells: [NFE |] [requested-class accuracy |] FD | precision | recall |."""
    return ((f" {q['nfe']} |" if nfe else "") + (f" {q['class_accuracy']:.3f} |" if accuracy else "")
            + f" {q['fd_samples']:.2f} | {q['precision_samples']:.3f} | {q['recall_samples']:.3f} |")


def summarise(a, work: Path) -> dict:
    r = {name: _json(work / f"{name}.json") for name, _ in phases(a) + check_phases(a, work)}
    lines = []
    best = {}
    for model in ("short", "long"):
        minutes = a.minutes if model == "short" else a.long_minutes
        lines += [f"\n**{minutes:g}-minute conditional model** ({r['train_cond'][model]['steps']} steps)", "",
                  "| method | scale | NFE | requested-class accuracy | FD | precision | recall |", "|---|---|---|---|---|---|---|"]
        rows = [(meth, s, r[f"guide_{model}_{meth}_{s:g}"]) for meth in METHODS for s in a.scales]
        for meth, s, q in rows:
            lines.append(f"| {meth} | {s:g} |" + _cells(q))
        fd_best, ok = target_settings({(meth, s): q for meth, s, q in rows})
        best[model] = {"best_fd": fd_best, "settings_meeting_target": ok}
        floor = rows[0][2]["fd_floor"]
        lines.append(f"\nbest FD {fd_best:.2f} (real-vs-real floor {floor:.2f}); target (accuracy >= 0.98 at FD <= "
                     f"1.1x best): {'met by ' + ', '.join(f'{m} w={s:g}' for m, s in ok) if ok else 'NOT met'}")
        checks = {(meth, s): r[name] for name, (m, meth, s, _) in check_phases(a, work) if m == model}
        if checks:
            fd_c, ok_c = target_settings(checks)
            best[model]["check"] = {"seed": a.check_seed, "best_fd": fd_c, "settings_meeting_target": ok_c}
            lines += ["", f"Drawn again with sampling seed {a.check_seed} (CFG, scales 1-2):", "",
                      "| method | scale | requested-class accuracy | FD | precision | recall |", "|---|---|---|---|---|---|"]
            lines += [f"| {meth} | {s:g} |" + _cells(q, nfe=False) for (meth, s), q in checks.items()]
            lines.append(f"\nseed {a.check_seed}: best FD {fd_c:.2f}; target "
                         f"{'met by ' + ', '.join(f'{m} w={s:g}' for m, s in ok_c) if ok_c else 'NOT met'}")
    acc = r["noisy_accuracy"]["accuracy_by_sigma_ratio"]
    lines += ["", f"**Classifier guidance of the unconditional {a.minutes:g}-minute model** (Dhariwal & Nichol's "
              "unconditional setting; the same noise-aware classifier, below sigma/alpha 80). The noise-aware "
              f"classifier's accuracy on {r['noisy_accuracy']['n']} held-out digits noised to sigma/alpha "
              + ", ".join(f"{k}: {v:.3f}" for k, v in acc.items()), "",
              "| scale | NFE | requested-class accuracy | FD | precision | recall |", "|---|---|---|---|---|---|"]
    for s in a.uncond_classifier_scales:
        q = r[f"guide_uncond_classifier_{s:g}"]
        lines.append(f"| {s:g} |" + _cells(q))
    lines += ["", "**Autoguidance of the unconditional model** (weak model: its EMA at 30% of the same run)", "",
              "| scale | NFE | FD | precision | recall |", "|---|---|---|---|---|"]
    for s in a.auto_scales:
        q = r[f"autoguide_{s:g}"]
        lines.append(f"| {s:g} |" + _cells(q, accuracy=False))
    e = r["editing"]
    lines += ["", f"**Editing** ({e['n']} held-out digits; classifier accuracy on the originals "
              f"{e['accuracy_originals']:.3f}, with the left half erased {e['accuracy_half_erased']:.3f})", "",
              "| task | method | NFE | accuracy | PSNR (dB) |", "|---|---|---|---|---|"]
    for p in ("projection", "tweedie"):
        q = e[f"inpaint_{p}"]
        lines.append(f"| inpainting, left half (n={q['n']}) | {p} | {q['nfe']} | {q['accuracy']:.3f} | |")
    q = e["inpaint_projection"]
    if q["n"] > e["inpaint_tweedie"]["n"]:
        lines.append(f"| inpainting, left half (the first {e['inpaint_tweedie']['n']}) | projection | {q['nfe']} | "
                     f"{q['accuracy_first_tweedie_n']:.3f} | |")
    for m in ("diffusion", "bicubic", "nearest"):
        q = e["superres"][m]
        lines.append(f"| 14x14 -> 28x28 | {m} | {e['superres']['nfe'] if m == 'diffusion' else 0} | "
                     f"{q['accuracy']:.3f} | {q['psnr']:.2f} |")
    _figure(a, work, r)
    summary = {"phases": r, "target": best, "markdown": "\n".join(lines)}
    return _json(work / "summary.json", summary)


def _figure(a, work: Path, r: dict) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(2, 4, figsize=(16, 7))
    for row, model in enumerate(("short", "long")):
        for col, (key, label) in enumerate((("class_accuracy", "requested-class accuracy"), ("fd_samples", "FD"),
                                            ("precision_samples", "precision"), ("recall_samples", "recall"))):
            ax = axes[row, col]
            for meth in METHODS:
                ax.plot(a.scales, [r[f"guide_{model}_{meth}_{s:g}"][key] for s in a.scales], marker="o", label=meth)
            if model == "short":   # the unconditional model has the short model's budget
                ax.plot(a.uncond_classifier_scales, [r[f"guide_uncond_classifier_{s:g}"][key]
                                                     for s in a.uncond_classifier_scales],
                        marker="s", ls="--", label="classifier (unconditional model)")
            ax.set(xlabel="guidance scale w", ylabel=label,
                   title=f"{a.minutes if model == 'short' else a.long_minutes:g}-min model")
            if model == "short" and max(a.uncond_classifier_scales, default=0) > max(a.scales):
                ax.set_xscale("symlog", linthresh=1.0)   # linear to 1, logarithmic beyond: 1.25 ... 30 all readable
            ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(work / "guidance.png", dpi=100)
    plt.close(fig)


def main(argv=None) -> int:
    from difflab.metrics import classifier_folder
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="runs/guidance")
    ap.add_argument("--data-dir", default=str(DEFAULT_DATA))
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--long-minutes", type=float, default=30.0)
    ap.add_argument("--n", type=int, default=1000, help="samples per guided setting")
    ap.add_argument("--n-edit", type=int, default=500, help="held-out digits for inpainting and super-resolution")
    ap.add_argument("--n-tweedie", type=int, default=100, help="of them, inpainted with the Tweedie posterior too")
    ap.add_argument("--scales", default="0,1,1.25,1.5,1.75,2,3,5")
    ap.add_argument("--auto-scales", default="1,1.5,2,3")
    ap.add_argument("--uncond-classifier-scales", default="0,1,3,10,30",
                    help="classifier guidance scales of the unconditional model")
    ap.add_argument("--batch", type=int, default=250)
    ap.add_argument("--classifier", type=classifier_folder, help="the evaluation classifier (difflab train-classifier folder); else trained here")
    ap.add_argument("--seed", type=int, default=0, help="training and sampling seed")
    ap.add_argument("--check-seed", type=int, default=1,
                    help="sampling seed the target's neighbourhood (CFG, scales 1-2) is drawn again with")
    ap.add_argument("--quick", action="store_true", help="toy sizes on scikit-learn digits (a smoke test, seconds)")
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)
    a.scales = [float(v) for v in a.scales.split(",")]
    a.auto_scales = [float(v) for v in a.auto_scales.split(",")]
    a.uncond_classifier_scales = [float(v) for v in a.uncond_classifier_scales.split(",")]
    if a.quick:
        a.minutes, a.long_minutes, a.n, a.n_edit, a.n_tweedie, a.batch = 0.05, 0.1, 20, 6, 2, 20
        a.scales, a.auto_scales, a.uncond_classifier_scales = [0.0, 1.0, 3.0], [1.0, 2.0], [0.0, 3.0]
        SAMPLER["steps"] = 3
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    if a.check_seed == a.seed:
        ap.error("--check-seed must differ from --seed")
    for todo in (lambda: phases(a), lambda: check_phases(a, work)):   # the checks depend on the first results
        for name, args in todo():
            if (work / f"{name}.json").is_file():
                continue
            print(f"[run ] {name}", flush=True)
            t0 = time.perf_counter()
            res = run(a, work, name, args)
            res["phase_seconds"] = time.perf_counter() - t0
            _json(work / f"{name}.json", res)
            print(f"[ok  ] {name} in {res['phase_seconds']:.0f}s", flush=True)
    print(summarise(a, work)["markdown"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
