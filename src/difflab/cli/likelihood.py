"""``difflab likelihood``: bits/dim of held-out images by the DDPM ELBO or the probability-flow ODE."""
from __future__ import annotations

import argparse
import math

from ..errors import DifflabError
from .common import add_data_args, add_device_arg, add_progress_arg, load_data

NAME = "likelihood"
HELP = "bits/dim of held-out images: DDPM ELBO or probability-flow ODE"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="run folder or checkpoint")
    add_data_args(p)
    p.add_argument("--n", type=int, default=100, help="images (from the start of --index-range, mnist: 8000:10000)")
    p.add_argument("--method", choices=["elbo", "ode"], default="elbo")
    p.add_argument("--variance", choices=["fixed_small", "fixed_large"], default="fixed_large",
                   help="reverse-step variance of the ELBO: beta_tilde or beta")
    p.add_argument("--n-t", type=int, help="estimate the ELBO's T-1 KL terms from this many random t")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--weights", choices=["ema", "model"], default="ema")
    p.add_argument("--out", help="write the results as JSON here")
    add_device_arg(p)
    add_progress_arg(p)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..data import to_uint8
    from ..io import atomic_write_json
    from ..train import load_checkpoint
    if args.n < 2:
        raise DifflabError(f"--n must be at least 2, got {args.n}")
    from ..devices import OnDevice, resolve_device
    den = OnDevice(load_checkpoint(args.checkpoint).denoiser(args.weights), resolve_device(args.device))
    rng = args.index_range or ("8000:10000" if args.data == "mnist" else None)
    data = load_data(args, rng)
    x8 = torch.from_numpy(to_uint8(data.x[: args.n]))
    if args.method == "elbo":
        from ..metrics.elbo import ddpm_elbo
        r = ddpm_elbo(den, x8, variance=args.variance, n_t=args.n_t, seed=args.seed, batch_size=args.batch_size,
                      progress=not args.no_progress)
        bpd = r.bpd
        per = {"prior": r.prior.mean().item(), "diffusion": r.diffusion.mean().item(),
               "decoder": r.decoder.mean().item()}
        what = f"DDPM ELBO ({args.variance} variance, {'all' if args.n_t is None else args.n_t} t terms)"
    else:
        from ..metrics import bits_per_dim
        bpd = bits_per_dim(den, x8, seed=args.seed)
        per, what = {}, "probability-flow ODE, uniform dequantisation"
    mean, se = bpd.mean().item(), bpd.std().item() / math.sqrt(len(bpd))
    print(f"{what}: {mean:.4f} +- {se:.4f} bits/dim (mean +- standard error over {len(bpd)} images of "
          f"{data.name} {rng or ''})")
    if per:
        print("nats per image: " + ", ".join(f"{k} {v:.2f}" for k, v in per.items()))
    if args.out:
        atomic_write_json(args.out, {"method": what, "bpd_mean": mean, "bpd_se": se, "bpd": bpd.tolist(),
                                     "terms_nats": per})
    return 0
