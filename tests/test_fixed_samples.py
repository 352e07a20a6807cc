"""Bit-identical samples of a fixed checkpoint for every sampler: the guard of refactorings.

``tests/data/fixed_checkpoint`` is a tiny UNet (44,969 parameters, cosine table, v-prediction, x0 clipped
to [-1, 1]) trained for 60 steps on scikit-learn's digits and frozen.  Every sampler draws 3 samples from it
(seed 0) on the default grid and on its recommended setting for 10 NFE, and runs on the exact denoiser of
a 2-D Gaussian mixture in float64 from a fixed x_T; the SHA-256 of the output bytes (and the counted NFE)
were recorded before the sampler code was reorganised (commit "test: hashes of every sampler's samples").

A change to any sampler's arithmetic, its noise stream, its grid or its options changes a hash.  If a
change is meant to alter samples, say so in its commit and record the new hashes with
``python tests/test_fixed_samples.py`` (it prints this table).
"""
import hashlib
from pathlib import Path

import pytest
import torch

import difflab as dl
from difflab.denoisers import GaussianMixtureDenoiser
from difflab.sampling import SAMPLERS, nfe_settings, time_grid

FIXED = Path(__file__).parent / "data" / "fixed_checkpoint"
STEPS = {"ddpm": 20, "ald": 2, "pc": 5, "heun": 6}   # and repaint: 8 steps x 10 passes (71 NFE)   # default: 8 steps

# sampler -> (default grid: sha256[:16], nfe), (10-NFE setting: sha256[:16], nfe), oracle sha256[:16]
EXPECTED = {
    'ald': (('ea28b7fcd1f3082d', 21), ('e189500549eeaff5', 11), 'a6f04ae168a270a0'),
    'ddim': (('fe6bd43064b06168', 8), ('e5d9bb158f9ca4c3', 10), 'cdb5c98a839d6b2c'),
    'ddpm': (('8095ebb85e0b4100', 20), ('5dc3f12f39e44cc7', 10), 'a832ccbafa81bca0'),
    'dpmpp_2m': (('4f97e22ef75ee8cb', 8), ('d4ef7b966c4bfa34', 10), 'c0e58bb89e313a4d'),
    'dpmpp_2m_sde': (('872b8429193b2650', 8), ('b24d143f5b1def34', 10), '64462bf2677c2407'),
    'dpmpp_3m': (('2d5dd8fdac424503', 8), ('2357f4949dffeeed', 10), '7aaa21dd7ae73db4'),
    'euler': (('c6e6637ab95143e0', 8), ('547d1f09c4d6cfbd', 10), '6037af4dd2bbdbe6'),
    'euler_ancestral': (('a392c81c98ddde73', 8), ('5452590fc859d3fe', 10), '33548e867dc4024f'),
    'heun': (('b7d892ef4ceb2ae1', 11), ('40f18d002fd0c1b9', 9), '0e97a091f5cbd386'),
    'ode': (('45002793de14252a', 116), ('e6e3dd60cc1b3cba', 62), '99522b03207136cf'),
    'pc': (('138c6b3f7cab4acf', 9), ('138c6b3f7cab4acf', 9), '51f6c78e442f1550'),
    'repaint': (('4af7e55d42a5b22e', 71), ('8431d509ee2993e3', 1), '19f3630f5192d84f'),  # added with the sampler
    'unipc': (('2caebec9491d7331', 8), ('717021f6513fed20', 10), '3f5b79a421aa16dc'),
}


def _digest(x: torch.Tensor) -> str:
    return hashlib.sha256(x.detach().contiguous().numpy().tobytes()).hexdigest()[:16]


def _mixture():
    sch = dl.get_schedule("cosine", T=1000)
    means = torch.tensor([[-1.0, 0.0], [1.0, 0.5], [0.0, -1.0]], dtype=torch.float64)
    covs = torch.stack([torch.diag(torch.tensor(v, dtype=torch.float64)) for v in ([0.05, 0.1], [0.1, 0.02], [0.03, 0.03])])
    return GaussianMixtureDenoiser(sch, means, covs, torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64))


def run_all(name: str):
    den = dl.load(FIXED)
    a = dl.sample(den, n=3, sampler=name, steps=STEPS.get(name, 8), seed=0, progress=False)
    steps, opts = nfe_settings(name, 10)
    if name == "ode":   # one "step" of the default (leading) grid would start at t = 1/T
        opts = {"grid": "uniform", **opts}
    b = dl.sample(den, n=3, sampler=name, steps=steps, seed=0, progress=False, **opts)
    oracle = _mixture()
    g = torch.Generator().manual_seed(5)
    x_T = torch.randn(16, 2, generator=g, dtype=torch.float64)
    steps_o, opts_o = nfe_settings(name, 10)
    grid = opts_o.pop("grid", "trailing")
    ts = time_grid(oracle.schedule, steps_o, grid, sigma_max=opts_o.pop("sigma_max", None))
    c = SAMPLERS[name].fn(oracle, x_T, ts, generator=g, **opts_o)
    return (_digest(a.x), a.nfe), (_digest(b.x), b.nfe), _digest(c)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_samples_are_bit_identical(name):
    assert name in EXPECTED, f"no recorded hashes for sampler {name!r}: run python {__file__}"
    assert run_all(name) == EXPECTED[name]


if __name__ == "__main__":
    import os
    torch.set_num_threads(min(2, os.cpu_count() or 1))   # as tests/conftest.py
    for n in sorted(SAMPLERS):
        print(f"    {n!r}: {run_all(n)!r},")
