"""Diffusion against a GAN and a VAE on MNIST (and a GAN on Stacked MNIST), at the same data, wall-clock budget, device and optimiser.

Full size (run alone on an idle machine; about 2 hours on this 2-core CPU: 80 minutes of training, then
sampling and scoring, mostly the diffusion model's 20-NFE samples; 30 minutes more with the VAE)::

    python benchmarks/diffusion_vs_gan.py --minutes 10 --seeds 0,1,2 --n 1000 --mode-n 10000 \\
        --work runs/diffusion_vs_gan

Quick mode, end to end in about 15-30 s (a few steps each, tiny sample counts; what the test runs)::

    python benchmarks/diffusion_vs_gan.py --quick --work /tmp/dvg

Contestants, each trained on MNIST images 0-7999 (``../shared/data/mnist``) for ``--minutes`` of wall clock
per run, one run per training seed (``--seeds``), one after the other in this process, fused AdamW on both
sides, no sample grids during training:

* **diffusion**: the ``difflab train`` defaults (the default UNet for 28x28, cosine schedule with
  T = 1000, v-prediction, min-SNR-5 weighting, AdamW lr 2e-3 with 200 warm-up steps, betas (0.9, 0.999),
  batch 64, grad clip 1, EMA 0.999); sampled with the generator's default DPM-Solver++(2M), 20 NFE.
  Checkpoints every ``minutes / 5`` (all kept) give quality against training time.
* **gan**: the ``difflab train-gan`` defaults (DCGAN-style G and D, non-saturating loss, R1 gamma 1 every
  4 steps, AdamW lr 2e-4 with betas (0.5, 0.99), batch 64, EMA 0.999); one network evaluation a sample.
  Milestones at 20, 40, 60, 80 and 100% of the budget.
* **vae** (MNIST only: the issue asks Stacked MNIST mode counts of the GAN and the diffusion model): the
  ``difflab train-autoencoder`` KL autoencoder (f = 4, see ``VAE`` below) trained as a VAE (L2 loss, KL
  weight = 2 sigma_x^2, so the loss is the negative ELBO of a Gaussian decoder), AdamW lr 1e-3, batch 64;
  sampled by decoding prior samples z ~ N(0, I), one network evaluation a sample.  Same milestones.

Then ``difflab compare`` (:func:`difflab.experiments.compare.compare`) of the models with ``--n``
samples per run (sampling seed 0), scored with the small MNIST classifier (``WORK/classifier``, trained
here if missing: the Inception network's weights cannot be downloaded on this machine): FD, KID,
precision/recall, IS, class entropy, nearest-train ratio, s/image, NFE, parameters, training time, mean
+- std over the training seeds, FD against training time.  The same on Stacked MNIST (``--stacked-seeds``
runs of each, 10,000 stacked training images from the same images 0-7999, held-out stacks from
8000-9999) with the modes covered and KL to uniform of ``--mode-n`` samples.

Writes ``WORK/mnist/`` and ``WORK/stacked_mnist/`` (report.md, report.html, results.json, figures) and
``WORK/summary.json``; prints both tables.  A rerun skips the runs that finished (``WORK/<data>/runs/
<model><seed>/done.json``).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "mnist"
GAN_MILESTONES = (0.2, 0.4, 0.6, 0.8, 1.0)
# The VAE baseline: the KL autoencoder of ``difflab train-autoencoder`` (f = 4) with an L2 loss and a KL weight
# beta = 2 sigma_x^2 that makes its loss a VAE's negative ELBO; (latent channels, beta) chosen among
# by FD of 1000 prior samples after 2-minute runs on training seed 100 (not a reported seed): 4 latent channels
# with beta 0.02 / 0.1 / 0.3 / 1 / 3: FD 608 / 468 / 337 / 261 / 298; 1 channel with beta 0.05: 574.
VAE = {"factor": 4, "latent_channels": 4, "kl_weight": 1.0}


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="training budget per run")
    ap.add_argument("--seeds", default="0,1,2", help="training seeds on MNIST")
    ap.add_argument("--stacked-seeds", default="0", help="training seeds on Stacked MNIST")
    ap.add_argument("--n", type=int, default=1000, help="samples per run for the metrics")
    ap.add_argument("--curve-n", type=int, default=500, help="samples per checkpoint for the curves")
    ap.add_argument("--mode-n", type=int, default=10_000, help="samples per run for the Stacked MNIST mode count")
    ap.add_argument("--classifier-steps", type=int, default=1500)
    ap.add_argument("--data-dir", default=str(DEFAULT_DATA))
    ap.add_argument("--work", default="runs/diffusion_vs_gan")
    ap.add_argument("--quick", action="store_true", help="a few steps and samples: the pipeline end to end in seconds")
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)
    if a.quick:
        a.seeds, a.stacked_seeds, a.n, a.curve_n, a.mode_n, a.classifier_steps = "0,1", "0", 20, 10, 50, 3
    return a


def _budget(a) -> dict:
    """Training budget of one run: ``--minutes`` of wall clock, or a few steps in quick mode."""
    return {"steps": 3} if a.quick else {"minutes": a.minutes}


def _data_options(a, name: str) -> dict:
    return {"n": 200} if a.quick and name == "stacked_mnist" else {}


def train_diffusion(a, data, run: Path, seed: int) -> None:
    import difflab as dl
    from difflab.train import TrainConfig, train
    den = dl.create_denoiser(data.shape, schedule="cosine", timesteps=1000, prediction="v", clip_x0=1.0, seed=seed)
    budget = _budget(a)
    every = budget.get("minutes", 1.0) / 5   # five checkpoints along the run, all kept
    grid = {"sample_n": 4, "sample_steps": 2} if a.quick else {}   # the grid written at the end
    # no milestone: it would shift the five checkpoints (difflab train keeps one at 30 % by default)
    train(den, data, run, TrainConfig(**budget, milestones=(), seed=seed, sample_every=0,
                                      ckpt_every_minutes=every, keep=6, progress=not a.no_progress, **grid))


def train_gan_run(a, data, run: Path, seed: int) -> None:
    from difflab.baselines import GANConfig, train_gan
    train_gan(data, run, GANConfig(**_budget(a), seed=seed, sample_every=0, milestones=GAN_MILESTONES,
                                   progress=not a.no_progress))


def train_vae_run(a, data, run: Path, seed: int) -> None:
    import torch
    from difflab.nn.autoencoder import KLAutoencoder, default_autoencoder
    from difflab.train.autoencoder import AutoencoderTrainConfig, train_autoencoder
    torch.manual_seed(seed)
    net = KLAutoencoder(**default_autoencoder(data.shape, VAE["factor"], latent_channels=VAE["latent_channels"]))
    train_autoencoder(net, data, run, AutoencoderTrainConfig(**_budget(a), seed=seed, loss="l2",
                                                             kl_weight=VAE["kl_weight"], sample_every=0,
                                                             milestones=GAN_MILESTONES, progress=not a.no_progress))


TRAINERS = {"diffusion": train_diffusion, "gan": train_gan_run, "vae": train_vae_run}
VAE_PARTS = ("mnist",)   # the issue asks for Stacked MNIST mode counts of the GAN and the diffusion model only


def classifier(a, work: Path) -> Path:
    import difflab as dl
    from difflab.metrics import save_classifier, train_classifier
    folder = work / "classifier"
    if not (folder / "classifier.json").is_file():
        mnist = dl.load_dataset("mnist", a.data_dir, "0:8000")
        net = train_classifier(mnist.x, mnist.labels, steps=a.classifier_steps, batch_size=32 if a.quick else 128,
                               progress=not a.no_progress)
        save_classifier(net, folder, {"data": "mnist", "range": [0, 8000], "steps": a.classifier_steps})
    return folder


def run_part(a, work: Path, name: str, seeds: list[int], clf: Path) -> dict:
    """Train every model and seed on data set ``name`` (skipping finished runs), then compare them."""
    from difflab.experiments.compare import Model, compare
    import difflab as dl
    data = dl.load_dataset(name, a.data_dir, "0:8000", **_data_options(a, name))
    out = work / name
    runs = {}
    for model, trainer in TRAINERS.items():
        if model == "vae" and name not in VAE_PARTS:
            continue
        runs[model] = []
        for seed in seeds:
            run = out / "runs" / f"{model}{seed}"
            if not (run / "done.json").is_file():
                print(f"== {name}: training {model}, seed {seed}, {_budget(a)}", flush=True)
                if run.exists():
                    import shutil
                    shutil.rmtree(run)   # an unfinished run restarts: its budget is wall clock
                trainer(a, data, run, seed)
                from difflab.io import atomic_write_json
                atomic_write_json(run / "done.json", {"seed": seed, **_budget(a)})
            runs[model].append(str(run))
    print(f"== {name}: comparing", flush=True)
    # quick: 4 diffusion steps and small training / held-out sets (the nearest-train distances are N x M)
    options = {"diffusion": {"steps": 4}} if a.quick else {}
    ranges = {"train_range": "0:500", "ref_range": "8000:8300"} if a.quick else {}
    return compare([Model(m, r, options.get(m, {})) for m, r in runs.items()], name, a.data_dir, clf, out, n=a.n,
                   seeds=[0], curve_n=a.curve_n, mode_n=a.mode_n, min_samples=0 if a.quick else 1000,
                   progress=not a.no_progress, data_options=_data_options(a, name), **ranges)


def main(argv=None) -> dict:
    a = parse_args(argv)
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    clf = classifier(a, work)
    summary = {}
    for name, seeds in (("mnist", _ints(a.seeds)), ("stacked_mnist", _ints(a.stacked_seeds))):
        res = run_part(a, work, name, seeds, clf)
        summary[name] = {"models": res["models"], "real": res["real"], "stacked_real": res["stacked_real"]}
        print((work / name / "report.md").read_text().split("\n## ")[0], flush=True)
    (work / "summary.json").write_text(json.dumps({"args": vars(a), **summary}, indent=1))
    return summary


if __name__ == "__main__":
    main()
