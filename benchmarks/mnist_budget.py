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
  AdamW (betas (0.95, 0.999), weight decay 1e-6, eps 1e-8);
  (24, 24, 48) channels give 0.66M parameters (-4%).

Then 1000 samples of each with each candidate sampler at <= 50 NFE (difflab's samplers for difflab,
diffusers' schedulers for the diffusers model: DDIM, SDE-DPM-Solver++(2M) and Euler ancestral, 50 steps each;
difflab also its predictor-corrector sampler, 25 steps x 2 NFE) and with
1000-step DDPM (``--ddpm-n`` samples: 1000 images take ~56 min for difflab, ~85 for diffusers here), all scored by
``difflab.metrics.evaluate_samples`` with the same extractor: the small MNIST classifier (``--classifier``
folder, trained here if missing) - the Inception network's weights cannot be downloaded on this machine.

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
    return TrainConfig(minutes=a.minutes, batch_size=BATCH, lr=LR, warmup=WARMUP, lr_schedule=LR_SCHEDULE,
                       grad_clip=CLIP, ema_decay=EMA_DECAY, weighting="min_snr", seed=a.seed, sample_every=0,
                       progress=not a.no_progress)


def diffusers_unet():
    from diffusers import UNet2DModel
    c = DIFFUSERS_CHANNELS
    return UNet2DModel(sample_size=28, in_channels=1, out_channels=1, layers_per_block=2, block_out_channels=c,
                       down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"), norm_num_groups=8)


# -- phases (each runs in a child process) ---------------------------------------------------------
def phase_train_difflab(a, work: Path) -> dict:
    import difflab as dl
    from difflab.train import train
    data = dl.load_dataset("mnist", a.data_dir, "0:8000")
    den = dl.create_denoiser(data.shape, schedule="cosine", timesteps=1000, prediction="v", clip_x0=None, seed=a.seed)
    res = train(den, data, work / "difflab", train_config(a))
    return {"steps": res.step, "seconds": res.seconds, "it_per_s": res.it_per_s, "final_loss": res.final_loss,
            "params": sum(p.numel() for p in den.net.parameters())}


def phase_train_diffusers(a, work: Path) -> dict:
    """The diffusers example's training step, written out: eps-MSE on DDPMScheduler.add_noise."""
    import torch
    import torch.nn.functional as F
    from diffusers import DDPMScheduler
    from tqdm.auto import tqdm

    import difflab as dl
    from difflab.train import EMA, lr_at
    data = dl.load_dataset("mnist", a.data_dir, "0:8000")
    torch.manual_seed(a.seed)
    g = torch.Generator().manual_seed(a.seed)
    unet = diffusers_unet()
    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
    cfg = train_config(a)
    opt = torch.optim.AdamW(unet.parameters(), lr=cfg.lr, **RECIPE_ADAMW)
    ema = EMA(unet, cfg.ema_decay)
    budget, step, losses = 60.0 * cfg.minutes, 0, []
    bar = None if a.no_progress else tqdm(total=int(budget), desc="diffusers recipe", unit="s")
    unet.train()
    start = time.perf_counter()
    while (now := time.perf_counter()) - start < budget:
        idx = torch.randint(0, len(data), (cfg.batch_size,), generator=g)
        x0 = data.x[idx]
        noise = torch.randn(x0.shape, generator=g)
        t = torch.randint(0, sched.config.num_train_timesteps, (cfg.batch_size,), generator=g)
        for grp in opt.param_groups:
            grp["lr"] = lr_at(cfg, step, (now - start) / budget)
        loss = F.mse_loss(unet(sched.add_noise(x0, noise, t), t).sample, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), cfg.grad_clip)
        opt.step()
        ema.update(unet)
        step += 1
        losses.append(loss.item())
        if bar is not None:
            bar.n = min(now - start, budget)
            bar.set_postfix(step=step, loss=f"{losses[-1]:.4f}", refresh=True)
    seconds = time.perf_counter() - start
    if bar is not None:
        bar.close()
    ema.model.save_pretrained(work / "diffusers" / "unet")
    sched.save_pretrained(work / "diffusers" / "scheduler")
    return {"steps": step, "seconds": seconds, "it_per_s": step / seconds, "final_loss": sum(losses[-25:]) / 25,
            "params": sum(p.numel() for p in unet.parameters())}


