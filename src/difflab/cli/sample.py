"""``difflab sample``: draw samples from a checkpoint or a diffusers pipeline (:func:`difflab.sample`)."""
from __future__ import annotations

import argparse

from ..errors import DifflabError
from .common import add_progress_arg, parse_opts

NAME = "sample"
HELP = "sample from a checkpoint"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", nargs="?", help="run folder (latest checkpoint) or checkpoint folder/file")
    p.add_argument("--pretrained", help="a diffusers pipeline folder, or a repo id in the local Hugging Face cache")
    p.add_argument("--sampler", help="default: the sampler the checkpoint was made for (a distilled student), "
                                     "else ddim")
    p.add_argument("--steps", type=int, help="default: the checkpoint's (a distilled student), else 50")
    p.add_argument("--grid", default="default",
                   help="time grid: default, uniform, logsnr, karras, leading, trailing, linspace")
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
    add_progress_arg(p)


def load_denoiser(args: argparse.Namespace):
    """The denoiser of ``args.checkpoint`` or ``--pretrained``."""
    if args.pretrained:
        from ..interop import load_pretrained
        den = load_pretrained(args.pretrained)
        print(f"pretrained: {den.info['source']} ({den.info['scheduler']}, prediction {den.prediction}, "
              f"{sum(p.numel() for p in den.net.parameters()) / 1e6:.1f}M parameters)")
        return den
    if args.checkpoint:
        from ..train import load_checkpoint
        return load_checkpoint(args.checkpoint).denoiser(args.weights)
    raise DifflabError("give a checkpoint (run folder, checkpoint folder or file) or --pretrained PATH")


def run(args: argparse.Namespace) -> int:
    from ..outputs import save_samples
    from ..sampling import sample
    from ..viz import trajectory_figure

    den = load_denoiser(args)
    # without --sampler: the setting the checkpoint was made for (a distilled student's), else DDIM, 50 steps
    own = dict(getattr(den, "sampling", None) or {}) if args.sampler is None else {}
    setting = {"sampler": args.sampler or "ddim", "steps": 50, "grid": "default", **own}
    args.sampler = setting.pop("sampler")
    args.steps = args.steps or setting.pop("steps")
    args.grid = args.grid if args.grid != "default" else setting.pop("grid")
    opts = {**{k: v for k, v in setting.items() if k not in ("steps", "grid")}, **parse_opts(args.opt)}
    if args.eta is not None:
        opts["eta"] = args.eta
    traj_steps = None
    if args.trajectory:
        k = args.trajectory_points
        traj_steps = sorted({round(i * (args.steps - 1) / (k - 1)) for i in range(k)})
    res = sample(den, n=args.n, sampler=args.sampler, steps=args.steps, grid=args.grid,
                 sigma_max=args.sigma_max, seed=args.seed,
                 batch_size=args.batch_size, progress=not args.no_progress, trajectory=traj_steps, **opts)
    tag = f"{args.sampler}_{args.steps}_seed{args.seed}"
    files = save_samples(den.data_kind, res.x, args.out, tag, each=args.save_images)
    if "files" in files:
        print(f"{args.n} files in {files['files']} (for pytorch-fid, clean-fid, torch-fidelity)")
    shown = ", ".join(str(files[k]) for k in ("preview", "arrays") if k in files)
    print(f"{args.n} samples, {res.nfe} NFE each, {res.seconds:.1f}s "
          f"({res.seconds / args.n * 1000:.1f} ms/sample): {shown}")
    if args.trajectory:
        print(f"trajectory: {trajectory_figure(res.trajectory, f'{args.out}/{tag}_trajectory.png')}")
    return 0
