"""difflab against the diffusers training recipe on MNIST, at the same wall-clock budget.

    python benchmarks/mnist_budget.py [--minutes 10] [--n 1000] [--ddpm-n 1000] [--work runs/mnist_budget]

Both contestants train on MNIST images 0-7999 (``../shared/data/mnist``) for ``--minutes`` of wall
clock each, one after the other on the same idle machine, with the same batch size (64), learning
rate (peak 2e-3 after 200 linear warm-up steps, then the recipe's default cosine decay to 0, here
over the wall-clock budget), gradient clipping (1.0), EMA (0.999 with warm-up), and about the same
parameter count; each its own AdamW settings:

* **difflab**: its UNet (16, 32, 64; 1 block per level; attention at 7x7), cosine schedule,
  v-prediction, min-SNR-5 loss weighting, AdamW betas (0.9, 0.999), no weight decay, fused (the
  ``difflab train`` defaults; x0 not clipped when sampling); 0.69M parameters.
* **diffusers recipe** (``examples/unconditional_image_generation/train_unconditional.py``):
  ``UNet2DModel`` with two layers per block, channels in the recipe's ratio (c, c, 2c), three levels
  for 28x28 instead of six for 64x64 and, as in the recipe, self-attention only at a coarse level
  (the recipe's 4x4 of 64 -> here 7x7 of 28, where difflab has it too), ``DDPMScheduler`` (linear
  betas, T = 1000, epsilon prediction, clipped samples), the plain MSE to the noise and the recipe's
  AdamW (betas (0.95, 0.999), weight decay 1e-6, eps 1e-8), fused as difflab's is (a torch flag either
  side can set; the recipe itself does not set it);
  (24, 24, 48) channels give 0.66M parameters (-4%).
* **difflab recipe on the diffusers network**: difflab's trainer and
  recipe on a difflab UNet built from that ``UNet2DModel``'s config, starting from the very same initial
  weights (loaded name by name through :mod:`difflab.interop.diffusers`; the phase checks that both give
  the same output before training).  Against the diffusers row it isolates trainer and recipe; against
  the difflab row, the network.

Samplers are chosen, then reported, on different sampling seeds: 1000 samples of each with each candidate
sampler at <= 50 NFE (difflab's samplers for difflab, diffusers' schedulers for the diffusers model: DDIM,
SDE-DPM-Solver++(2M) and Euler ancestral, 50 steps each; difflab also its predictor-corrector sampler, 25 steps
x 2 NFE) and with 1000-step DDPM (``--ddpm-n`` samples, shown but not a candidate: 1.25 and 2.2 s per image for
difflab and diffusers here, ~21 and ~37 min for 1000; with ``--ddpm-n 100`` the whole script takes ~75 min),
all drawn with the selection seed ``--select-seed`` and scored by
``difflab.metrics.evaluate_samples`` with the same extractor: the small MNIST classifier (``--classifier``
folder, trained here if missing) - the Inception network's weights cannot be downloaded on this machine.
Each side's best <= 50 NFE sampler on those samples is then drawn again with the reported seeds ``--seed``
and ``--extra-seeds`` (other noises), and the reported numbers are those: mean and spread over the seeds.

``--quick`` runs every phase at toy sizes (3 training steps, 2-step samplers, 16 samples): a check that
the script works (``tests/test_mnist_budget_benchmark.py``), not a measurement.

Every phase runs in its own process (so peak RSS is per phase) and writes ``WORK/<phase>.json``; a
rerun skips finished phases.  The summary goes to ``WORK/summary.json`` and, as Markdown, to stdout.
"""
from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "mnist"
BATCH, LR, WARMUP, CLIP, EMA_DECAY = 64, 2e-3, 200, 1.0, 0.999
LR_SCHEDULE = "cosine"  # the recipe's default --lr_scheduler, decayed over the wall-clock budget
DIFFUSERS_CHANNELS = (24, 24, 48)
VERSION = 2   # of the phases and their records: a work folder of another version is refused
QUICK = dict(steps=3, train_range="0:256", ref_range="8000:8064", n=16, sampler_steps=2, ddpm_steps=4,
             classifier_steps=20)
