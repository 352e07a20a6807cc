"""The ``difflab`` command: train | sample | eval | likelihood | sweep | train-classifier | export | forward | schedules | samplers | demo.

User errors print one line ``difflab: error: ...`` and exit with status 2; Ctrl-C during training
saves a resumable checkpoint and exits with status 130.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from .errors import DifflabError

DEFAULT_SCHEDULES = "linear,cosine,sigmoid,scaled_linear"


def _ints(s: str) -> list[int]:
    try:
        return [int(v) for v in s.split(",") if v.strip()]
    except ValueError:
        raise DifflabError(f"expected comma-separated integers, got {s!r}") from None


def _floats(s: str) -> list[float]:
    try:
        return [float(v) for v in s.split(",") if v.strip()]
    except ValueError:
        raise DifflabError(f"expected comma-separated numbers, got {s!r}") from None


def default_network(shape: Sequence[int]) -> dict:
    """A UNet sized for a 2-core CPU: 2 levels for <= 16 px, 3 levels above."""
    c, h, w = shape
    if max(h, w) <= 16:
        return dict(in_channels=c, channels=[32, 64], layers_per_block=2, attention_levels=[1])
    return dict(in_channels=c, channels=[16, 32, 64], layers_per_block=1, attention_levels=[2])


def _betas(text: str) -> tuple[float, float]:
    """``--adam-betas 0.9,0.99`` -> (0.9, 0.99); TrainConfig checks the range."""
    try:
        b1, b2 = (float(v) for v in text.split(","))
    except ValueError:
        raise DifflabError(f"--adam-betas: expected two numbers B1,B2, got {text!r}") from None
    return b1, b2


def _schedule_from_args(args: argparse.Namespace):
    from .process import get_schedule
    T = args.timesteps if args.timesteps > 0 else None
    return get_schedule(args.schedule, T=T, zero_terminal_snr=args.zero_terminal_snr)


def _load_data(args: argparse.Namespace):
    from .data import load_dataset
    kw = {}
    if args.data == "folder":
        kw = {"channels": args.channels_in, "size": args.image_size}
    return load_dataset(args.data, args.data_dir, args.index_range, **kw)


# -- train -------------------------------------------------------------------------------------
def cmd_train(args: argparse.Namespace) -> int:
    import torch

    from .denoisers import Denoiser
    from .nn import UNet
    from .train import TrainConfig, load_checkpoint, train

    data = _load_data(args)
    print(f"data: {data.name}, {len(data)} images of shape {data.shape}")
    if args.resume:
        ck = load_checkpoint(args.out)
        den = ck.denoiser("model")
        den.train()
    else:
        if args.minutes is None and args.steps is None:
            raise DifflabError("give a training budget: --steps N or --minutes M")
        net_cfg = default_network(data.shape)
        if args.channels:
            net_cfg["channels"] = _ints(args.channels)
        if args.layers_per_block:
            net_cfg["layers_per_block"] = args.layers_per_block
        if args.attention_levels is not None:
            net_cfg["attention_levels"] = _ints(args.attention_levels)
        net_cfg["dropout"] = args.dropout
        torch.manual_seed(args.seed)
        net = UNet(**net_cfg)
        net.check_input(data.shape)
        den = Denoiser(net, _schedule_from_args(args), args.prediction,
                       clip_x0=None if args.clip_x0 <= 0 else args.clip_x0)
    n_params = sum(p.numel() for p in den.net.parameters())
    print(f"model: UNet {den.net.config['channels']}, {n_params / 1e6:.2f}M parameters; "
          f"schedule {den.schedule!r}; prediction {den.prediction}")
    cfg = TrainConfig(steps=args.steps, minutes=args.minutes, batch_size=args.batch_size, lr=args.lr,
                      weight_decay=args.weight_decay,
                      adam_betas=_betas(args.adam_betas) if args.adam_betas else TrainConfig.adam_betas,
                      warmup=args.warmup, lr_schedule=args.lr_schedule,
                      grad_clip=args.grad_clip, ema_decay=args.ema_decay, weighting=args.weighting, bf16=args.bf16,
                      seed=args.seed,
                      sample_every=args.sample_every, ckpt_every_minutes=args.ckpt_every_minutes,
                      progress=not args.no_progress)
    res = train(den, data, args.out, cfg, resume=args.resume)
    print(json.dumps({"step": res.step, "seconds": round(res.seconds, 1), "it_per_s": round(res.it_per_s, 3),
                      "final_loss": round(res.final_loss, 5), "checkpoint": str(res.checkpoint)}))
    return 130 if res.interrupted else 0


# -- sample ------------------------------------------------------------------------------------
def cmd_sample(args: argparse.Namespace) -> int:
    import numpy as np

    from .data import to_uint8
    from .sampling import sample
    from .train import load_checkpoint
    from .viz import save_grid, trajectory_figure

    if args.pretrained:
        from .interop import load_pretrained
        den = load_pretrained(args.pretrained)
        print(f"pretrained: {den.info['source']} ({den.info['scheduler']}, prediction {den.prediction}, "
              f"{sum(p.numel() for p in den.net.parameters()) / 1e6:.1f}M parameters)")
    elif args.checkpoint:
        den = load_checkpoint(args.checkpoint).denoiser(args.weights)
    else:
        raise DifflabError("give a checkpoint (run folder, checkpoint folder or file) or --pretrained PATH")
    opts = _parse_opts(args.opt)
    if args.eta is not None:
        opts["eta"] = args.eta
    traj_steps = None
    if args.trajectory:
        k = args.trajectory_points
        traj_steps = sorted({round(i * (args.steps - 1) / (k - 1)) for i in range(k)})
    res = sample(den, n=args.n, sampler=args.sampler, steps=args.steps, grid=args.grid,
                 sigma_max=args.sigma_max, seed=args.seed,
                 batch_size=args.batch_size, progress=not args.no_progress, trajectory=traj_steps, **opts)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = f"{args.sampler}_{args.steps}_seed{args.seed}"
    grid = save_grid(res.x, out / f"{tag}.png")
    arr = to_uint8(res.x)
    np.savez_compressed(out / f"{tag}.npz", samples=arr)
    if args.save_images:
        from PIL import Image
        folder = out / f"{tag}_images"
        folder.mkdir(exist_ok=True)
        for i, a in enumerate(arr):
            Image.fromarray(a[0] if a.shape[0] == 1 else a.transpose(1, 2, 0)).save(folder / f"{i:06d}.png")
        print(f"{len(arr)} images in {folder} (for pytorch-fid, clean-fid, torch-fidelity)")
    print(f"{args.n} samples, {res.nfe} NFE each, {res.seconds:.1f}s "
          f"({res.seconds / args.n * 1000:.1f} ms/image): {grid}, {out / (tag + '.npz')}")
    if args.trajectory:
        p = trajectory_figure(res.trajectory, out / f"{tag}_trajectory.png")
        print(f"trajectory: {p}")
    return 0


def _parse_opts(items: list[str] | None) -> dict:
    """``["s_churn=40", "order=3"]`` -> sampler options (numbers and booleans converted)."""
    opts: dict = {}
    for item in items or []:
        if "=" not in item:
            raise DifflabError(f"sampler option must look like NAME=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        if v.lower() in ("true", "false"):
            opts[k] = v.lower() == "true"
            continue
        try:
            opts[k] = int(v)
        except ValueError:
            try:
                opts[k] = float(v)
            except ValueError:
                opts[k] = v
    return opts


def cmd_train_classifier(args: argparse.Namespace) -> int:
    from .metrics import save_classifier, train_classifier
    data = _load_data(args)
    if data.labels is None:
        raise DifflabError(f"data set {data.name} has no labels; a classifier needs them")
    net = train_classifier(data.x, data.labels, steps=args.steps, batch_size=args.batch_size, seed=args.seed,
                           progress=not args.no_progress)
    out = save_classifier(net, args.out, {"data": data.name, **data.info, "steps": args.steps})
    print(f"classifier saved to {out}")
    return 0


def _eval_model(args: argparse.Namespace):
    if args.inception is not None and args.classifier:
        raise DifflabError("give either --classifier or --inception, not both")
    if args.inception is not None:
        from .metrics.inception import load_inception
        return load_inception(args.inception or None)
    if args.classifier:
        from .metrics import load_classifier
        return load_classifier(args.classifier)
    raise DifflabError("choose the features: --classifier DIR (difflab train-classifier) or --inception [WEIGHTS]")


def _read_samples(path: Path):
    import numpy as np
    import torch
    if not path.is_file():
        raise DifflabError(f"samples file not found: {path}")
    try:
        return torch.from_numpy(np.load(path)["samples"])
    except Exception as e:
        raise DifflabError(f"{path} is not a difflab samples .npz (key 'samples'): {e}") from None


def cmd_eval(args: argparse.Namespace) -> int:
    from .data import load_dataset
    from .metrics.evaluate import aggregate, evaluate_samples, format_table, save_json

    if bool(args.samples) == bool(args.checkpoint):
        raise DifflabError("give sample files (.npz from difflab sample) or --checkpoint RUN to sample from, not both")
    train = load_dataset(args.data, args.data_dir, args.train_range)
    ref = load_dataset(args.data, args.data_dir, args.ref_range)
    model = _eval_model(args)
    seeds = _ints(args.seeds)
    sets = []  # (label, samples, seed for the floor subset)
    if args.checkpoint:
        from .sampling import sample
        from .train import load_checkpoint
        den = load_checkpoint(args.checkpoint).denoiser(args.weights)
        for seed in seeds:
            res = sample(den, n=args.n, sampler=args.sampler, steps=args.steps, grid=args.grid, seed=seed,
                         batch_size=args.batch_size, progress=not args.no_progress, **_parse_opts(args.opt))
            sets.append((f"{args.sampler}-{args.steps} seed {seed}", res.x.clamp(-1, 1), seed))
    else:
        sets = [(str(p), _read_samples(Path(p)), i) for i, p in enumerate(args.samples)]
    results = []
    for label, x, seed in sets:
        if tuple(x.shape[1:]) != train.shape:
            raise DifflabError(f"{label}: samples have shape {tuple(x.shape[1:])}, the data {train.shape}")
        r = evaluate_samples(x, train.x, ref.x, model, min_samples=args.min_samples, seed=seed,
                             progress=not args.no_progress)
        r["label"] = label
        results.append(r)
    res = aggregate(results)
    print(format_table(res))
    if args.out:
        save_json(res, args.out)
        print(f"results: {args.out}")
    return 0


def cmd_likelihood(args: argparse.Namespace) -> int:
    import math

    import torch

    from .data import load_dataset, to_uint8
    from .train import load_checkpoint
    if args.n < 2:
        raise DifflabError(f"--n must be at least 2, got {args.n}")
    den = load_checkpoint(args.checkpoint).denoiser(args.weights)
    rng = args.index_range or ("8000:10000" if args.data == "mnist" else None)
    data = load_dataset(args.data, args.data_dir, rng)
    x8 = torch.from_numpy(to_uint8(data.x[: args.n]))
    if args.method == "elbo":
        from .metrics.elbo import ddpm_elbo
        r = ddpm_elbo(den, x8, variance=args.variance, n_t=args.n_t, seed=args.seed, batch_size=args.batch_size,
                      progress=not args.no_progress)
        bpd = r.bpd
        per = {"prior": r.prior.mean().item(), "diffusion": r.diffusion.mean().item(),
               "decoder": r.decoder.mean().item()}
        what = f"DDPM ELBO ({args.variance} variance, {'all' if args.n_t is None else args.n_t} t terms)"
    else:
        from .metrics import bits_per_dim
        bpd = bits_per_dim(den, x8, seed=args.seed)
        per, what = {}, "probability-flow ODE, uniform dequantisation"
    mean, se = bpd.mean().item(), bpd.std().item() / math.sqrt(len(bpd))
    print(f"{what}: {mean:.4f} +- {se:.4f} bits/dim (mean +- standard error over {len(bpd)} images of "
          f"{data.name} {rng or ''})")
    if per:
        print("nats per image: " + ", ".join(f"{k} {v:.2f}" for k, v in per.items()))
    if args.out:
        Path(args.out).write_text(json.dumps({"method": what, "bpd_mean": mean, "bpd_se": se,
                                              "bpd": bpd.tolist(), "terms_nats": per}, indent=1))
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from .experiments import run_sweep, write_report
    if args.report_only:
        if not args.out:
            raise DifflabError("--report-only needs --out (the sweep folder)")
        rep = write_report(args.out)
    else:
        rep = run_sweep(args.config, args.out, progress=not args.no_progress) / "report"
    print(f"report: {rep / 'report.md'} and {rep / 'report.html'}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .interop import export_diffusers
    from .train import load_checkpoint
    ck = load_checkpoint(args.checkpoint)
    out = export_diffusers(ck.denoiser(args.weights), args.diffusers)
    print(f"diffusers DDPMPipeline written to {out} (load with DDPMPipeline.from_pretrained({str(out)!r}))")
    return 0


# -- figures -----------------------------------------------------------------------------------
def _schedules(names: str, T: int) -> dict:
    """Named schedules; VP ones as T-step tables when T > 0 (VE ones are always continuous)."""
    from .process import SCHEDULES, get_schedule
    out = {}
    for n in (v.strip() for v in names.split(",")):
        if n:
            vp = n not in SCHEDULES or SCHEDULES[n].variance_preserving
            out[n] = get_schedule(n, T=T if T > 0 and vp else None)
    return out


def cmd_forward(args: argparse.Namespace) -> int:
    import torch

    from .viz import forward_figure

    if args.image:
        from .data import load_image_files
        x0 = load_image_files([Path(args.image)], size=args.image_size).x
    else:
        data = _load_data(args)
        g = torch.Generator().manual_seed(args.seed)
        x0 = data.x[torch.randperm(len(data), generator=g)[: args.n]]
    p = forward_figure(x0, _schedules(args.schedules, args.timesteps), _floats(args.ts), args.out, seed=args.seed)
    print(f"forward process: {p}")
    return 0


def cmd_schedules(args: argparse.Namespace) -> int:
    from .viz import plot_schedules
    p = plot_schedules(_schedules(args.schedules, args.timesteps), args.out)
    print(f"schedule plot: {p}")
    return 0


def cmd_samplers(args: argparse.Namespace) -> int:
    from .sampling import SAMPLERS
    from .sampling.api import sampler_options
    print(f"{'name':<16}{'order':>5}{'NFE/step':>9}  {'kind':<14}summary; options")
    for name, info in sorted(SAMPLERS.items()):
        kind = "stochastic" if info.stochastic else "deterministic"
        nfe = "adapt." if name == "ode" else str(info.nfe_per_step)
        print(f"{name:<16}{info.order:>5}{nfe:>9}  {kind:<14}{info.summary}; "
              f"--opt {', '.join(sampler_options(name)) or '-'}")
    return 0


# -- demo --------------------------------------------------------------------------------------
def cmd_demo(args: argparse.Namespace) -> int:
    """Everything on scikit-learn's 8x8 digits: schedules, forward process, training, sampling."""
    import torch

    from .data import load_digits
    from .denoisers import Denoiser
    from .nn import UNet
    from .process import get_schedule
    from .sampling import sample
    from .train import train
    from .viz import forward_figure, plot_schedules, save_grid, trajectory_figure

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = load_digits()
    print(f"[1/5] data: scikit-learn digits, {len(data)} real 8x8 images")
    save_grid(data.x[:64], out / "data.png")
    print(f"[2/5] schedules: {plot_schedules(_schedules(DEFAULT_SCHEDULES, 1000), out / 'schedules.png')}")
    p = forward_figure(data.x[:3], _schedules("linear,cosine", 1000), [0, 0.1, 0.25, 0.5, 0.75, 1.0],
                       out / "forward.png")
    print(f"[3/5] forward process: {p}")
    torch.manual_seed(args.seed)
    net = UNet(**default_network(data.shape))
    den = Denoiser(net, get_schedule("cosine", T=1000), "v", clip_x0=1.0)
    print(f"[4/5] training a {sum(p.numel() for p in net.parameters()) / 1e6:.2f}M-parameter UNet "
          f"for {args.minutes} min")
    run = train(den, data, out / "run", minutes=args.minutes, seed=args.seed, sample_every=500,
                progress=not args.no_progress)
    res = sample(run.ema, n=64, sampler="ddim", steps=50, seed=args.seed, progress=not args.no_progress,
                 trajectory=[0, 5, 10, 20, 30, 40, 45, 49])
    save_grid(res.x, out / "samples_ddim50.png")
    trajectory_figure(res.trajectory, out / "trajectory.png")
    res2 = sample(run.ema, n=64, sampler="ddpm", steps=1000, seed=args.seed, progress=not args.no_progress)
    save_grid(res2.x, out / "samples_ddpm1000.png")
    print(f"[5/5] {run.step} steps at {run.it_per_s:.1f} it/s; samples: {out / 'samples_ddim50.png'}, "
          f"{out / 'samples_ddpm1000.png'}; reverse trajectory: {out / 'trajectory.png'}")
    return 0


