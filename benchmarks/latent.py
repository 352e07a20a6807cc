"""Pixel against latent diffusion on MNIST at equal wall clock (the autoencoder's training counted on the
latent side).

    python benchmarks/latent.py [--minutes 20] [--ae-minutes 4] [--factors 2,4] [--n 1000] [--work runs/latent]
    python benchmarks/latent.py --pool runs/latent,runs/latent_s1,runs/latent_s2 --work runs/latent_pooled

Expected runtime on the 2-core CPU: about 75 minutes at the defaults (20 minutes of training per side
and factor: 60; the MNIST classifier, when no ``--classifier`` is given: ~3; 1000 samples of DDIM-50:
~2.5 minutes for pixels, well under a minute per latent model; evaluation: ~1 minute per model).
``--quick`` runs the same code end to end on 256 of scikit-learn's 8x8 digits in seconds (the tests do).

Contestants, all trained on MNIST images 0-7999 (``../shared/data/mnist``) with the ``difflab train``
recipe (cosine schedule, T = 1000, v-prediction, min-SNR-5 weighting, batch 64, AdamW lr 2e-3 after
200 warm-up steps then cosine decay over the budget, EMA 0.999, gradient clipping 1) and the default
network of their sample shape (``nn.default_network``):

* **pixels**: ``--minutes`` of diffusion training on the 1x28x28 images (x0 clipped to [-1, 1] when
  sampling, as ``difflab train``'s default for images).
* **latent, f = 2 and f = 4**: the KL autoencoder (``difflab train-autoencoder`` defaults: f = 2 gives
  1x14x14 latents, f = 4 4x8x8 (28 padded to 32), L1 + 1e-4 KL) for ``--ae-minutes``, then the
  training images encoded once, then diffusion on the latents for the rest of ``--minutes`` (the
  autoencoder's training and the encoding are counted in the budget).

Each model then draws ``--n`` samples with the same sampler at the same NFE (``--sampler ddim --steps 50``
by default, through the same generator API: latent samples include their decoding), timed; all samples
are scored by ``difflab.metrics.evaluate_samples`` against the held-out images 8000-9999 with the MNIST
classifier's features (FD, KID, precision, recall).  Also for each autoencoder its reconstruction
floor: PSNR, the classifier's accuracy, and the FD of the reconstructions of the held-out images (a
latent model's samples go through the same decoder, so this bounds its FD).

Target (issue 16): at 20 minutes in all, latent sampling at least 3x faster per image and FD at most
1.2x the pixel model's.  One run is one training seed; ``--pool WORK1,WORK2,...`` pools finished runs that
differ only in ``--seed`` (the target on the mean FDs and the mean speed-up).  Every phase writes
``WORK/<phase>.json``; a rerun skips finished phases.  The summary goes to ``WORK/summary.json`` and, as
Markdown, to stdout.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from statistics import fmean as mean

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "mnist"
BATCH, LR, WARMUP, CLIP, EMA_DECAY = 64, 2e-3, 200, 1.0, 0.999
SPEEDUP_TARGET, FD_RATIO_TARGET = 3.0, 1.2     # issue 16: latent sampling >= 3x faster, FD <= 1.2x the pixels'


def meets_target(speedup: float, fd_ratio: float) -> bool:
    return speedup >= SPEEDUP_TARGET and fd_ratio <= FD_RATIO_TARGET


def data_sets(a):
    """(training, held-out) images of the run: MNIST 0-7999 / 8000-9999, or for --quick digits 0-255 / 1500-1796."""
    import difflab as dl
    if a.quick:
        return dl.load_dataset("digits", index_range="0:256"), dl.load_dataset("digits", index_range="1500:1797")
    return dl.load_dataset("mnist", a.data_dir, "0:8000"), dl.load_dataset("mnist", a.data_dir, "8000:10000")


def train_config(a, minutes: float):
    from difflab.train import TrainConfig
    return TrainConfig(minutes=minutes, batch_size=BATCH, lr=LR, warmup=WARMUP, lr_schedule="cosine", grad_clip=CLIP,
                       ema_decay=EMA_DECAY, weighting="min_snr", seed=a.seed, sample_every=0,
                       progress=not a.no_progress)


def train_diffusion(a, data, out: Path, minutes: float) -> dict:
    import difflab as dl
    den = dl.create_denoiser(data.shape, schedule="cosine", timesteps=1000, prediction="v", clip_x0=data.clip_x0,
                             seed=a.seed)
    res = dl.train(den, data, out, train_config(a, minutes))
    return {"steps": res.step, "seconds": res.seconds, "it_per_s": res.it_per_s, "final_loss": res.final_loss,
            "params": sum(p.numel() for p in den.net.parameters()), "shape": list(data.shape)}


# -- phases ------------------------------------------------------------------------------------------
def phase_classifier(a, work: Path) -> dict:
    from difflab.metrics import save_classifier, train_classifier
    train, _ = data_sets(a)
    steps = 5 if a.quick else 1500
    net = train_classifier(train.x, train.labels, steps=steps, seed=0, progress=not a.no_progress)
    save_classifier(net, work / "classifier", {"data": train.name, "range": "0:8000", "steps": steps})
    return {"classifier": str(work / "classifier")}


def phase_pixels(a, work: Path) -> dict:
    train, _ = data_sets(a)
    return train_diffusion(a, train, work / "pixels", a.minutes)


def phase_latent(a, work: Path, f: int) -> dict:
    """The autoencoder for --ae-minutes, the encoding, and latent diffusion for the rest of --minutes."""
    from difflab.data import encode_dataset
    from difflab.nn.autoencoder import KLAutoencoder, default_autoencoder
    from difflab.train.autoencoder import AutoencoderTrainConfig, train_autoencoder
    import torch
    train, _ = data_sets(a)
    t0 = time.perf_counter()
    torch.manual_seed(a.seed)
    net = KLAutoencoder(**default_autoencoder(train.shape, f))
    ae = train_autoencoder(net, train, work / f"ae_f{f}", AutoencoderTrainConfig(
        minutes=a.ae_minutes, seed=a.seed, sample_every=0, progress=not a.no_progress))
    latents = encode_dataset(train, ae.encoder, use_cache=False, progress=not a.no_progress)
    spent = time.perf_counter() - t0
    left = a.minutes - spent / 60
    if left <= 0:
        raise SystemExit(f"the autoencoder and the encoding took {spent / 60:.2f} of --minutes {a.minutes}")
    res = train_diffusion(a, latents, work / f"latent_f{f}", left)
    res.update(ae_steps=ae.step, ae_seconds=ae.seconds, ae_params=sum(p.numel() for p in net.parameters()),
               encode_and_ae_seconds=spent, scale=ae.encoder.scale, total_seconds=spent + res["seconds"])
    return res


def phase_floor(a, work: Path, f: int) -> dict:
    """The autoencoder's reconstruction floor on the held-out images."""
    from difflab.metrics import load_classifier
    from difflab.metrics.reconstruction import reconstruction_report
    from difflab.train.autoencoder import load_autoencoder
    train, held = data_sets(a)
    enc = load_autoencoder(work / f"ae_f{f}")
    return reconstruction_report(enc.net, held.x, held.labels, load_classifier(classifier_path(a, work)), train.x)