def _sample_difflab(a, work: Path, label: str, n: int, seed: int):
    import difflab as dl
    _, name, steps, opts = next(s for s in DIFFLAB_SAMPLERS if s[0] == label)
    den = dl.load(str(work / "difflab"))
    res = dl.sample(den, n=n, sampler=name, steps=steps, seed=seed, batch_size=a.sample_batch,
                    progress=not a.no_progress, **opts)
    return res.x, res.nfe


def _sample_diffusers(a, work: Path, label: str, n: int, seed: int):
    import diffusers
    import torch
    from diffusers import UNet2DModel
    from tqdm.auto import tqdm
    _, cls, steps, opts = next(s for s in DIFFUSERS_SAMPLERS if s[0] == label)
    unet = UNet2DModel.from_pretrained(work / "diffusers" / "unet").eval()
    base = diffusers.DDPMScheduler.from_pretrained(work / "diffusers" / "scheduler")
    sched = getattr(diffusers, cls).from_config(base.config, **opts)
    out = []
    bar = None if a.no_progress else tqdm(total=n * steps, desc=f"diffusers {label}", unit="img-step")
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


def phase_sample(a, work: Path, side: str, label: str, seed: int | None = None) -> dict:
    import numpy as np

    from difflab.data import to_uint8
    n = a.ddpm_n if label.startswith("ddpm") else a.n
    t0 = time.perf_counter()
    x, nfe = (_sample_difflab if side == "difflab" else _sample_diffusers)(a, work, label, n,
                                                                          a.seed if seed is None else seed)
    seconds = time.perf_counter() - t0
    tag = "" if seed is None else f"_seed{seed}"
    np.savez_compressed(work / f"samples_{side}_{label}{tag}.npz", samples=to_uint8(x))
    return {"n": n, "nfe": nfe, "seconds": seconds, "s_per_image": seconds / n}


def phase_classifier(a, work: Path) -> dict:
    import difflab as dl
    from difflab.metrics import save_classifier, train_classifier
    data = dl.load_dataset("mnist", a.data_dir, "0:8000")
    net = train_classifier(data.x, data.labels, steps=1500, seed=0, progress=not a.no_progress)
    save_classifier(net, work / "classifier", {"data": "mnist", "range": "0:8000", "steps": 1500})
    return {"classifier": str(work / "classifier")}


def _eval_inputs(a, work: Path):
    """The extractor, the training images (for the floor) and the held-out reference images."""
    import difflab as dl
    from difflab.metrics import load_classifier
    return (load_classifier(a.classifier or work / "classifier"), dl.load_dataset("mnist", a.data_dir, "0:8000").x,
            dl.load_dataset("mnist", a.data_dir, "8000:10000").x)


def phase_eval(a, work: Path) -> dict:
    import numpy as np
    import torch

    from difflab.metrics.evaluate import evaluate_samples
    clf, train, ref = _eval_inputs(a, work)
    res = {}
    for side, table in (("difflab", DIFFLAB_SAMPLERS), ("diffusers", DIFFUSERS_SAMPLERS)):
        for label, *_ in table:
            x = torch.from_numpy(np.load(work / f"samples_{side}_{label}.npz")["samples"])
            r = evaluate_samples(x, train, ref, clf, min_samples=min(a.n, a.ddpm_n))
            res[f"{side}/{label}"] = {k: v for k, v in r.items() if k != "class_histogram"}
    return res


def phase_eval_seeds(a, work: Path) -> dict:
    """FD of each side's best <= 50 NFE sampler for the sampling seeds ``--seed`` + ``--extra-seeds``."""
    import numpy as np
    import torch

    from difflab.metrics.evaluate import evaluate_samples
    clf, train, ref = _eval_inputs(a, work)
    res = {}
    for side, label in best_samplers(work).items():
        runs = {}
        for seed in [a.seed] + extra_seeds(a):
            tag = "" if seed == a.seed else f"_seed{seed}"
            x = torch.from_numpy(np.load(work / f"samples_{side}_{label}{tag}.npz")["samples"])
            runs[str(seed)] = evaluate_samples(x, train, ref, clf, min_samples=a.n)["fd_samples"]
        res[side] = {"sampler": label, "fd": runs}
    return res