# -- parser ------------------------------------------------------------------------------------
def _add_data_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--data", choices=["mnist", "folder", "digits"], required=required, default=None if required else "digits",
                   help="mnist (IDX folder), folder (PNG/JPEG images) or digits (scikit-learn 8x8)")
    p.add_argument("--data-dir", help="folder of the data set")
    p.add_argument("--index-range", help="START:STOP of the images to use (mnist default 0:8000)")
    p.add_argument("--image-size", type=int, help="resize folder images to this size")
    p.add_argument("--channels-in", type=int, choices=[1, 3], help="folder images: 1 grey, 3 RGB")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="difflab", description="Diffusion models: train, sample, see, measure.")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a diffusion model")
    _add_data_args(p)
    p.add_argument("--out", required=True, help="run folder (checkpoints, logs, sample grids)")
    p.add_argument("--steps", type=int, help="total optimisation steps")
    p.add_argument("--minutes", type=float, help="wall-clock budget in minutes")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    p.add_argument("--schedule", default="cosine", help="cosine, linear, sigmoid, scaled_linear, edm, ve")
    p.add_argument("--timesteps", type=int, default=1000, help="T of the discrete table; 0: continuous time")
    p.add_argument("--zero-terminal-snr", action="store_true", help="rescale to zero terminal SNR (use v)")
    p.add_argument("--prediction", default="v", help="v, eps, x0, score or edm")
    p.add_argument("--weighting", default="min_snr", help="min_snr (gamma 5), uniform, snr or edm")
    p.add_argument("--clip-x0", type=float, default=1.0, help="clamp x0_hat to [-c, c] when sampling; 0: off")
    p.add_argument("--channels", help="UNet widths per level, e.g. 32,64,64")
    p.add_argument("--layers-per-block", type=int)
    p.add_argument("--attention-levels", help="levels with self-attention, e.g. 2")
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--adam-betas", metavar="B1,B2", help="AdamW betas (default 0.9,0.999)")
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--lr-schedule", default="constant",
                   help="after warm-up: constant, or cosine (decay to 0 over the steps/minutes budget)")
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--ema-decay", type=float, default=0.999)
    p.add_argument("--bf16", action="store_true", help="bf16 autocast for the network")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sample-every", type=int, default=1000, help="steps between sample grids (0: end only)")
    p.add_argument("--ckpt-every-minutes", type=float, default=5.0)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(fn=cmd_train)

    p = sub.add_parser("sample", help="sample from a checkpoint")
    p.add_argument("checkpoint", nargs="?", help="run folder (latest checkpoint) or checkpoint folder/file")
    p.add_argument("--pretrained", help="a diffusers pipeline folder, or a repo id in the local Hugging Face cache")
    p.add_argument("--sampler", default="ddim")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--grid", default="default", help="time grid: default, uniform, logsnr, karras, leading, trailing, linspace")
    p.add_argument("--sigma-max", type=float, help="start the uniform/logsnr/karras grid at sigma/alpha = this "
                   "(80 suits heun)")
    p.add_argument("--eta", type=float, help="noise of ddim / euler_ancestral (0..1)")
    p.add_argument("--opt", action="append", metavar="NAME=VALUE",
                   help="sampler option, repeatable: s_churn=40 (euler/heun), order=3 (unipc), snr=0.16 (pc), "
                        "rtol=1e-4 (ode), variance=fixed_large (ddpm)")
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--weights", choices=["ema", "model"], default="ema")
    p.add_argument("--out", default="samples")
    p.add_argument("--save-images", action="store_true", help="also write every sample as a PNG file")
    p.add_argument("--trajectory", action="store_true", help="also draw x_t and x0_hat along the reverse chain")
    p.add_argument("--trajectory-points", type=int, default=8)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(fn=cmd_sample)

    p = sub.add_parser("train-classifier", help="train the small CNN used as feature extractor for evaluation")
    _add_data_args(p)
    p.add_argument("--out", required=True, help="folder for classifier.json + classifier.safetensors")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(fn=cmd_train_classifier)

    p = sub.add_parser("eval", help="score samples (.npz files, or drawn from --checkpoint per seed) against held-out data")
    p.add_argument("samples", nargs="*", help=".npz files written by difflab sample (several: mean +- std)")
    _add_data_args(p)
    p.add_argument("--train-range", default="0:8000", help="training images (floor, memorisation)")
    p.add_argument("--ref-range", default="8000:10000", help="held-out reference images")
    p.add_argument("--classifier", help="features and class probabilities of a difflab train-classifier folder")
    p.add_argument("--inception", nargs="?", const="", metavar="WEIGHTS",
                   help="the FID Inception-v3 (pt_inception-2015-12-05-6726825d.pth; found in the torch hub "
                        "cache or $DIFFLAB_INCEPTION when no path is given)")
    p.add_argument("--checkpoint", help="sample from this run instead of reading files")
    p.add_argument("--sampler", default="dpmpp_2m")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--grid", default="default")
    p.add_argument("--opt", action="append", metavar="NAME=VALUE", help="sampler option, repeatable")
    p.add_argument("--n", type=int, default=1000, help="samples per seed")
    p.add_argument("--seeds", default="0", help="comma-separated seeds, one sample set each")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--weights", choices=["ema", "model"], default="ema")
    p.add_argument("--min-samples", type=int, default=1000, help="warn below this many samples")
    p.add_argument("--out", help="write the results as JSON here")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(fn=cmd_eval)

    p = sub.add_parser("likelihood", help="bits/dim of held-out images: DDPM ELBO or probability-flow ODE")
    p.add_argument("checkpoint", help="run folder or checkpoint")
    _add_data_args(p)
    p.add_argument("--n", type=int, default=100, help="images (from the start of --range, default 8000:10000)")
    p.add_argument("--method", choices=["elbo", "ode"], default="elbo")
    p.add_argument("--variance", choices=["fixed_small", "fixed_large"], default="fixed_large",
                   help="reverse-step variance of the ELBO: beta_tilde or beta")
    p.add_argument("--n-t", type=int, help="estimate the ELBO's T-1 KL terms from this many random t")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--weights", choices=["ema", "model"], default="ema")
    p.add_argument("--out", help="write the results as JSON here")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(fn=cmd_likelihood)

    p = sub.add_parser("sweep", help="train and evaluate a grid of schedules / parameterisations / weightings")
    p.add_argument("config", help="sweep config (.yaml or .toml), e.g. sweeps/schedules-toy2d.yaml")
    p.add_argument("--out", help="output folder (default sweeps_out/NAME); rerun to continue a killed sweep")
    p.add_argument("--report-only", action="store_true", help="only rewrite the report of finished variants")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(fn=cmd_sweep)

    p = sub.add_parser("export", help="write a checkpoint in another format")
    p.add_argument("checkpoint", help="run folder or checkpoint")
    p.add_argument("--diffusers", required=True, metavar="DIR", help="write a DDPMPipeline folder here")
    p.add_argument("--weights", choices=["ema", "model"], default="ema")
    p.set_defaults(fn=cmd_export)

    p = sub.add_parser("forward", help="draw x_t at chosen t under one or several schedules")
    _add_data_args(p, required=False)
    p.add_argument("--image", help="an image file instead of a data set")
    p.add_argument("--n", type=int, default=2, help="images taken from the data set")
    p.add_argument("--schedules", default="linear,cosine")
    p.add_argument("--timesteps", type=int, default=1000, help="T of the tables; 0: continuous")
    p.add_argument("--ts", default="0,0.1,0.2,0.3,0.5,0.7,0.9,1", help="times to show")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="forward.png")
    p.set_defaults(fn=cmd_forward)

    p = sub.add_parser("schedules", help="plot alpha_bar(t) and log-SNR(t) of schedules")
    p.add_argument("--schedules", default=DEFAULT_SCHEDULES + ",edm")
    p.add_argument("--timesteps", type=int, default=0, help="T of the tables; 0: continuous")
    p.add_argument("--out", default="schedules.png")
    p.set_defaults(fn=cmd_schedules)

    p = sub.add_parser("samplers", help="list the samplers")
    p.set_defaults(fn=cmd_samplers)

    p = sub.add_parser("demo", help="the whole path on scikit-learn digits in a few minutes")
    p.add_argument("--out", default="demo_out")
    p.add_argument("--minutes", type=float, default=2.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(fn=cmd_demo)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.fn(args) or 0)
    except DifflabError as e:
        print(f"difflab: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("difflab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
