"""The encoder interface and the generator API (diffusion side)."""
import pytest
import torch

import difflab as dl
from difflab.encoders import IdentityEncoder
from difflab.errors import DifflabError
from difflab.generators import DiffusionGenerator, Generator, load_generator

FIXED = __import__("pathlib").Path(__file__).parent / "data" / "fixed_checkpoint"


def test_identity_encoder_round_trip_scale_and_digest():
    e = IdentityEncoder(scale=2.0)
    x = torch.randn(3, 1, 4, 4)
    assert torch.equal(e.encode(x), 2 * x) and torch.equal(e.decode(e.encode(x)), x)
    assert e.latent_shape((1, 4, 4)) == (1, 4, 4)
    assert e.digest() == IdentityEncoder(scale=2.0).digest() != IdentityEncoder(scale=1.0).digest()


def test_diffusion_generator_is_a_generator_and_sample_i_depends_on_seed_and_i():
    gen = load_generator(FIXED, sampler="ddim", steps=5)
    assert isinstance(gen, Generator) and isinstance(gen, DiffusionGenerator)
    assert gen.data_kind == "images" and gen.data_shape == (1, 8, 8)
    a, b = gen.sample(4, seed=3), gen.sample(2, seed=3)
    assert gen.nfe == 5 and torch.allclose(a[:2], b, atol=1e-6)
    assert torch.equal(a, dl.sample(dl.load(FIXED), n=4, sampler="ddim", steps=5, seed=3, progress=False).x)


def test_unknown_formats_are_refused(tmp_path):
    (tmp_path / "config.json").write_text('{"format": "something-else"}')
    with pytest.raises(DifflabError, match="no generator for checkpoints of format 'something-else'"):
        load_generator(tmp_path)
