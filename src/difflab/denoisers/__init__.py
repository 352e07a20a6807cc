"""The denoiser contract D(x_t, t) -> x0_hat, parameterisations and exact oracles."""
from . import param
from .denoiser import Denoiser, DenoiserFn, NFECounter, as_time, eps_hat, network_dtype, score_hat, v_hat
from .build import create_denoiser
from .gaussian import GaussianDenoiser, GaussianMixtureDenoiser

__all__ = ["param", "create_denoiser", "Denoiser", "DenoiserFn", "network_dtype", "NFECounter", "as_time", "eps_hat", "score_hat", "v_hat",
           "GaussianDenoiser", "GaussianMixtureDenoiser"]
