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
    p.add_argument("--sampler", default="ddim")
    p.add_argument("--steps", type=int, default=50)
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
    from ..data.audio import real_time_factor
    from ..encoders import checkpoint_encoder
    from ..generators import sample_decoded
    from ..outputs import save_samples
    from ..train import load_checkpoint
    from ..viz import trajectory_figure

    den = load_denoiser(args)
    # a model trained on encoded data (log-mel spectrograms) decodes its samples (to audio)
    encoder = checkpoint_encoder(load_checkpoint(args.checkpoint).config) if args.checkpoint else None
    opts = parse_opts(args.opt)
    if args.eta is not None:
        opts["eta"] = args.eta
    traj_steps = None
    if args.trajectory:
        k = args.trajectory_points
        traj_steps = sorted({round(i * (args.steps - 1) / (k - 1)) for i in range(k)})
    res, x, seconds = sample_decoded(den, encoder, n=args.n, sampler=args.sampler, steps=args.steps, grid=args.grid,
                                     sigma_max=args.sigma_max, seed=args.seed, batch_size=args.batch_size,
                                     progress=not args.no_progress, trajectory=traj_steps, **opts)
    kind = den.data_kind if encoder is None else encoder.data_kind
    tag = f"{args.sampler}_{args.steps}_seed{args.seed}"
    files = save_samples(kind, x, args.out, tag, each=args.save_images or None)
    if "files" in files and kind != "audio":
        print(f"{args.n} files in {files['files']} (for pytorch-fid, clean-fid, torch-fidelity)")
    shown = ", ".join(str(files[k]) for k in ("preview", "arrays") if k in files)
    print(f"{args.n} samples, {res.nfe} NFE each, {seconds:.1f}s "
          f"({seconds / args.n * 1000:.1f} ms/sample): {shown}")
    if kind == "audio":
        print(f"real-time factor {real_time_factor(seconds, x):.3f} (seconds of compute per second of audio, "
              f"{'sampling and decoding' if encoder is not None else 'sampling'}); WAV files in {files['files']}")
    if args.trajectory:
        print(f"trajectory: {trajectory_figure(res.trajectory, f'{args.out}/{tag}_trajectory.png')}")
    return 0
