"""diffusers pipelines in and out (diffusers is a test-only dependency; nothing is downloaded)."""
import json

import pytest
import torch

import difflab as dl
from difflab.errors import DifflabError
from difflab.interop import load_pretrained
from difflab.sampling import sample_ddim, sample_ddpm, time_grid

diffusers = pytest.importorskip("diffusers")

# google/ddpm-cifar10-32's published configuration
CIFAR_UNET = dict(sample_size=32, in_channels=3, out_channels=3, block_out_channels=(128, 256, 256, 256),
                  layers_per_block=2, down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
                  up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"), downsample_padding=0,
                  flip_sin_to_cos=False, freq_shift=1, norm_eps=1e-6, norm_num_groups=32)
SMALL_UNET = dict(sample_size=16, in_channels=1, out_channels=1, block_out_channels=(16, 32), layers_per_block=1,
                  down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
                  norm_num_groups=8, attention_head_dim=8)
CIFAR_SCHED = dict(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02,
                   clip_sample=True, variance_type="fixed_small")


def _pipeline(tmp_path, unet_kw, sched_kw, name="pipe", seed=0, safe=True):
    torch.manual_seed(seed)
    unet = diffusers.UNet2DModel(**unet_kw).eval()
    pipe = diffusers.DDPMPipeline(unet=unet, scheduler=diffusers.DDPMScheduler(**sched_kw))
    pipe.save_pretrained(tmp_path / name, safe_serialization=safe)
    return pipe, tmp_path / name


@pytest.fixture(scope="module")
def cifar(tmp_path_factory):
    return _pipeline(tmp_path_factory.mktemp("cifar"), CIFAR_UNET, CIFAR_SCHED)


def test_cifar_architecture_network_outputs_match(cifar):
    pipe, path = cifar
    den = load_pretrained(path)
    assert den.data_shape == (3, 32, 32) and den.prediction == "eps" and den.clip_x0 == 1.0
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([3, 871])
    with torch.no_grad():
        ref = pipe.unet(x, t).sample
        ours = den.net(x, t.float())
    assert (ours - ref).abs().max().item() <= 1e-5


