"""The denoiser contract D(x_t, t) -> x0_hat, parameterisations and exact oracles."""
from . import param
from .denoiser import Denoiser, NFECounter, as_time, eps_hat, score_hat, v_hat
from .gaussian import GaussianDenoiser, GaussianMixtureDenoiser

__all__ = ["param", "Denoiser", "NFECounter", "as_time", "eps_hat", "score_hat", "v_hat",
           "GaussianDenoiser", "GaussianMixtureDenoiser"]
