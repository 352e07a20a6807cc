"""difflab: diffusion models, shown, trained, sampled and measured.

Quick start (Python)::

    import difflab as dl
    data = dl.load_dataset("digits")                                  # 1,797 real 8x8 digits
    net = dl.UNet(in_channels=1, channels=(32, 64), attention_levels=(1,))
    den = dl.Denoiser(net, dl.get_schedule("cosine", T=1000), prediction="v", clip_x0=1.0)
    run = dl.train(den, data, "runs/digits", minutes=2, seed=0)
    out = dl.sample(run.ema, n=64, sampler="ddim", steps=50, seed=0)
    dl.save_grid(out.x, "runs/digits/samples.png")
"""
from .data import Dataset, ImageData, PointData, load_dataset
from .denoisers import (Denoiser, DenoiserFn, GaussianDenoiser, GaussianMixtureDenoiser, create_denoiser, eps_hat,
                        score_hat, v_hat)
from .errors import DifflabError
from .interop import export_diffusers, load_pretrained
from .nn import UNet
from .process import SCHEDULES, Schedule, get_schedule, q_sample, schedule_from_spec
from .sampling import SAMPLERS, sample, time_grid
from .train import TrainConfig, load_checkpoint, train
from .viz import save_grid

__version__ = "0.1.0"


def load(path: str, weights: str = "ema") -> Denoiser:
    """The denoiser of a checkpoint (run folder, checkpoint folder or weights file)."""
    return load_checkpoint(path).denoiser(weights)


__all__ = ["Dataset", "ImageData", "PointData", "load_dataset", "Denoiser", "DenoiserFn", "create_denoiser",
           "GaussianDenoiser", "GaussianMixtureDenoiser", "eps_hat", "score_hat", "v_hat", "DifflabError", "UNet",
           "SCHEDULES", "Schedule", "get_schedule", "schedule_from_spec", "q_sample", "SAMPLERS", "sample", "time_grid",
           "TrainConfig", "load_checkpoint", "train", "save_grid", "load", "load_pretrained", "export_diffusers",
           "__version__"]