def test_cifar_ddpm_and_ddim_samples_match_the_pipelines(cifar):
    pipe, path = cifar
    den = load_pretrained(path)
    steps = 5  # 1000 steps of this 36M-parameter network take minutes on a CPU; the small model runs 1000
    ref = pipe(batch_size=2, generator=torch.Generator().manual_seed(0), num_inference_steps=steps,
               output_type="np").images
    g = torch.Generator().manual_seed(0)
    x_T = torch.randn(2, 3, 32, 32, generator=g)
    with torch.no_grad():
        ours = sample_ddpm(den, x_T, time_grid(den.schedule, steps), generator=g)
    ours = (ours / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    assert abs(ours - ref).max() <= 1e-4
    ddim = diffusers.DDIMPipeline(unet=pipe.unet, scheduler=diffusers.DDIMScheduler.from_config(pipe.scheduler.config))
    ref = ddim(batch_size=2, generator=torch.Generator().manual_seed(0), num_inference_steps=steps, eta=0.0,
               use_clipped_model_output=True, output_type="np").images
    g = torch.Generator().manual_seed(0)
    x_T = torch.randn(2, 3, 32, 32, generator=g)
    with torch.no_grad():
        ours = sample_ddim(den, x_T, time_grid(den.schedule, steps))
    assert abs((ours / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy() - ref).max() <= 1e-4


def test_small_model_1000_step_ddpm_matches(tmp_path):
    pipe, path = _pipeline(tmp_path, SMALL_UNET, CIFAR_SCHED)
    den = load_pretrained(path)
    ref = pipe(batch_size=2, generator=torch.Generator().manual_seed(3), output_type="np").images
    g = torch.Generator().manual_seed(3)
    x_T = torch.randn(2, 1, 16, 16, generator=g)
    with torch.no_grad():
        ours = sample_ddpm(den, x_T, time_grid(den.schedule, 1000), generator=g)
    assert abs((ours / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy() - ref).max() <= 1e-4


def test_every_sampler_runs_on_a_pretrained_model(tmp_path):
    _, path = _pipeline(tmp_path, SMALL_UNET, {**CIFAR_SCHED, "beta_schedule": "squaredcos_cap_v2",
                                              "prediction_type": "v_prediction"})
    den = load_pretrained(path)
    assert den.prediction == "v" and den.schedule.T == 1000
    for name in dl.SAMPLERS:
        out = dl.sample(den, n=2, sampler=name, steps=4, progress=False)
        assert out.x.shape == (2, 1, 16, 16) and torch.isfinite(out.x).all() and out.nfe > 0


def test_round_trip_difflab_diffusers_difflab(tmp_path):
    torch.manual_seed(0)
    net = dl.UNet(in_channels=1, channels=(16, 32), layers_per_block=1, attention_levels=(1,), groups=8)
    for p in net.parameters():  # not the default init: every weight matters in the comparison
        p.data.normal_(0, 0.05)
    den = dl.Denoiser(net, dl.get_schedule("cosine", T=1000), "v", clip_x0=1.0).eval()
    den.data_shape = (1, 16, 16)
    dl.export_diffusers(den, tmp_path / "out")
    pipe = diffusers.DDPMPipeline.from_pretrained(tmp_path / "out")
    imgs = pipe(batch_size=1, num_inference_steps=3, generator=torch.Generator().manual_seed(0), output_type="np").images
    assert imgs.shape == (1, 16, 16, 1)
    assert pipe.scheduler.config.prediction_type == "v_prediction"
    assert torch.allclose(pipe.scheduler.alphas_cumprod.double(), den.schedule.alpha_bar_table, atol=1e-6)
    x = torch.randn(3, 1, 16, 16)
    t = torch.tensor([0.0, 500.0, 999.0])
    with torch.no_grad():
        assert (pipe.unet(x, t).sample - net(x, t)).abs().max() <= 1e-5
        back = load_pretrained(tmp_path / "out")
        assert torch.equal(back.net(x, t), net(x, t))
    assert back.prediction == "v" and back.clip_x0 == 1.0


def test_cli_sample_pretrained_and_export(tmp_path, capsys):
    from difflab.cli import main
    _, path = _pipeline(tmp_path, SMALL_UNET, CIFAR_SCHED)
    assert main(["sample", "--pretrained", str(path), "--sampler", "dpmpp_2m", "--steps", "5", "--n", "2",
                 "--out", str(tmp_path / "s"), "--no-progress", "--save-images"]) == 0
    assert (tmp_path / "s" / "dpmpp_2m_5_seed0.png").exists()
    assert sorted(p.name for p in (tmp_path / "s" / "dpmpp_2m_5_seed0_images").iterdir()) == ["000000.png", "000001.png"]
    run = tmp_path / "run"
    assert main(["train", "--data", "digits", "--index-range", "0:32", "--steps", "2", "--batch-size", "4",
                 "--channels", "8,16", "--no-progress", "--sample-every", "0", "--out", str(run)]) == 0
    assert main(["export", str(run), "--diffusers", str(tmp_path / "exp")]) == 0
    assert diffusers.DDPMPipeline.from_pretrained(tmp_path / "exp").unet.config.sample_size == 8


def test_hf_cache_layout_and_bin_weights(tmp_path, monkeypatch):
    _, path = _pipeline(tmp_path, SMALL_UNET, CIFAR_SCHED, safe=False)
    assert (path / "unet" / "diffusion_pytorch_model.bin").exists()
    entry = tmp_path / "hub" / "models--someone--tiny-ddpm"
    (entry / "refs").mkdir(parents=True)
    (entry / "refs" / "main").write_text("abc123")
    (entry / "snapshots").mkdir()
    path.rename(entry / "snapshots" / "abc123")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    den = load_pretrained("someone/tiny-ddpm")
    assert den.data_shape == (1, 16, 16)


def test_bad_pipelines_give_one_line_errors(tmp_path):
    _, path = _pipeline(tmp_path, SMALL_UNET, CIFAR_SCHED)
    cfg_path = path / "unet" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg_path.write_text(json.dumps({**cfg, "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"]}))
    with pytest.raises(DifflabError, match="unsupported down_block_types='CrossAttnDownBlock2D'"):
        load_pretrained(path)
    cfg_path.write_text(json.dumps({**cfg, "time_embedding_type": "fourier"}))
    with pytest.raises(DifflabError, match="unsupported time_embedding_type"):
        load_pretrained(path)
    cfg_path.write_text(json.dumps(cfg))
    w = path / "unet" / "diffusion_pytorch_model.safetensors"
    w.write_bytes(w.read_bytes()[:1000])
    with pytest.raises(DifflabError, match="corrupt or truncated"):
        load_pretrained(path)
    (path / "scheduler" / "scheduler_config.json").unlink()
    with pytest.raises(DifflabError, match="missing .*scheduler_config.json"):
        load_pretrained(path)
    with pytest.raises(DifflabError, match="not found"):
        load_pretrained(tmp_path / "nothing")
