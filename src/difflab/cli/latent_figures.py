"""``difflab latent-figures``: what an autoencoder's latent space holds (:mod:`difflab.latent_figures`)."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import DifflabError
from .common import add_data_args, floats

NAME = "latent-figures"
HELP = "draw an autoencoder's latent space: interpolations, PCA by class, forward process in both spaces"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("autoencoder", metavar="AE_RUN", help="a difflab train-autoencoder run or checkpoint")
    add_data_args(p)
    p.add_argument("--heldout-range", help="images to draw (default for mnist: 8000:10000)")
    p.add_argument("--diffusion", metavar="RUN",
                   help="a latent diffusion run: noise interpolations go through its DDIM map (default: the "
                        "autoencoder's decoder on prior noise)")
    p.add_argument("--steps", type=int, default=50, help="DDIM steps of --diffusion")
    p.add_argument("--pair", help="indices I,J of the two held-out images to interpolate (default: the first "
                                  "two with different labels)")
    p.add_argument("--times", default="0,0.2,0.4,0.6,0.8,1", help="times of the forward-process figure")
    p.add_argument("--n-pca", type=int, default=2000, help="held-out images in the PCA figure")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="folder for the PNG figures")


def run(args: argparse.Namespace) -> int:
    import torch

    from .. import latent_figures as lf
    from ..process import schedule_from_spec
    from ..train import load_checkpoint
    from ..train.autoencoder import load_autoencoder
    from .common import ints, load_data

    enc = load_autoencoder(args.autoencoder)
    data = load_data(args, args.heldout_range or ("8000:10000" if args.data == "mnist" else None))
    enc.net.check_input(data.shape)
    out = Path(args.out)
    written = []
    if args.diffusion:
        den = load_checkpoint(args.diffusion).denoiser("ema")
        if getattr(den, "encoder", None) is None or den.encoder.digest() != enc.digest():
            raise DifflabError(f"{args.diffusion} is not a diffusion model in the latent space of {args.autoencoder}")
        generate, how, schedule = lf.ode_generate(den, args.steps), f"DDIM-{args.steps} of {args.diffusion}", den.schedule
        shape = den.data_shape
    else:
        generate, how, shape = enc.net.decode, "the decoder on prior noise", enc.net.latent_shape
        schedule = schedule_from_spec("cosine", 1000)
    rows = lf.noise_interpolations(generate, shape, seed=args.seed)
    written.append(lf.interpolation_figure(rows, out / "interpolate_noise.png",
                                           f"between two noises, spherical and linear: {how}"))
    if args.pair:
        i, j = ints(args.pair)
    elif data.labels is not None:
        i, j = 0, int((data.labels != data.labels[0]).nonzero()[0])
    else:
        i, j = 0, 1
    rows = lf.digit_interpolations(enc, data.x[i], data.x[j])
    written.append(lf.interpolation_figure(rows, out / "interpolate_images.png",
                                           f"between images {i} and {j}: in the latent space (decoded) and in pixels"))
    if data.labels is not None:
        sub = data.x[: args.n_pca]
        with torch.no_grad():
            z = enc.encode(sub)
        written.append(lf.pca_figure({"pixels": sub, "latents": z}, data.labels[: args.n_pca],
                                     out / "latent_pca.png", data.classes))
    written.append(lf.forward_pixel_latent_figure(data.x[:3], enc, schedule, floats(args.times),
                                                  out / "forward_pixel_latent.png", seed=args.seed))
    for p in written:
        print(p)
    return 0
