"""The DiffWave-style waveform network: shapes, its receptive field in closed form, class conditioning, and a
waveform diffusion run through the trainer and a sampler."""
import pytest
import torch

from difflab.errors import DifflabError
from difflab.nn import WaveNet, build_network, default_network


def test_receptive_field_is_where_the_gradient_reaches():
    torch.manual_seed(0)
    net = WaveNet(channels=8, layers=6, cycle=3, time_embed_dim=16)
    torch.nn.init.normal_(net.head.weight)       # the zero-initialised head would hide every gradient
    assert net.receptive_field == 1 + 2 * (1 + 2 + 4) * 2 == 29
    x = torch.randn(1, 1, 64, requires_grad=True)
    net(x, torch.tensor([10.0]))[0, 0, 32].backward()
    reach = (x.grad[0, 0].abs() > 0).nonzero().flatten()
    assert reach.min() == 32 - 14 and reach.max() == 32 + 14      # non-causal: half on each side


def test_output_shape_zero_head_and_labels():
    torch.manual_seed(0)
    net = build_network(default_network((1, 512)))
    assert isinstance(net, WaveNet) and net.config["num_classes"] == 0
    x = torch.randn(3, 1, 512)
    assert torch.equal(net(x, torch.tensor([5.0])), torch.zeros(3, 1, 512))   # DiffWave's zero-initialised output
    cond = WaveNet(channels=8, layers=4, cycle=2, time_embed_dim=16, num_classes=10)
    torch.nn.init.normal_(cond.head.weight)
    t = torch.full((3,), 7.0)
    a, b = cond(x, t, label=torch.tensor([1, 2, 3])), cond(x, t, label=torch.tensor([1, 2, 4]))
    assert torch.equal(a[:2], b[:2]) and not torch.allclose(a[2], b[2])      # each sample sees its own label
    assert torch.equal(cond(x, t), cond(x, t, label=torch.full((3,), 10)))   # None = the null label
    with pytest.raises(DifflabError, match="it takes no class label"):
        net(x, t, label=torch.zeros(3, dtype=torch.long))
    with pytest.raises(DifflabError, match=r"takes waveforms of shape \(1, L\)"):
        net(torch.randn(2, 1, 8, 8), t[:2])


def test_waveform_diffusion_trains_and_samples(fsdd_dir, tmp_path):
    import difflab as dl
    from difflab.denoisers import create_denoiser
    data = dl.load_dataset("fsdd", fsdd_dir, "0:20", length=1024)
    assert data.kind == "audio" and data.shape == (1, 1024)
    den = create_denoiser(data.shape, {"channels": 8, "layers": 4, "time_embed_dim": 16}, seed=0)
    res = dl.train(den, data, tmp_path / "run", steps=3, batch_size=4, sample_every=0, sample_steps=2, progress=False)
    from difflab.train import load_checkpoint
    ck = load_checkpoint(tmp_path / "run")
    assert ck.config["data_kind"] == "audio" and ck.config["network"]["type"] == "wavenet"
    assert (tmp_path / "run" / "samples" / "step_0000003.png").exists()      # the waveform preview figure
    out = dl.sample(res.ema, n=2, sampler="ddim", steps=2, progress=False)
    assert out.x.shape == (2, 1, 1024) and out.x.abs().max() <= 1            # clip_x0 of the audio kind