def phase_sample(a, work: Path, model: str) -> dict:
    import numpy as np

    from difflab.data import to_uint8
    from difflab.generators import load_generator
    gen = load_generator(work / model, sampler=a.sampler, steps=a.steps, batch_size=a.sample_batch,
                         progress=not a.no_progress)
    t0 = time.perf_counter()
    x = gen.sample(a.n, seed=a.seed)
    seconds = time.perf_counter() - t0
    np.savez_compressed(work / f"samples_{model}.npz", samples=to_uint8(x))
    return {"n": a.n, "nfe": gen.nfe, "seconds": seconds, "s_per_image": seconds / a.n}


def phase_eval(a, work: Path, model: str) -> dict:
    import numpy as np
    import torch

    from difflab.metrics import load_classifier
    from difflab.metrics.evaluate import evaluate_samples
    train, held = data_sets(a)
    x = torch.from_numpy(np.load(work / f"samples_{model}.npz")["samples"])
    r = evaluate_samples(x, train.x, held.x, load_classifier(classifier_path(a, work)), min_samples=a.n)
    return {k: v for k, v in r.items() if k != "class_histogram"}


# -- orchestration -----------------------------------------------------------------------------------
def classifier_path(a, work: Path) -> Path:
    return Path(a.classifier) if a.classifier else work / "classifier"