def extra_seeds(a) -> list[int]:
    return [int(v) for v in a.extra_seeds.split(",") if v.strip()] if a.extra_seeds else []


def best_samplers(work: Path) -> dict[str, str]:
    """Each side's sampler with the lowest FD at <= 50 NFE (seed ``--seed``), from ``WORK/eval.json``."""
    ev = json.loads((work / "eval.json").read_text())
    best = {}
    for side, table in (("difflab", DIFFLAB_SAMPLERS), ("diffusers", DIFFUSERS_SAMPLERS)):
        cands = [s[0] for s in table if s[2] <= 50]
        best[side] = min(cands, key=lambda lab: ev[f"{side}/{lab}"]["fd_samples"])
    return best


# -- orchestration ---------------------------------------------------------------------------------
def phases(a) -> list[str]:
    out = ["train_difflab", "train_diffusers"]
    out += [f"sample:difflab:{s[0]}" for s in DIFFLAB_SAMPLERS]
    out += [f"sample:diffusers:{s[0]}" for s in DIFFUSERS_SAMPLERS]
    if not a.classifier:
        out.append("classifier")
    return out + ["eval"]


def seed_phases(a, work: Path) -> list[str]:
    """After ``eval``: the best samplers again with the extra sampling seeds, and their FD."""
    if not extra_seeds(a):
        return []
    best = best_samplers(work)
    return [f"sample:{side}:{best[side]}:{s}" for side in best for s in extra_seeds(a)] + ["eval_seeds"]


def run_phase(a, work: Path, name: str) -> dict:
    if name.startswith("sample:"):
        _, side, label, *seed = name.split(":")
        res = phase_sample(a, work, side, label, int(seed[0]) if seed else None)
    else:
        res = globals()[f"phase_{name}"](a, work)
    res["peak_rss_mb"] = peak_rss_mb()
    return res


