"""The report of a sweep: figures (PNG), ``report.md`` and one self-contained ``report.html``.

Figures: alpha_bar(t) and log-SNR per schedule; held-out loss per t bucket; quality against NFE
(one panel per sampler); quality against training time; the samples of every variant side by side;
for 2-D data also the forward process on the points and the learned score field of the best variant.
The ranked table lists every variant by its quality at the main sampler setting, beside the
real-vs-real floor.
"""
from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path
from typing import Any

from ..data import kind_of_shape
from ..errors import DifflabError
from ..io import atomic_write_text, read_json

__all__ = ["write_report", "load_results", "write_documents"]

_LABELS = {"sliced_wasserstein": "sliced Wasserstein to the data", "fd": "FD (classifier features)"}


def load_results(out: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    cfg = read_json(out / "config.json", "sweep config")
    results = [read_json(f, "sweep result") for f in sorted((out / "variants").glob("*/result.json"))]
    if not results:
        raise DifflabError(f"no finished variants in {out}")
    return cfg, results


def _main_q(r: dict[str, Any]) -> float:
    return r["stages"][-1]["quality"][r["metric"]]


def _fig_quality_vs_nfe(plt, results, floor, metric, path: Path) -> Path:
    samplers = sorted({q["sampler"] for r in results for q in r["quality"]})
    fig, axes = plt.subplots(1, len(samplers), figsize=(4.2 * len(samplers), 3.6), squeeze=False)
    for ax, s in zip(axes[0], samplers):
        for r in results:
            rows = sorted((q for q in r["quality"] if q["sampler"] == s), key=lambda q: q["nfe"])
            ax.plot([q["nfe"] for q in rows], [q[metric] for q in rows], marker="o", ms=3, label=r["id"])
        ax.axhline(floor, color="k", ls="--", lw=1, label="real vs real")
        ax.set(xscale="log", yscale="log", xlabel="NFE", title=s)
        nfes = sorted({q["target_nfe"] for r in results for q in r["quality"] if q["sampler"] == s})
        ax.set_xticks(nfes, [str(v) for v in nfes])
        ax.xaxis.set_minor_formatter(plt.NullFormatter())
        ax.grid(alpha=0.3, which="both")
    axes[0, 0].set_ylabel(_LABELS.get(metric, metric))
    axes[0, -1].legend(fontsize=6, loc="upper right")
    fig.suptitle("quality against sampling steps (lower is better): too few steps is the first pitfall", fontsize=9)
    from ..viz import _save
    return _save(plt, fig, path)


def _fig_quality_vs_time(plt, results, floor, metric, main, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in results:
        st = r["stages"]
        ax.plot([s["train_seconds"] for s in st], [s["quality"][metric] for s in st], marker="o", ms=3, label=r["id"])
    ax.axhline(floor, color="k", ls="--", lw=1, label="real vs real")
    ax.set(yscale="log", xlabel="training time (s)", ylabel=_LABELS.get(metric, metric),
           title=f"quality while training ({main['sampler']}, {main['nfe']} NFE): an undertrained network")
    ax.title.set_fontsize(8)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=6)
    from ..viz import _save
    return _save(plt, fig, path)


def _fig_loss_buckets(plt, results, path: Path) -> Path:
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
    for r in results:
        lb = r["loss_buckets"]
        a1.plot(lb["t_mid"], lb["objective"], marker="o", ms=3, label=r["id"])
        a2.plot(lb["t_mid"], lb["x0_mse"], marker="o", ms=3, label=r["id"])
    a1.set(yscale="log", xlabel="t bucket", ylabel="loss", title="each variant's training objective (held-out)")
    a2.set(yscale="log", xlabel="t bucket", ylabel=r"$E|\hat x_0 - x_0|^2$", title="x0 error, comparable across variants")
    for ax in (a1, a2):
        ax.grid(alpha=0.3, which="both")
        ax.title.set_fontsize(9)
    a2.legend(fontsize=6)
    from ..viz import _save
    return _save(plt, fig, path)


def _samples(out: Path, results) -> dict[str, Any]:
    from ..io import load_tensors
    return {f"#{i + 1} {r['id']}": load_tensors(out / "variants" / r["id"] / "samples.safetensors")["samples"]
            for i, r in enumerate(results)}


def _image_figures(plt, out: Path, cfg, results, scheds, rep: Path) -> list[tuple[str, Path, str]]:
    """Images: the 64 samples of every variant as grids, side by side."""
    from ..viz import _save, grid_array
    sets = _samples(out, results)
    k = len(sets)
    cols = min(k, 4)
    rows = math.ceil(k / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (name, x) in zip(axes.flat, sets.items()):
        img = grid_array(x[:64], scale=1)
        ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=255)
        ax.set_title(name, fontsize=7)
    main = results[0]["main"]
    return [("Samples", _save(plt, fig, rep / "samples.png"),
             f"Samples of every variant ({main['sampler']}, {main['nfe']} NFE), ranked.")]


def _point_figures(plt, out: Path, cfg, results, scheds, rep: Path) -> list[tuple[str, Path, str]]:
    """2-D points: samples over the data, the forward process on the points, the learned score field."""
    from ..data import sample_toy2d
    from ..train import load_checkpoint
    from ..viz import forward_points_figure, points_figure, score_field_figure
    reference = sample_toy2d(cfg["data"]["name"], 2000, int(cfg.get("seed", 0)) + 1)
    main, best = results[0]["main"], results[0]
    den = load_checkpoint(out / "variants" / best["id"] / "run").denoiser("ema")
    return [
        ("Samples", points_figure(_samples(out, results), rep / "samples.png", data=reference),
         f"Samples of every variant ({main['sampler']}, {main['nfe']} NFE), ranked; orange: the data."),
        ("Forward process on the points",
         forward_points_figure(reference[:1500], scheds, [0, 0.2, 0.4, 0.6, 0.8, 1.0], rep / "forward_points.png"),
         "The data under each schedule's forward process (same noise), rescaled to unit variance."),
        ("Learned score field", score_field_figure(den, [0.05, 0.2, 0.5, 0.9], rep / "score_field.png", data=reference),
         f"The score of the best variant ({best['id']}) as arrows, at four times."),
    ]


# data kind -> the figures that show its samples
_KIND_FIGURES = {"images": _image_figures, "points": _point_figures}


def _img_tag(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" style="max-width:100%">'


def write_report(out: str | Path) -> Path:
    """Write ``OUT/report/`` (figures, report.md, report.html) from the finished variants."""
    from ..process import schedule_from_spec
    from ..viz import _plt, plot_schedules
    out = Path(out)
    cfg, results = load_results(out)
    results.sort(key=_main_q)
    metric, main = results[0]["metric"], results[0]["main"]
    floor = results[0]["floor"]
    rep = out / "report"
    rep.mkdir(exist_ok=True)
    plt = _plt()
    figs: list[tuple[str, Path, str]] = []
    scheds = {}
    for r in results:
        spec = r["variant"]["schedule"]
        scheds[spec["name"] if isinstance(spec, dict) else spec] = schedule_from_spec(spec)
    figs.append(("Schedules", plot_schedules(scheds, rep / "schedules.png"),
                 "Signal fraction alpha_bar(t) and log-SNR of each schedule in the sweep."))
    figs.append(("Loss per t bucket", _fig_loss_buckets(plt, results, rep / "loss_buckets.png"),
                 "Held-out loss of the final EMA weights in ten t buckets: where each objective puts its "
                 "weight (left) and the x0 error that all variants share (right)."))
    figs.append(("Quality against NFE", _fig_quality_vs_nfe(plt, results, floor, metric, rep / "quality_vs_nfe.png"),
                 "Quality of the final weights for each sampler and number of network evaluations."))
    figs.append(("Quality against training time",
                 _fig_quality_vs_time(plt, results, floor, metric, main, rep / "quality_vs_time.png"),
                 "Quality at each stage of the training budget (same sampler setting throughout)."))
    kind = results[0].get("data_kind") or kind_of_shape(tuple(_samples(out, results[:1]).popitem()[1].shape[1:]))
    figs += _KIND_FIGURES[kind](plt, out, cfg, results, scheds, rep)
    # ranked table
    head = ["rank", "variant", "schedule", "prediction", "weighting", "budget", f"{metric} @ main",
            "best (sampler, NFE)", "real vs real", "steps", "train s"]
    rows = []
    for i, r in enumerate(results):
        v = r["variant"]
        best_q = min(r["quality"], key=lambda q: q[metric])
        s = v["schedule"]
        (bk, bv), = v["budget"].items()
        rows.append([str(i + 1), r["id"], s["name"] if isinstance(s, dict) else s, v["prediction"], v["weighting"],
                     f"{bv:g} {bk}", f"{_main_q(r):.4g}", f"{best_q[metric]:.4g} ({best_q['sampler']}, {best_q['nfe']})",
                     f"{floor:.4g}", str(r["stages"][-1]["steps"]), f"{r['stages'][-1]['train_seconds']:.0f}"])
    intro = (f"Data: `{json.dumps(cfg['data'])}`; {len(results)} variants; seed {cfg.get('seed', 0)}; "
             f"quality: {_LABELS.get(metric, metric)} (lower is better) of {cfg['sampling'].get('n', 1000)} samples; "
             f"main setting {main['sampler']} at {main['nfe']} NFE; real-vs-real floor {floor:.4g}"
             + (f" +- {results[0]['floor_std']:.2g} (std over 5 draws of exact samples; differences below it are noise)."
                if results[0].get("floor_std") else "."))
    write_documents(rep, f"Sweep report: {cfg['name']}", [intro], head, rows, figs)
    return rep


def write_documents(folder: Path, title: str, paragraphs: list[str], head: list[str], rows: list[list[str]],
                    figs: list[tuple[str, Path, str]]) -> None:
    """``folder/report.md`` (figures beside it) and a self-contained ``folder/report.html`` (figures embedded
    as base64 PNG): the title, the paragraphs, the table and each figure with its caption."""
    md = [f"# {title}", ""]
    for par in paragraphs:
        md += [par, ""]
    md += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    md += ["| " + " | ".join(r) + " |" for r in rows]
    for name, path, text in figs:
        md += ["", f"## {name}", "", text, "", f"![{name}]({path.name})"]
    atomic_write_text(folder / "report.md", "\n".join(md) + "\n")
    table = "<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"
    table += "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows) + "</table>"
    body = [f"<h1>{html.escape(title)}</h1>", *(f"<p>{html.escape(par)}</p>" for par in paragraphs), table]
    for name, path, text in figs:
        body += [f"<h2>{html.escape(name)}</h2>", f"<p>{html.escape(text)}</p>", _img_tag(path)]
    style = ("body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse;font-size:13px}"
             "td,th{border:1px solid #bbb;padding:3px 6px}")
    atomic_write_text(folder / "report.html", f"<!doctype html><html><head><meta charset='utf-8'><title>"
                                              f"{html.escape(title)}</title><style>{style}</style></head><body>"
                                              f"{''.join(body)}</body></html>\n")