def factors(a) -> list[int]:
    return [int(v) for v in a.factors.split(",") if v.strip()]


def models(a) -> list[str]:
    return ["pixels"] + [f"latent_f{f}" for f in factors(a)]


def phases(a) -> list[str]:
    out = [] if a.classifier else ["classifier"]
    out += ["pixels"] + [f"latent:{f}" for f in factors(a)] + [f"floor:{f}" for f in factors(a)]
    return out + [f"sample:{m}" for m in models(a)] + [f"eval:{m}" for m in models(a)]


def run_phase(a, work: Path, name: str) -> dict:
    kind, _, arg = name.partition(":")
    fn = {"classifier": phase_classifier, "pixels": phase_pixels, "latent": phase_latent, "floor": phase_floor,
          "sample": phase_sample, "eval": phase_eval}[kind]
    return fn(a, work, int(arg) if kind in ("latent", "floor") else arg) if arg else fn(a, work)


def summarise(a, work: Path) -> dict:
    r = {p: json.loads((work / f"{p.replace(':', '_')}.json").read_text()) for p in phases(a)}
    px_s, px_e = r["sample:pixels"], r["eval:pixels"]
    cols = models(a)
    lines = ["| | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]

    def row(label, vals, fmt):
        lines.append(f"| {label} | " + " | ".join("-" if v is None else fmt.format(v) for v in vals) + " |")

    train = [r["pixels"]] + [r[f"latent:{f}"] for f in factors(a)]
    row("sample shape", [tuple(t["shape"]) for t in train], "{}")
    row("diffusion parameters", [t["params"] for t in train], "{:,}")
    row("autoencoder training s (steps)", [None] + [f"{t['ae_seconds']:.0f} ({t['ae_steps']})" for t in train[1:]], "{}")
    row("diffusion training s", [t["seconds"] for t in train], "{:.0f}")
    row("diffusion training steps", [t["steps"] for t in train], "{:d}")
    row("training it/s", [t["it_per_s"] for t in train], "{:.2f}")
    row("sampling s/image (NFE)", [f"{r[f'sample:{m}']['s_per_image']:.4f} ({r[f'sample:{m}']['nfe']})" for m in cols],
        "{}")
    row("sampling speed-up vs pixels", [px_s["s_per_image"] / r[f"sample:{m}"]["s_per_image"] for m in cols], "{:.2f}x")
    for key, label, fmt in (("fd_samples", "FD", "{:.2f}"), ("kid_samples", "KID", "{:.4f}"),
                            ("precision_samples", "precision", "{:.3f}"), ("recall_samples", "recall", "{:.3f}")):
        row(f"{label} (n={a.n})", [r[f"eval:{m}"][key] for m in cols], fmt)
    row("FD / pixels' FD", [r[f"eval:{m}"]["fd_samples"] / px_e["fd_samples"] for m in cols], "{:.2f}")
    row("reconstruction PSNR (dB)", [None] + [r[f"floor:{f}"]["psnr"] for f in factors(a)], "{:.2f}")
    row("classifier accuracy of reconstructions", [None] + [r[f"floor:{f}"].get("accuracy") for f in factors(a)],
        "{:.4f}")
    row("FD of reconstructions (floor)", [None] + [r[f"floor:{f}"].get("fd_reconstructions") for f in factors(a)],
        "{:.2f}")
    lines.append("")
    lines.append(f"real-vs-real FD at n={a.n}: {px_e['fd_floor']:.2f}; sampler {a.sampler}, {a.steps} steps")
    targets = {}
    for f in factors(a):
        speed = px_s["s_per_image"] / r[f"sample:latent_f{f}"]["s_per_image"]
        ratio = r[f"eval:latent_f{f}"]["fd_samples"] / px_e["fd_samples"]
        met = meets_target(speed, ratio)
        targets[f] = {"speedup": speed, "fd_ratio": ratio, "met": met}
        lines.append(f"f={f}: sampling {speed:.2f}x faster (target >= {SPEEDUP_TARGET:g}), FD {ratio:.2f}x the pixel "
                     f"model's (target <= {FD_RATIO_TARGET:g}): {'met' if met else 'NOT met'}")
    summary = {"phases": r, "targets": targets, "markdown": "\n".join(lines), "args": vars(a),
               "figure": str(samples_figure(a, work, r))}
    (work / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


# what pooled runs must share (--factors may differ: the factors common to all runs are pooled)
SAME = ("minutes", "ae_minutes", "n", "sampler", "steps", "sample_batch", "classifier", "data_dir", "quick")


def _same_arg(key: str, u, v) -> bool:
    """Equal values; for the paths, also the same folder reached through a link (absolute paths, or relative
    ones resolved from the pooling process's folder: the runs' own folder is not recorded)."""
    if u == v:
        return True
    return key in ("data_dir", "classifier") and None not in (u, v) and Path(u).resolve() == Path(v).resolve()


def pool(works: list[Path]) -> dict:
    """Finished runs of this benchmark that differ only in ``--seed`` (training and sampling seed), pooled.

    Per factor f present in every run: each seed's pixel FD, latent FD, their ratio and the sampling speed-up,
    then the means.  The pooled target compares mean FDs, mean latent FD <= 1.2 x mean pixel FD, and needs the
    mean speed-up >= 3: a ratio of means, since one seed's FD varies by several units across training seeds.
    """
    if not works:
        raise SystemExit("--pool: no work folders given")
    runs = []
    for w in works:
        if not (w / "summary.json").is_file():
            raise SystemExit(f"--pool: {w} has no summary.json (run the benchmark there to the end first)")
        runs.append(json.loads((w / "summary.json").read_text()))
    for w, r in zip(works[1:], runs[1:]):
        if diff := [k for k in SAME if not _same_arg(k, r["args"].get(k), runs[0]["args"].get(k))]:
            raise SystemExit(f"--pool: {w} differs from {works[0]} in {', '.join(diff)}, not only in the seed")
    seeds = [r["args"]["seed"] for r in runs]
    if len(set(seeds)) != len(seeds):
        raise SystemExit(f"--pool: the runs' seeds {seeds} repeat")
    common = sorted(set.intersection(*(set(r["targets"]) for r in runs)), key=int)
    lines, out = [], {"works": [str(w) for w in works], "seeds": seeds, "factors": {}}
    for f in common:
        px = [r["phases"]["eval:pixels"]["fd_samples"] for r in runs]
        lat = [r["phases"][f"eval:latent_f{f}"]["fd_samples"] for r in runs]
        speed = [r["targets"][f]["speedup"] for r in runs]
        ratio = mean(lat) / mean(px)
        met = meets_target(mean(speed), ratio)
        lines += [f"\nf={f}:", "", "| seed | pixel FD | latent FD | FD ratio | sampling speed-up |", "|---|---|---|---|---|"]
        lines += [f"| {s} | {p:.2f} | {q:.2f} | {q / p:.2f} | {v:.2f}x |" for s, p, q, v in zip(seeds, px, lat, speed)]
        lines += [f"| mean | {mean(px):.2f} | {mean(lat):.2f} | {ratio:.2f} (of the means) | {mean(speed):.2f}x |", "",
                  f"f={f} over {len(runs)} seeds: sampling {mean(speed):.2f}x faster (target >= {SPEEDUP_TARGET:g}), "
                  f"mean FD {ratio:.2f}x the pixel model's (target <= {FD_RATIO_TARGET:g}): "
                  f"{'met' if met else 'NOT met'}"]
        out["factors"][f] = {"pixel_fd": px, "latent_fd": lat, "speedup": speed, "fd_ratio_of_means": ratio,
                             "mean_speedup": mean(speed), "met": met}
    out["markdown"] = "\n".join(lines)
    return out


def samples_figure(a, work: Path, r: dict) -> Path:
    """The first 64 samples of each model side by side, titled with FD and sampling time: WORK/samples.png."""
    import numpy as np
    import torch

    from difflab.viz import grid_array, panels_figure
    cols = {}
    for m in models(a):
        x = torch.from_numpy(np.load(work / f"samples_{m}.npz")["samples"][:64]).float() / 127.5 - 1
        grid = torch.from_numpy(grid_array(x, nrow=8, scale=1)).permute(2, 0, 1).float() / 127.5 - 1
        fd, ms = r[f"eval:{m}"]["fd_samples"], 1e3 * r[f"sample:{m}"]["s_per_image"]
        cols[f"{m}\nFD {fd:.1f}, {ms:.0f} ms/image"] = grid[None]
    return panels_figure(cols, work / "samples.png", title=f"{a.minutes:g} minutes of training per side, "
                                                           f"{a.sampler} {a.steps} steps")


def main(argv=None) -> int:
    from difflab.metrics import classifier_folder
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="runs/latent", help="folder for runs, samples and per-phase results")
    ap.add_argument("--data-dir", default=str(DEFAULT_DATA))
    ap.add_argument("--minutes", type=float, default=20.0, help="training budget of each side (autoencoder included)")
    ap.add_argument("--ae-minutes", type=float, default=4.0, help="the autoencoder's part of the latent side's budget")
    ap.add_argument("--factors", default="2,4", help="autoencoder downsampling factors")
    ap.add_argument("--n", type=int, default=1000, help="samples per model")
    ap.add_argument("--sampler", default="ddim")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--sample-batch", type=int, default=250)
    ap.add_argument("--classifier", type=classifier_folder, help="a difflab train-classifier folder (default: train one in WORK)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="tiny sizes on 8x8 digits, seconds (a test of the script)")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--pool", help="comma-separated work folders of finished runs that differ only in --seed: "
                                   "per-seed and pooled table, written to WORK/pooled.json (nothing is run)")
    a = ap.parse_args(argv)
    if a.pool is not None:
        res = pool([Path(p.strip()) for p in a.pool.split(",") if p.strip()])
        Path(a.work).mkdir(parents=True, exist_ok=True)
        (Path(a.work) / "pooled.json").write_text(json.dumps(res, indent=1))
        print(res["markdown"])
        return 0
    if a.quick:
        a.minutes, a.ae_minutes, a.n, a.steps, a.sample_batch = 0.15, 0.01, 20, 2, 20   # room for a loaded machine
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    (work / "args.json").write_text(json.dumps(vars(a), indent=1))
    for name in phases(a):
        path = work / f"{name.replace(':', '_')}.json"
        if path.is_file():
            print(f"[done] {name}", flush=True)
            continue
        print(f"[run ] {name}", flush=True)
        t0 = time.perf_counter()
        from difflab.io import atomic_write_json
        atomic_write_json(path, run_phase(a, work, name))   # a phase record is whole or absent: a rerun trusts it
        print(f"[ok  ] {name} in {time.perf_counter() - t0:.0f}s", flush=True)
    print(summarise(a, work)["markdown"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
