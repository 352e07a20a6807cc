"""Spoken digits: class-conditional diffusion on FSDD within a CPU training budget, heard and measured.

    python benchmarks/audio.py [--minutes 30] [--n 500] [--representations mel] [--work runs/audio_bench]

Full size (the numbers of BENCHMARKS.md "Spoken digits"): ``python benchmarks/audio.py --minutes 30``, on the
idle 2-core machine 30 min of training per representation, ~2 min for the classifier (1500 steps), then
~4 min of sampling 500 clips for ``mel`` (dpmpp_2m, 25 NFE, then 64 Griffin-Lim iterations each; ~10 min
for ``wave``) and ~2 min of evaluation (its vocoder floor runs Griffin-Lim on 500 more): about 40 minutes
for ``mel``, 45 more with ``--representations mel,wave``.
``--quick`` runs every phase end to end at toy sizes in seconds (what ``tests/test_audio_benchmark.py`` does).

Data: FSDD (``../shared/data/fsdd/recordings``), recordings of george, jackson, lucas, nicolas and yweweler
for training (2,500), theo held out (500).  Phases, each writing ``WORK/<phase>.json`` (a rerun skips
finished ones):

1. ``classifier``: :func:`difflab.metrics.audio.train_audio_classifier` on the training speakers only.
2. ``train_<rep>``: the ``difflab train --data fsdd`` recipe (cosine schedule, T = 1000, v-prediction,
   min-SNR-5, AdamW 2e-3 with 200 warm-up steps and a cosine decay over the budget, EMA 0.999, batch 32,
   x0 clipped to [-1, 1]) for ``--minutes``; class-conditional on the digit (label dropout by the trainer)
   unless ``--unconditional``.  ``mel``: the default 3-level UNet (16, 32, 64) on (1, 64, 64) log-mels;
   ``mel32``: the same on (1, 32, 64) log-mels of 32 bands (half the cost per step);
   ``wave``: the default DiffWave-style :class:`~difflab.nn.wavenet.WaveNet` (32 channels, 12 layers) on
   the (1, 8192) waveforms.
3. ``sample_<rep>``: ``--n`` clips, sample i asked for digit i mod 10, with ``--sampler``/``--steps`` (and
   ``--guidance W``: classifier-free guidance, two network evaluations a step); the
   real-time factor counts sampling and Griffin-Lim (seconds of compute per second of audio); the
   first 10 clips as WAV files and their spectrogram figure in ``WORK/<rep>_wavs/``.
4. ``vocoder_examples``: five held-out recordings and their mel + Griffin-Lim round trips as WAV files and
   a figure in ``WORK/vocoder_wavs/`` (``docs/audio/`` holds a copy).
5. ``eval_<rep>``: :func:`difflab.metrics.audio.evaluate_audio`: requested-digit accuracy, FD/KID/precision/
   recall against the held-out speaker, beside the real-vs-real floor and the vocoder floor.

Targets (issue 18): requested-digit accuracy >= 90 %, real-time factor < 1 at the chosen NFE.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from difflab.io import atomic_write_json

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "fsdd" / "recordings"
RECIPE = dict(batch_size=32, lr=2e-3, warmup=200, lr_schedule="cosine", grad_clip=1.0, ema_decay=0.999,
              weighting="min_snr")
# representation -> (data representation, mel encoder options, network options over the default for its shape)
REPRESENTATIONS = {"mel": ("mel", {}, {}), "mel32": ("mel", {"n_mels": 32}, {}), "wave": ("wave", {}, {})}
QUICK = dict(index_range="0:40", train_steps=2, classifier_steps=3, n=10, steps=2, griffin_lim_iters=2,
             networks={"mel": {"channels": [8, 16], "attention_levels": [], "mid_attention": False},
                       "mel32": {"channels": [8, 16], "attention_levels": [], "mid_attention": False},
                       "wave": {"channels": 8, "layers": 4, "time_embed_dim": 16}})


def _data(a, split: str = "train", rep: str = "wave"):
    from difflab.data import load_dataset
    from difflab.encoders.mel import mel_dataset
    representation, enc, _ = REPRESENTATIONS[rep]
    data = load_dataset("fsdd", a.data_dir, QUICK["index_range"] if a.quick and split == "train" else None,
                        split=split)
    if representation == "wave":
        return data
    return mel_dataset(data, **enc, **({"griffin_lim_iters": QUICK["griffin_lim_iters"]} if a.quick else {}))


def phase_classifier(a, work: Path) -> dict:
    from difflab.metrics import save_classifier
    from difflab.metrics.audio import train_audio_classifier
    train, held = _data(a), _data(a, "heldout")
    steps = QUICK["classifier_steps"] if a.quick else a.classifier_steps
    start = time.perf_counter()
    net = train_audio_classifier(train.x, train.labels, steps=steps, seed=a.seed, progress=not a.no_progress)
    save_classifier(net, work / "classifier", {"data": "fsdd", "speakers": train.info["speakers"], "steps": steps})
    acc = float((net.probabilities(held.x).argmax(1) == held.labels).double().mean())
    return {"seconds": time.perf_counter() - start, "steps": steps, "heldout_accuracy": acc}


def phase_train(a, work: Path, rep: str) -> dict:
    from difflab.denoisers import create_denoiser
    from difflab.train import TrainConfig, train
    data = _data(a, rep=rep)
    network = dict(QUICK["networks"][rep] if a.quick else REPRESENTATIONS[rep][2])
    if not a.unconditional:
        network["num_classes"] = data.num_classes
    den = create_denoiser(data.shape, network, "cosine", 1000, "v", clip_x0=1.0, seed=a.seed)
    budget = {"steps": QUICK["train_steps"]} if a.quick else {"minutes": a.minutes}
    cfg = TrainConfig(**budget, **RECIPE, seed=a.seed, sample_every=0, sample_steps=2 if a.quick else 50,
                      progress=not a.no_progress)
    res = train(den, data, work / f"run_{rep}", cfg)
    return {"steps": res.step, "seconds": res.seconds, "it_per_s": res.it_per_s, "final_loss": res.final_loss,
            "parameters": sum(p.numel() for p in den.net.parameters()), "conditional": not a.unconditional}


def phase_sample(a, work: Path, rep: str) -> dict:
    import numpy as np
    from difflab.data.audio import real_time_factor, write_wav
    from difflab.metrics.audio import sample_audio_sets
    from difflab.train import load_checkpoint
    from difflab.viz import audio_figure
    from difflab.guidance import guided_denoiser
    den = load_checkpoint(work / f"run_{rep}").denoiser("ema")     # a mel model carries its encoder
    if a.guidance != 1.0:    # classifier-free guidance: two network evaluations a step
        den = guided_denoiser(den, a.guidance)
    n, steps = (QUICK["n"], QUICK["steps"]) if a.quick else (a.n, a.steps)
    start = time.perf_counter()
    (_, x, labels, _, _), = sample_audio_sets(den, [a.seed], n=n, sampler=a.sampler, steps=steps,
                                              progress=not a.no_progress)
    seconds = time.perf_counter() - start
    np.savez_compressed(work / f"samples_{rep}.npz", samples=x.numpy(),
                        **({} if labels is None else {"labels": labels.numpy()}))
    wavs = work / f"{rep}_wavs"
    names = [f"{i:02d}" + ("" if labels is None else f"_{int(labels[i])}") for i in range(min(10, n))]
    for i, name in enumerate(names):
        write_wav(wavs / f"{name}.wav", x[i], 8000)
    audio_figure(x[:len(names)], wavs / "spectrograms.png", 8000, titles=names, cols=5)
    return {"n": n, "sampler": a.sampler, "steps": steps, "guidance": a.guidance, "seconds": seconds,
            "rtf": real_time_factor(seconds, x)}


def phase_vocoder_examples(a, work: Path) -> dict:
    """Five held-out recordings (digits 0-4) as recorded and through the mel encoder and Griffin-Lim, as WAV
    files and one figure (``WORK/vocoder_wavs/``): what the vocoder alone does to real speech."""
    from difflab.data.audio import write_wav
    from difflab.encoders import MelEncoder
    from difflab.metrics.audio import vocode
    from difflab.viz import audio_figure
    held = _data(a, "heldout")
    pick = torch.stack([(held.labels == d).nonzero()[0, 0] for d in range(5)])
    real = held.x[pick]
    enc = MelEncoder(**({"griffin_lim_iters": QUICK["griffin_lim_iters"]} if a.quick else {}))
    vocoded = vocode(enc, real)
    out = work / "vocoder_wavs"
    names = [f"real_{d}" for d in range(5)] + [f"vocoded_{d}" for d in range(5)]
    for name, x in zip(names, torch.cat([real, vocoded])):
        write_wav(out / f"{name}.wav", x, 8000)
    audio_figure(torch.cat([real, vocoded]), out / "real_vs_vocoded.png", 8000, cols=5,
                 titles=[f"{held.names[int(i)]}" for i in pick] + [f"vocoded {d}" for d in range(5)])
    return {"recordings": [held.names[int(i)] for i in pick]}


def phase_eval(a, work: Path, rep: str) -> dict:
    import numpy as np
    from difflab.encoders import MelEncoder
    from difflab.metrics import load_classifier
    from difflab.metrics.audio import evaluate_audio
    from difflab.train import load_checkpoint
    train, held = _data(a), _data(a, "heldout")
    with np.load(work / f"samples_{rep}.npz") as f:
        x = torch.from_numpy(f["samples"])
        labels = torch.from_numpy(f["labels"]) if "labels" in f.files else None
    enc = load_checkpoint(work / f"run_{rep}").encoder()
    if enc is None:     # a waveform model: the vocoder floor of the default mel encoder, for comparison
        enc = MelEncoder(**({"griffin_lim_iters": QUICK["griffin_lim_iters"]} if a.quick else {}))
    return evaluate_audio(x, load_classifier(work / "classifier"), train.x, train.labels, held.x, held.labels,
                          labels=labels, vocoder=enc, seed=a.seed, min_samples=10 if a.quick else 500)


def run_phase(a, work: Path, name: str, fn, *args) -> dict:
    out = work / f"{name}.json"
    if out.exists():
        return json.loads(out.read_text())
    print(f"== {name}", flush=True)
    res = fn(a, work, *args)
    atomic_write_json(out, res)   # a phase record is whole or absent: a rerun trusts it
    return res


def summarise(results: dict) -> str:
    lines = ["| representation | steps (it/s) | requested-digit accuracy | FD: samples / vocoder floor / real floor | "
             "precision / recall | sampling RTF |", "| --- | --- | --- | --- | --- | --- |"]
    for rep, r in results.items():
        t, s, e = r["train"], r["sample"], r["eval"]
        acc = "-" if e["accuracy_samples"] is None else f"{100 * e['accuracy_samples']:.1f} %"
        lines.append(f"| {rep} | {t['steps']} ({t['it_per_s']:.2f}) | {acc} (vocoder floor "
                     f"{100 * e['accuracy_vocoder']:.1f} %) | {e['fd_samples']:.2f} / {e['fd_vocoder']:.2f} / "
                     f"{e['fd_floor']:.2f} | {e['precision_samples']:.2f} / {e['recall_samples']:.2f} | "
                     f"{s['rtf']:.3f} ({s['sampler']}, {s['steps']} steps) |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=str(DEFAULT_DATA))
    ap.add_argument("--work", default="runs/audio_bench")
    ap.add_argument("--minutes", type=float, default=30.0, help="training budget per representation")
    ap.add_argument("--representations", default="mel", help=f"comma-separated, of {', '.join(REPRESENTATIONS)}")
    ap.add_argument("--n", type=int, default=500, help="generated clips (50 per digit)")
    ap.add_argument("--sampler", default="dpmpp_2m")
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--classifier-steps", type=int, default=1500)
    ap.add_argument("--guidance", type=float, default=1.0,
                    help="classifier-free guidance scale when sampling (1: none; >1 doubles the NFE per step)")
    ap.add_argument("--unconditional", action="store_true", help="train without the digit labels")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="every phase at toy sizes (seconds)")
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)
    reps = [r.strip() for r in a.representations.split(",") if r.strip()]
    unknown = [r for r in reps if r not in REPRESENTATIONS]
    if unknown:
        ap.error(f"unknown representation(s) {', '.join(unknown)}; choose from {', '.join(REPRESENTATIONS)}")
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    clf = run_phase(a, work, "classifier", phase_classifier)
    run_phase(a, work, "vocoder_examples", phase_vocoder_examples)
    results = {}
    for rep in reps:
        results[rep] = {"train": run_phase(a, work, f"train_{rep}", phase_train, rep),
                        "sample": run_phase(a, work, f"sample_{rep}", phase_sample, rep),
                        "eval": run_phase(a, work, f"eval_{rep}", phase_eval, rep)}
    (work / "summary.json").write_text(json.dumps({"classifier": clf, **results}, indent=1))
    print(f"classifier: held-out speaker accuracy {100 * clf['heldout_accuracy']:.1f} % ({clf['steps']} steps)")
    print(summarise(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
