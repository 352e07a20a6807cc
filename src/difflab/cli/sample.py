"""``difflab sample``: draw samples from a checkpoint or a diffusers pipeline (:func:`difflab.sample`)."""
from __future__ import annotations

import argparse
import math

from ..errors import DifflabError
from .common import add_device_arg, add_progress_arg, floats, parse_opts, setup_device

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
    add_guidance_args(p)
    p.add_argument("--n", type=int, default=64, help="samples (with --class all: per class)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--weights", choices=["ema", "model"], default="ema")
    p.add_argument("--out", default="samples")
    p.add_argument("--save-images", action="store_true", help="also write every sample as a PNG file")
    p.add_argument("--trajectory", action="store_true", help="also draw x_t and x0_hat along the reverse chain")
    p.add_argument("--trajectory-points", type=int, default=8)
    add_device_arg(p)
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


def add_guidance_args(p: argparse.ArgumentParser) -> None:
    """Class and guidance options, shared by the commands that sample (sample, inpaint, img2img, superres)."""
    p.add_argument("--class", dest="class_", metavar="C",
                   help="class-conditional models: a class index or name, or 'all' (--n samples of each, a grid row "
                        "per class)")
    p.add_argument("--guidance", type=float, default=1.0,
                   help="guidance scale w: 1 = the model itself, 0 = unconditional (or the --autoguide model), "
                        ">1 guides (classifier-free guidance on a conditional model)")
    p.add_argument("--autoguide", metavar="CKPT", help="autoguidance: guide with this weaker model (e.g. an earlier "
                   "checkpoint of the same run); works for unconditional models")
    p.add_argument("--guidance-interval", metavar="LO,HI",
                   help="guide only where sigma/alpha lies in (LO, HI] (Kynkaanniemi et al. 2024)")
    p.add_argument("--guidance-rescale", type=float, default=0.0, help="CFG rescaling phi in [0, 1] (Lin et al. 2024)")
    p.add_argument("--guide-classifier", metavar="DIR",
                   help="classifier guidance with a noise-aware classifier (difflab train-classifier --noisy)")
    p.add_argument("--classifier-scale", type=float, default=1.0, help="scale of classifier guidance")
    p.add_argument("--classifier-interval", metavar="LO,HI",
                   help="classifier guidance only where sigma/alpha lies in (LO, HI], e.g. 0,80 to keep a learned "
                        "classifier's gradient off the near-pure-noise top of the schedule")
    p.add_argument("--clip-x0", type=float, metavar="C",
                   help="clip the (guided) x0 estimate to [-C, C] at every step (static thresholding; a model "
                        "saved with clip_x0 already clips its own estimate; inpaint/superres apply their "
                        "constraint after it)")
    p.add_argument("--x0-threshold", type=float, metavar="P",
                   help="dynamic thresholding of the (guided) x0 estimate at quantile P, e.g. 0.995 (Saharia et al. "
                        "2022)")
    p.add_argument("--x0-threshold-max", type=float, default=math.inf, metavar="M",
                   help="cap of the dynamic threshold's scale (default: none; 1 = clipping at 1)")


def interval_arg(text: str | None, flag: str) -> tuple[float, float] | None:
    """``LO,HI`` as a pair of floats (None if not given)."""
    if not text:
        return None
    lo_hi = floats(text)
    if len(lo_hi) != 2:
        raise DifflabError(f"{flag} takes LO,HI, got {text!r}")
    return lo_hi[0], lo_hi[1]


def guidance_from_args(den, args: argparse.Namespace, n: int):
    """(the denoiser with the requested guidance, the conditioning for n samples, the grid row length)."""
    from ..guidance import class_labels, guided_denoiser
    cond, nrow = None, None
    if args.class_ is not None:
        labels, nrow = class_labels(den, args.class_, n)
        cond = {"label": labels}
    elif args.guide_classifier:
        raise DifflabError("classifier guidance needs the class to guide towards: --class C")
    elif den.num_classes and (args.guidance != 1.0 or args.guidance_interval):
        raise DifflabError("classifier-free guidance needs the class to guide towards: --class C (or all)")
    autoguide = None
    if args.autoguide:
        from ..train import load_checkpoint
        autoguide = load_checkpoint(args.autoguide).denoiser("ema")
    interval = interval_arg(args.guidance_interval, "--guidance-interval")
    classifier_interval = interval_arg(getattr(args, "classifier_interval", None), "--classifier-interval")
    if classifier_interval is not None and not args.guide_classifier:
        raise DifflabError("--classifier-interval needs classifier guidance (--guide-classifier DIR)")
    classifier = None
    if args.guide_classifier:
        from ..metrics import load_classifier
        classifier = load_classifier(args.guide_classifier)
        if classifier.schedule is None:
            raise DifflabError(f"{args.guide_classifier} is a classifier of clean images; classifier guidance needs "
                               f"a noise-aware one (difflab train-classifier --noisy)")
    if args.x0_threshold_max != math.inf and args.x0_threshold is None:
        raise DifflabError("--x0-threshold-max needs dynamic thresholding (--x0-threshold P)")
    den = guided_denoiser(den, args.guidance, autoguide, interval, args.guidance_rescale, classifier,
                          args.classifier_scale if classifier is not None else 0.0, classifier_interval,
                          args.clip_x0, args.x0_threshold, args.x0_threshold_max)
    return den, cond, nrow