def summarise(a, work: Path) -> dict:
    r = {p: json.loads((work / f"{p.replace(':', '_')}.json").read_text()) for p in phases(a)}
    r.update({p: json.loads((work / f"{p.replace(':', '_')}.json").read_text()) for p in seed_phases(a, work)})
    ev = r["eval"]
    best = best_samplers(work)
    lines = ["| | difflab | diffusers recipe | difflab / diffusers |", "|---|---|---|---|"]

    def row(label, a_, b_, fmt="{:.3g}"):
        ratio = "" if not b_ or math.isnan(b_) else f"{a_ / b_:.2f}"
        lines.append(f"| {label} | {fmt.format(a_)} | {fmt.format(b_)} | {ratio} |")

    td, tf = r["train_difflab"], r["train_diffusers"]
    row("parameters", td["params"], tf["params"], "{:,}")
    row("training steps in budget", td["steps"], tf["steps"], "{:d}")
    row("training it/s", td["it_per_s"], tf["it_per_s"])
    row("training peak RSS (MB)", td["peak_rss_mb"], tf["peak_rss_mb"], "{:.0f}")
    na = {"fd_samples": math.nan, "kid_samples": math.nan, "precision_samples": math.nan, "recall_samples": math.nan,
          "n": 0, "s_per_image": math.nan, "peak_rss_mb": math.nan}
    for label in [s[0] for s in DIFFLAB_SAMPLERS]:
        ed, ef = ev[f"difflab/{label}"], ev.get(f"diffusers/{label}", na)
        sd, sf = r[f"sample:difflab:{label}"], r.get(f"sample:diffusers:{label}", na)
        tag = f"{label} (n={ed['n']})"
        row(f"FD {tag}", ed["fd_samples"], ef["fd_samples"], "{:.2f}")
        row(f"KID {tag}", ed["kid_samples"], ef["kid_samples"], "{:.2f}")
        row(f"precision {tag}", ed["precision_samples"], ef["precision_samples"], "{:.3f}")
        row(f"recall {tag}", ed["recall_samples"], ef["recall_samples"], "{:.3f}")
        row(f"sampling s/image {label}", sd["s_per_image"], sf["s_per_image"], "{:.4f}")
        row(f"sampling peak RSS (MB) {label}", sd["peak_rss_mb"], sf["peak_rss_mb"], "{:.0f}")
    fd_d, fd_f = ev[f"difflab/{best['difflab']}"]["fd_samples"], ev[f"diffusers/{best['diffusers']}"]["fd_samples"]
    floor = ev[f"difflab/{best['difflab']}"]["fd_floor"]
    lines.append("")
    lines.append(f"best <= 50 NFE: difflab {best['difflab']} FD {fd_d:.2f}, diffusers {best['diffusers']} FD "
                 f"{fd_f:.2f}; ratio {fd_d / fd_f:.3f} (target <= 0.5: {'met' if fd_d <= 0.5 * fd_f else 'NOT met'}); "
                 f"real-vs-real floor at n={a.n}: {floor:.2f}")
    summary = {"phases": r, "best": best, "fd_ratio": fd_d / fd_f, "target_met": fd_d <= 0.5 * fd_f}
    if "eval_seeds" in r:
        import statistics
        fds = {side: list(r["eval_seeds"][side]["fd"].values()) for side in best}
        ratios = [d / f for d, f in zip(fds["difflab"], fds["diffusers"])]
        m_d, m_f = statistics.mean(fds["difflab"]), statistics.mean(fds["diffusers"])
        lines.append(f"over sampling seeds {[a.seed] + extra_seeds(a)}: difflab FD {m_d:.2f} +- "
                     f"{statistics.stdev(fds['difflab']):.2f}, diffusers FD {m_f:.2f} +- {statistics.stdev(fds['diffusers']):.2f}; "
                     f"ratio of means {m_d / m_f:.3f}, per-seed ratios {', '.join(f'{q:.3f}' for q in ratios)} "
                     f"(target <= 0.5 on the mean: {'met' if m_d <= 0.5 * m_f else 'NOT met'})")
        summary.update(fd_seeds=fds, fd_ratio_of_means=m_d / m_f, target_met_on_mean=m_d <= 0.5 * m_f)
    summary["markdown"] = "\n".join(lines)
    (work / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="runs/mnist_budget", help="folder for runs, samples and per-phase results")
    ap.add_argument("--data-dir", default=str(DEFAULT_DATA))
    ap.add_argument("--minutes", type=float, default=10.0, help="training budget of each contestant")
    ap.add_argument("--n", type=int, default=1000, help="samples per <= 50 NFE sampler")
    ap.add_argument("--ddpm-n", type=int, default=1000, help="samples for the 1000-step DDPM rows")
    ap.add_argument("--sample-batch", type=int, default=250)
    ap.add_argument("--classifier", help="a difflab train-classifier folder (default: train one in WORK)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--extra-seeds", default="1,2",
                    help="more sampling seeds for each side's best sampler (FD mean and std); '' for none")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--phase", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    if a.phase:  # child process
        res = run_phase(a, work, a.phase)
        (work / f"{a.phase.replace(':', '_')}.json").write_text(json.dumps(res, indent=1))
        return 0
    (work / "args.json").write_text(json.dumps(vars(a), indent=1))
    for group in (lambda: phases(a), lambda: seed_phases(a, work)):  # the seed phases need eval.json
        for name in group():
            if (work / f"{name.replace(':', '_')}.json").is_file():
                print(f"[done] {name}", flush=True)
                continue
            print(f"[run ] {name}", flush=True)
            t0 = time.perf_counter()
            child = [sys.executable, __file__, "--phase", name] + [x for x in (argv or sys.argv[1:])]
            if subprocess.call(child) != 0:
                print(f"phase {name} failed; rerun the same command to continue", file=sys.stderr)
                return 1
            print(f"[ok  ] {name} in {time.perf_counter() - t0:.0f}s", flush=True)
    print(summarise(a, work)["markdown"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