# the recipe's AdamW defaults (--adam_beta1/2, --adam_weight_decay, --adam_epsilon); difflab uses its own
RECIPE_ADAMW = {"betas": (0.95, 0.999), "weight_decay": 1e-6, "eps": 1e-8}
# (label, sampler, steps, options); NFE = steps for all of these
DIFFLAB_SAMPLERS = [("ddim-50", "ddim", 50, {"grid": "trailing"}),
                    ("dpmpp_2m_sde-50", "dpmpp_2m_sde", 50, {"grid": "trailing"}),
                    ("euler_ancestral-50", "euler_ancestral", 50, {"grid": "trailing"}),
                    ("pc-50", "pc", 25, {"grid": "trailing"}),  # 2 NFE per step (difflab only)
                    ("ddpm-1000", "ddpm", 1000, {})]
DIFFUSERS_SAMPLERS = [("ddim-50", "DDIMScheduler", 50, {"timestep_spacing": "trailing"}),
                      ("dpmpp_2m_sde-50", "DPMSolverMultistepScheduler", 50,
                       {"algorithm_type": "sde-dpmsolver++", "timestep_spacing": "trailing"}),
                      ("euler_ancestral-50", "EulerAncestralDiscreteScheduler", 50, {"timestep_spacing": "trailing"}),
                      ("ddpm-1000", "DDPMScheduler", 1000, {})]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def train_config(a):
    """The training settings both contestants share (difflab's loop reads all of them; the diffusers
    loop its batch size, learning-rate curve, clipping and EMA decay)."""
    from difflab.train import TrainConfig
    budget = {"steps": QUICK["steps"], "minutes": None} if a.quick else {"minutes": a.minutes}
    return TrainConfig(**budget, batch_size=BATCH, lr=LR, warmup=WARMUP, lr_schedule=LR_SCHEDULE,
                       grad_clip=CLIP, ema_decay=EMA_DECAY, weighting="min_snr", seed=a.seed, sample_every=0,
                       progress=not a.no_progress)


