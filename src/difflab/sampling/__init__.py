"""Sampling: time grids, seeded noise, samplers and the high-level :func:`sample`."""
from .api import nfe_settings, sample, sample_one_batch
from .grids import GRIDS, SPACINGS, discrete_timesteps, grid_alpha_sigma, time_grid
from .noise import SampleNoise, randn_like, sample_seed
from .samplers import SAMPLERS, SamplerInfo, sample_ddim, sample_ddpm

__all__ = ["sample", "sample_one_batch", "nfe_settings", "GRIDS", "SPACINGS", "discrete_timesteps", "grid_alpha_sigma",
           "time_grid", "SampleNoise", "randn_like", "sample_seed", "SAMPLERS", "SamplerInfo",
           "sample_ddim", "sample_ddpm"]
