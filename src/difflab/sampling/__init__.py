"""Sampling: time grids, seeded noise, the sampler registry, samplers by family, and :func:`sample`.

Families: :mod:`.ancestral` (DDPM, DDIM), :mod:`.karras` (Euler, Heun, Euler-ancestral), :mod:`.dpm_solver`
(DPM-Solver++ 2M/3M/2M-SDE), :mod:`.unipc`, :mod:`.langevin` (predictor-corrector, annealed Langevin) and
:mod:`.ode` (adaptive probability-flow ODE).  Importing this package registers them all in ``SAMPLERS``.
"""
from .ancestral import ancestral_chain, ancestral_step, sample_ddim, sample_ddpm, sample_repaint
from .api import SampleResult, nfe_settings, sample, sample_one_batch
from .dpm_solver import dpmpp_multistep, sample_dpmpp_2m, sample_dpmpp_2m_sde, sample_dpmpp_3m
from .grids import GRIDS, SPACINGS, discrete_timesteps, grid_alpha_sigma, time_grid
from .karras import ancestral_split, sample_euler, sample_euler_ancestral, sample_heun
from .langevin import sample_ald, sample_pc
from .noise import SampleNoise, randn_like, sample_seed
from .ode import dopri5, sample_ode
from .registry import SAMPLERS, SamplerInfo, get_sampler, register
from .unipc import sample_unipc

__all__ = ["sample", "sample_one_batch", "SampleResult", "nfe_settings", "GRIDS", "SPACINGS", "discrete_timesteps",
           "grid_alpha_sigma", "time_grid", "SampleNoise", "randn_like", "sample_seed", "SAMPLERS", "SamplerInfo",
           "get_sampler", "register", "ancestral_step", "ancestral_chain", "sample_repaint", "ancestral_split", "dopri5", "dpmpp_multistep",
           "sample_ddpm", "sample_ddim", "sample_euler", "sample_heun", "sample_euler_ancestral",
           "sample_dpmpp_2m", "sample_dpmpp_3m", "sample_dpmpp_2m_sde", "sample_unipc", "sample_pc", "sample_ald",
           "sample_ode"]