DIFFUSERS_UNET = dict(sample_size=28, in_channels=1, out_channels=1, layers_per_block=2,
                      block_out_channels=DIFFUSERS_CHANNELS, down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
                      up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"), norm_num_groups=8)


def diffusers_unet():
    from diffusers import UNet2DModel
    return UNet2DModel(**DIFFUSERS_UNET)


def throughput_tools():
    """``benchmarks/throughput.py`` as a module: its FLOP counter, matmul peak and difflab/diffusers pair."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("difflab_throughput_benchmark", Path(__file__).with_name("throughput.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# -- phases (each runs in a child process) ---------------------------------------------------------
def _train_range(a) -> str:
    return QUICK["train_range"] if a.quick else "0:8000"


def _train_difflab(a, den, out: Path) -> dict:
    import difflab as dl
    from difflab.train import train
    res = train(den, dl.load_dataset("mnist", a.data_dir, _train_range(a)), out, train_config(a))
    return {"steps": res.step, "seconds": res.seconds, "it_per_s": res.it_per_s, "final_loss": res.final_loss,
            "params": sum(p.numel() for p in den.net.parameters())}


def phase_train_difflab(a, work: Path) -> dict:
    import difflab as dl
    den = dl.create_denoiser((1, 28, 28), schedule="cosine", timesteps=1000, prediction="v", clip_x0=None,
                             seed=a.seed)
    return _train_difflab(a, den, work / "difflab")


def phase_train_samenet(a, work: Path) -> dict:
    """difflab's trainer and recipe on the diffusers recipe's network, from the same initial weights (the
    diffusers side's network as ``phase_train_diffusers`` initialises it, loaded name by name)."""
    import difflab as dl
    tp = throughput_tools()
    pair = tp.build_pair(DIFFUSERS_UNET, seed=a.seed)
    gap = tp.output_difference(pair, (1, 28, 28))
    if gap > 1e-4:
        raise SystemExit(f"the difflab UNet does not reproduce the UNet2DModel it was loaded from (max gap {gap:.2e})")
    den = dl.create_denoiser((1, 28, 28), network=dict(pair["difflab"].config), schedule="cosine", timesteps=1000,
                             prediction="v", clip_x0=None)
    den.net.load_state_dict(pair["difflab"].state_dict())
    return {**_train_difflab(a, den, work / "samenet"), "init_max_gap": gap}


def phase_train_diffusers(a, work: Path) -> dict:
    """The diffusers example's training step, written out: eps-MSE on DDPMScheduler.add_noise."""
    import torch
    import torch.nn.functional as F
    from diffusers import DDPMScheduler

    import difflab as dl
    from difflab.progress import progress_bar
    from difflab.train import EMA, lr_at
    data = dl.load_dataset("mnist", a.data_dir, _train_range(a))
    torch.manual_seed(a.seed)
    g = torch.Generator().manual_seed(a.seed)
    unet = diffusers_unet()
    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
    cfg = train_config(a)
    opt = torch.optim.AdamW(unet.parameters(), lr=cfg.lr, fused=True, **RECIPE_ADAMW)
    ema = EMA(unet, cfg.ema_decay)
    budget, step, losses = (math.inf if cfg.minutes is None else 60.0 * cfg.minutes), 0, []
    bar = None if a.no_progress or a.quick else progress_bar(total=int(budget), desc="diffusers recipe", unit="s")
    unet.train()
    start = time.perf_counter()
    while (now := time.perf_counter()) - start < budget and (cfg.steps is None or step < cfg.steps):
        idx = torch.randint(0, len(data), (cfg.batch_size,), generator=g)
        x0 = data.x[idx]
        noise = torch.randn(x0.shape, generator=g)
        t = torch.randint(0, sched.config.num_train_timesteps, (cfg.batch_size,), generator=g)
        for grp in opt.param_groups:
            grp["lr"] = lr_at(cfg, step, max((now - start) / budget, step / cfg.steps if cfg.steps else 0.0))
        loss = F.mse_loss(unet(sched.add_noise(x0, noise, t), t).sample, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), cfg.grad_clip)
        opt.step()
        ema.update(unet)
        step += 1
        losses.append(loss.item())
        if bar is not None:
            bar.set_postfix(step=step, loss=f"{losses[-1]:.4f}", refresh=False)
            bar.update(int(min(now - start, budget)) - bar.n)   # whole seconds; redrawn every mininterval
    seconds = time.perf_counter() - start
    if bar is not None:
        bar.close()
    ema.model.save_pretrained(work / "diffusers" / "unet")
    sched.save_pretrained(work / "diffusers" / "scheduler")
    return {"steps": step, "seconds": seconds, "it_per_s": step / seconds,
            "final_loss": sum(losses[-25:]) / len(losses[-25:]),
            "params": sum(p.numel() for p in unet.parameters())}


def phase_flops(a, work: Path) -> dict:
    """FLOPs of one training step of each side's network at the batch size (forward and backward, counted by
    ``torch.utils.flop_counter``) and this CPU's float32 matmul peak: with the measured it/s, the fraction of
    the peak each trainer reaches."""
    import torch

    import difflab as dl
    tp = throughput_tools()
    cpu = torch.device("cpu")
    pair = tp.build_pair(DIFFUSERS_UNET, seed=a.seed)
    nets = {"difflab": dl.create_denoiser((1, 28, 28), seed=a.seed).net, "diffusers": pair["diffusers"],
            "samenet": pair["difflab"]}
    flops = {side: tp.step_flops(net, (1, 28, 28), BATCH, cpu) for side, net in nets.items()}
    return {"step_flops": flops, "peak_flops": tp.peak_flops(cpu, 256 if a.quick else 2048, 3 if a.quick else 10),
            "threads": torch.get_num_threads()}


# -- sampling -----------------------------------------------------------------------------------------
SIDES = ("difflab", "diffusers", "samenet")   # samenet: difflab's trainer on the diffusers network


def candidates(side: str) -> list[tuple]:
    """The samplers tried on ``side``: the <= 50 NFE ones and, for the two contestants, 1000-step DDPM."""
    if side == "diffusers":
        return DIFFUSERS_SAMPLERS
    return DIFFLAB_SAMPLERS if side == "difflab" else [s for s in DIFFLAB_SAMPLERS if s[2] <= 50]


def _steps(a, steps: int) -> int:
    return (QUICK["ddpm_steps"] if steps > 50 else QUICK["sampler_steps"]) if a.quick else steps


def _sample_difflab(a, work: Path, side: str, label: str, n: int, seed: int):
    import difflab as dl
    _, name, steps, opts = next(s for s in DIFFLAB_SAMPLERS if s[0] == label)
    den = dl.load(str(work / side))
    res = dl.sample(den, n=n, sampler=name, steps=_steps(a, steps), seed=seed, batch_size=a.sample_batch,
                    progress=not a.no_progress, **opts)
    return res.x, res.nfe


def _sample_diffusers(a, work: Path, side: str, label: str, n: int, seed: int):
    import diffusers
    import torch
    from diffusers import UNet2DModel

    from difflab.progress import progress_bar
    _, cls, steps, opts = next(s for s in DIFFUSERS_SAMPLERS if s[0] == label)
    steps = _steps(a, steps)
    unet = UNet2DModel.from_pretrained(work / "diffusers" / "unet").eval()
    base = diffusers.DDPMScheduler.from_pretrained(work / "diffusers" / "scheduler")
    sched = getattr(diffusers, cls).from_config(base.config, **opts)
    out = []
    bar = None if a.no_progress else progress_bar(total=n * steps, desc=f"diffusers {label}", unit="img-step")
    for b0 in range(0, n, a.sample_batch):
        nb = min(a.sample_batch, n - b0)
        g = torch.Generator().manual_seed(seed * 100003 + b0)
        sched.set_timesteps(steps)
        x = torch.randn((nb, 1, 28, 28), generator=g) * sched.init_noise_sigma
        with torch.no_grad():
            for t in sched.timesteps:
                eps = unet(sched.scale_model_input(x, t), t).sample
                x = sched.step(eps, t, x, generator=g).prev_sample
                if bar is not None:
                    bar.update(nb)
        out.append(x)  # clamped and quantised by to_uint8 when saved
    if bar is not None:
        bar.close()
    return torch.cat(out), steps


def samples_file(work: Path, side: str, label: str, seed: int | None = None) -> Path:
    """Samples of ``side``'s sampler ``label``: the selection seed's (None) or a reported seed's."""
    return work / f"samples_{side}_{label}{'' if seed is None else f'_seed{seed}'}.npz"


def phase_sample(a, work: Path, side: str, label: str, seed: int | None = None) -> dict:
    """Samples with the selection seed (``seed`` None: the sampler sweep) or a reported seed."""
    import numpy as np

    from difflab.data import to_uint8
    n = a.ddpm_n if label.startswith("ddpm") else a.n
    t0 = time.perf_counter()
    x, nfe = (_sample_diffusers if side == "diffusers" else _sample_difflab)(
        a, work, side, label, n, a.select_seed if seed is None else seed)
    seconds = time.perf_counter() - t0
    np.savez_compressed(samples_file(work, side, label, seed), samples=to_uint8(x))
    return {"n": n, "nfe": nfe, "seconds": seconds, "s_per_image": seconds / n,
            "seed": a.select_seed if seed is None else seed}


# -- scoring ------------------------------------------------------------------------------------------
def phase_classifier(a, work: Path) -> dict:
    import difflab as dl
    from difflab.metrics import save_classifier, train_classifier
    data = dl.load_dataset("mnist", a.data_dir, _train_range(a))
    steps = QUICK["classifier_steps"] if a.quick else 1500
    net = train_classifier(data.x, data.labels, steps=steps, seed=0, progress=not a.no_progress)
    save_classifier(net, work / "classifier", {"data": "mnist", "range": _train_range(a), "steps": steps})
    return {"classifier": str(work / "classifier")}


def _eval_inputs(a, work: Path):
    """The extractor, the training images (for the floor) and the held-out reference images."""
    import difflab as dl
    from difflab.metrics import load_classifier
    return (load_classifier(a.classifier or work / "classifier"),
            dl.load_dataset("mnist", a.data_dir, _train_range(a)).x,
            dl.load_dataset("mnist", a.data_dir, QUICK["ref_range"] if a.quick else "8000:10000").x)


def _score(a, work: Path, side: str, label: str, seed: int | None, inputs) -> dict:
    import numpy as np
    import torch

    from difflab.metrics.evaluate import evaluate_samples
    clf, train, ref = inputs
    x = torch.from_numpy(np.load(samples_file(work, side, label, seed))["samples"])
    r = evaluate_samples(x, train, ref, clf, min_samples=min(a.n, a.ddpm_n))
    return {k: v for k, v in r.items() if k != "class_histogram"}


def phase_eval(a, work: Path) -> dict:
    """Every candidate sampler of every side on the selection seed's samples (what the choice is made on)."""
    inputs = _eval_inputs(a, work)
    return {f"{side}/{s[0]}": _score(a, work, side, s[0], None, inputs) for side in SIDES for s in candidates(side)}


def phase_eval_seeds(a, work: Path) -> dict:
    """Each side's chosen sampler on the reported seeds: the numbers the comparison reports."""
    inputs = _eval_inputs(a, work)
    return {side: {"sampler": label, "scores": {str(s): _score(a, work, side, label, s, inputs)
                                                for s in reported_seeds(a)}}
            for side, label in best_samplers(work).items()}


def reported_seeds(a) -> list[int]:
    extra = [int(v) for v in a.extra_seeds.split(",") if v.strip()] if a.extra_seeds else []
    return [a.seed] + extra


def best_samplers(work: Path) -> dict[str, str]:
    """Each side's sampler with the lowest FD at <= 50 NFE on the selection seed, from ``WORK/eval.json``."""
    ev = json.loads((work / "eval.json").read_text())
    return {side: min((s[0] for s in candidates(side) if s[2] <= 50), key=lambda lab: ev[f"{side}/{lab}"]["fd_samples"])
            for side in SIDES}


# -- orchestration ---------------------------------------------------------------------------------
def phases(a) -> list[str]:
    out = ["train_difflab", "train_diffusers", "train_samenet", "flops"]
    out += [f"sample:{side}:{s[0]}" for side in SIDES for s in candidates(side)]
    if not a.classifier:
        out.append("classifier")
    return out + ["eval"]


def seed_phases(a, work: Path) -> list[str]:
    """After ``eval``: each side's chosen sampler drawn with the reported seeds, and their scores."""
    best = best_samplers(work)
    return [f"sample:{side}:{best[side]}:{s}" for side in SIDES for s in reported_seeds(a)] + ["eval_seeds"]


def run_phase(a, work: Path, name: str) -> dict:
    if name.startswith("sample:"):
        _, side, label, *seed = name.split(":")
        res = phase_sample(a, work, side, label, int(seed[0]) if seed else None)
    else:
        res = globals()[f"phase_{name}"](a, work)
    res["peak_rss_mb"] = peak_rss_mb()
    return res


def _mean_std(values: list[float]) -> tuple[float, float]:
    import statistics
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarise(a, work: Path) -> dict:
    r = {p: json.loads((work / f"{p.replace(':', '_')}.json").read_text()) for p in phases(a) + seed_phases(a, work)}
    ev, best, seeds = r["eval"], best_samplers(work), r["eval_seeds"]
    names = {"difflab": "difflab", "diffusers": "diffusers recipe", "samenet": "difflab recipe, diffusers net"}
    lines = ["| | " + " | ".join(names[s] for s in SIDES) + " | difflab / diffusers | samenet / diffusers |",
             "|---" * (len(SIDES) + 3) + "|"]
    na = math.nan

    def row(label, values, fmt="{:.3g}"):
        d, f, s = values
        ratios = ["" if f is None or s_ is None or not f or math.isnan(f) or math.isnan(s_) else f"{s_ / f:.2f}"
                  for s_ in (d, s)]
        cells = ["-" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt.format(v) for v in values]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {ratios[0]} | {ratios[1]} |")

    train = [r[f"train_{side}"] for side in SIDES]
    row("parameters", [t["params"] for t in train], "{:,}")
    row("training steps in budget", [t["steps"] for t in train], "{:d}")
    row("training it/s", [t["it_per_s"] for t in train])
    row("training peak RSS (MB)", [t["peak_rss_mb"] for t in train], "{:.0f}")
    fl = r["flops"]
    row(f"training GFLOP per step (batch {BATCH})", [fl["step_flops"][side] / 1e9 for side in SIDES], "{:.2f}")
    row(f"fraction of the fp32 matmul peak ({fl['peak_flops'] / 1e9:.0f} GFLOP/s)",
        [fl["step_flops"][side] * t["it_per_s"] / fl["peak_flops"] for side, t in zip(SIDES, train)], "{:.1%}")
    # the reported numbers: each side's chosen sampler over the reported seeds
    summary = {"phases": r, "best": best, "reported_seeds": reported_seeds(a), "select_seed": a.select_seed}
    means = {}
    for key, what, fmt in (("fd_samples", "FD", "{:.2f}"), ("kid_samples", "KID", "{:.2f}"),
                           ("precision_samples", "precision", "{:.3f}"), ("recall_samples", "recall", "{:.3f}")):
        stats = [_mean_std([sc[key] for sc in seeds[side]["scores"].values()]) for side in SIDES]
        means[key] = [m for m, _ in stats]
        row(f"**{what}**, chosen sampler, mean over seeds {reported_seeds(a)}", means[key], fmt)
        lines.append("| (spread: sample std) | " + " | ".join(fmt.format(sd) for _, sd in stats) + " | | |")
    lines.append("| chosen sampler (on seed %d) | %s | | |" % (a.select_seed, " | ".join(best[s] for s in SIDES)))
    # the sweep, on the selection seed
    for label in [s[0] for s in DIFFLAB_SAMPLERS]:
        vals = [ev.get(f"{side}/{label}") for side in SIDES]
        fd = [v["fd_samples"] if v else na for v in vals]
        n = next(v["n"] for v in vals if v)
        row(f"FD {label} (n={n}, selection seed)", fd, "{:.2f}")
        s_img = [r.get(f"sample:{side}:{label}", {}).get("s_per_image", na) for side in SIDES]
        row(f"sampling s/image {label}", s_img, "{:.4f}")
    fd_d, fd_f, fd_s = means["fd_samples"]
    floor = ev[f"difflab/{best['difflab']}"]["fd_floor"]
    met = fd_d <= 0.5 * fd_f
    lines.append("")
    lines.append(f"chosen on seed {a.select_seed}, reported on seeds {reported_seeds(a)}: difflab {best['difflab']} "
                 f"FD {fd_d:.2f}, diffusers {best['diffusers']} FD {fd_f:.2f}; ratio of means {fd_d / fd_f:.3f} "
                 f"(target <= 0.5: {'met' if met else 'NOT met'}); difflab's recipe on the diffusers network "
                 f"({best['samenet']}) FD {fd_s:.2f}, {fd_s / fd_f:.3f} of the diffusers recipe's; "
                 f"real-vs-real floor at n={a.n}: {floor:.2f}")
    summary.update(fd_ratio_of_means=fd_d / fd_f, samenet_fd_ratio=fd_s / fd_f, target_met_on_mean=met,
                   means={k: dict(zip(SIDES, v)) for k, v in means.items()})
    summary["markdown"] = "\n".join(lines)
    (work / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def main(argv=None) -> int:
    from difflab.metrics import classifier_folder
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="runs/mnist_budget", help="folder for runs, samples and per-phase results")
    ap.add_argument("--data-dir", default=str(DEFAULT_DATA))
    ap.add_argument("--minutes", type=float, default=10.0, help="training budget of each contestant")
    ap.add_argument("--n", type=int, default=1000, help="samples per <= 50 NFE sampler")
    ap.add_argument("--ddpm-n", type=int, default=1000, help="samples for the 1000-step DDPM rows")
    ap.add_argument("--sample-batch", type=int, default=250)
    ap.add_argument("--classifier", type=classifier_folder, help="a difflab train-classifier folder (default: train one in WORK)")
    ap.add_argument("--select-seed", type=int, default=100,
                    help="sampling seed of the sampler sweep each side's sampler is chosen on")
    ap.add_argument("--seed", type=int, default=0, help="training seed, and the first reported sampling seed")
    ap.add_argument("--extra-seeds", default="1,2", help="more reported sampling seeds (mean and spread)")
    ap.add_argument("--quick", action="store_true", help="every phase at toy sizes (a check, not a measurement)")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--phase", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.quick:
        a.n = a.ddpm_n = QUICK["n"]
    if a.select_seed in reported_seeds(a):
        ap.error(f"--select-seed {a.select_seed} is also a reported seed: choose the sampler on other noise")
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    if a.phase:  # child process
        from difflab.devices import keep_freed_cpu_memory
        keep_freed_cpu_memory()
        res = run_phase(a, work, a.phase)
        (work / f"{a.phase.replace(':', '_')}.json").write_text(json.dumps(res, indent=1))
        return 0
    old = json.loads((work / "args.json").read_text()) if (work / "args.json").is_file() else None
    if old is not None and old.get("version") != VERSION:
        print(f"{work} holds phases of another version of this benchmark (version {old.get('version', 1)}, this is "
              f"{VERSION}); use a new --work folder", file=sys.stderr)
        return 2
    from difflab.devices import keep_freed_cpu_memory
    keep_freed_cpu_memory()   # the same allocator setting for every phase (difflab's sessions set it too)
    (work / "args.json").write_text(json.dumps({**vars(a), "version": VERSION}, indent=1))
    for group in (lambda: phases(a), lambda: seed_phases(a, work)):  # the seed phases need eval.json
        for name in group():
            if (work / f"{name.replace(':', '_')}.json").is_file():
                print(f"[done] {name}", flush=True)
                continue
            print(f"[run ] {name}", flush=True)
            t0 = time.perf_counter()
            if a.quick:   # in this process: the check runs in seconds (peak RSS is then not per phase)
                res = run_phase(a, work, name)
                (work / f"{name.replace(':', '_')}.json").write_text(json.dumps(res, indent=1))
                continue
            child = [sys.executable, __file__, "--phase", name] + [x for x in (argv or sys.argv[1:])]
            if subprocess.call(child) != 0:
                print(f"phase {name} failed; rerun the same command to continue", file=sys.stderr)
                return 1
            print(f"[ok  ] {name} in {time.perf_counter() - t0:.0f}s", flush=True)
    print(summarise(a, work)["markdown"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
