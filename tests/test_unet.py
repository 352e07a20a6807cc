import pytest
import torch

from difflab.errors import DifflabError
from difflab.nn import UNet, timestep_embedding


@pytest.mark.parametrize("shape,channels,attn", [((1, 8, 8), (16, 32), (1,)), ((1, 28, 28), (16, 32, 32), (2,)),
                                                 ((3, 32, 32), (16, 32, 32, 32), (1, 2))])
def test_shapes(shape, channels, attn):
    net = UNet(in_channels=shape[0], channels=channels, attention_levels=attn, heads=2, dropout=0.1)
    x = torch.randn(3, *shape)
    y = net(x, torch.tensor([0.0, 10.0, 999.0]))
    assert y.shape == x.shape
    y.pow(2).mean().backward()
    assert all(p.grad is not None for p in net.parameters())


def test_time_changes_output_and_batch_independence():
    torch.manual_seed(0)
    net = UNet(in_channels=1, channels=(8, 16), groups=4, attention_levels=(1,)).eval()
    x = torch.randn(5, 1, 8, 8)
    t = torch.tensor([1.0, 100.0, 200.0, 300.0, 900.0])
    full = net(x, t)
    parts = torch.cat([net(x[i:i + 1], t[i:i + 1]) for i in range(5)])
    assert torch.allclose(full, parts, atol=1e-5)
    assert (net(x, t + 50) - full).abs().max() > 1e-3


def test_bad_sizes_are_refused_with_a_message():
    net = UNet(in_channels=1, channels=(8, 16, 16), groups=4)
    with pytest.raises(DifflabError, match="image size 30x30 does not fit a UNet with 3 levels"):
        net.check_input((1, 30, 30))
    with pytest.raises(DifflabError, match="1-channel images, got 3"):
        net.check_input((3, 32, 32))
    with pytest.raises(DifflabError, match="not divisible by groups"):
        UNet(channels=(12, 24), groups=8)


def test_timestep_embedding_formula():
    t = torch.tensor([0.0, 3.0])
    e = timestep_embedding(t, 8, flip_sin_to_cos=False, freq_shift=0)
    freqs = torch.exp(-torch.log(torch.tensor(10000.0)) * torch.arange(4) / 4)
    assert torch.allclose(e[1], torch.cat([torch.sin(3 * freqs), torch.cos(3 * freqs)]))
    flipped = timestep_embedding(t, 8, flip_sin_to_cos=True)
    assert torch.allclose(flipped[1], torch.cat([torch.cos(3 * freqs), torch.sin(3 * freqs)]))