def run(args: argparse.Namespace) -> int:
    import time

    from ..data.audio import real_time_factor
    from ..encoders.attached import data_space, decode_samples, decode_trajectory
    from ..outputs import save_samples
    from ..sampling import sample
    from .. import distributed
    from ..viz import trajectory_figure

    device = setup_device(args)   # under torchrun each process draws its block of the samples
    base = load_denoiser(args).to(device)
    # without --sampler: the setting the checkpoint was made for (a distilled student's), else DDIM, 50 steps
    own = dict(getattr(base, "sampling", None) or {}) if args.sampler is None else {}
    setting = {"sampler": args.sampler or "ddim", "steps": 50, "grid": "default", **own}
    args.sampler = setting.pop("sampler")
    args.steps = args.steps or setting.pop("steps")
    args.grid = args.grid if args.grid != "default" else setting.pop("grid")
    den, cond, nrow = guidance_from_args(base, args, args.n)
    if hasattr(den, "to"):
        den = den.to(device)   # a guide (autoguidance model, classifier) too
    n = args.n if cond is None else len(cond["label"])
    kind = data_space(base)[0]
    if args.trajectory and kind == "audio" and getattr(base, "encoder", None) is None:
        raise DifflabError("--trajectory draws images; a waveform model has none (a mel model shows its spectrograms)")
    opts = {**{k: v for k, v in setting.items() if k not in ("steps", "grid")}, **parse_opts(args.opt)}
    if args.eta is not None:
        opts["eta"] = args.eta
    traj_steps = None
    if args.trajectory:
        k = args.trajectory_points
        traj_steps = sorted({round(i * (args.steps - 1) / (k - 1)) for i in range(k)})
    res = sample(den, n=n, sampler=args.sampler, steps=args.steps, grid=args.grid, sigma_max=args.sigma_max,
                 seed=args.seed, batch_size=args.batch_size, progress=not args.no_progress, trajectory=traj_steps,
                 cond=cond, device=device, split_over_ranks=True, **opts)
    if not distributed.is_main():
        return 0   # rank 0 writes the gathered samples
    tag = f"{args.sampler}_{args.steps}_seed{args.seed}"
    if args.class_ is not None:
        tag += f"_class{args.class_}" + (f"_w{args.guidance:g}" if args.guidance != 1.0 else "")
    # a latent or mel model's samples (and trajectory) are decoded to data space
    start = time.perf_counter()
    x = decode_samples(base.cpu(), res.x)   # decoded on the CPU, where the samples and trajectory are
    seconds = res.seconds + time.perf_counter() - start
    files = save_samples(kind, x, args.out, tag, each=args.save_images or None,
                         labels=None if cond is None else cond["label"], nrow=nrow)
    if "files" in files and kind != "audio":
        print(f"{n} files in {files['files']} (for pytorch-fid, clean-fid, torch-fidelity)")
    shown = ", ".join(str(files[k]) for k in ("preview", "arrays") if k in files)
    print(f"{n} samples, {res.nfe} NFE each, {seconds:.1f}s "
          f"({seconds / n * 1000:.1f} ms/sample): {shown}")
    if kind == "audio":
        print(f"real-time factor {real_time_factor(seconds, x):.3f} (seconds of compute per second of audio, "
              f"sampling{' and decoding' if getattr(base, 'encoder', None) is not None else ''}); WAV files in "
              f"{files['files']}")
    if args.trajectory:
        traj = res.trajectory if kind == "audio" else decode_trajectory(base, res.trajectory)  # mel: spectrograms
        print(f"trajectory: {trajectory_figure(traj, f'{args.out}/{tag}_trajectory.png')}")
    return 0
