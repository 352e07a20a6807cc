"""``benchmarks/heldout_loss.py``: paired held-out losses of runs, checked against a direct recomputation."""
import json

import torch

import difflab as dl
from bench_support import load_script
from difflab.losses import denoising_loss


def test_heldout_losses_are_paired_and_recomputable(tmp_path, capsys, tiny_unet_kwargs):
    bench = load_script("benchmarks/heldout_loss.py")
    data = dl.load_dataset("digits", index_range="0:256")
    runs = []
    for i, steps in enumerate((2, 30)):
        torch.manual_seed(0)
        den = dl.Denoiser(dl.UNet(**tiny_unet_kwargs), dl.get_schedule("cosine", T=1000), "v", clip_x0=1.0)
        dl.train(den, data, tmp_path / f"r{i}", steps=steps, batch_size=16, progress=False, sample_every=0,
                 sample_n=2, sample_steps=2)
        runs.append(str(tmp_path / f"r{i}"))
    out = tmp_path / "h.json"
    assert bench.main(runs + ["--data", "digits", "--draws", "2", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["runs"]
    a, b = rows[runs[0]], rows[runs[1]]
    assert a["step"] == 2 and b["step"] == 30
    assert a["minus_first"] == 0 and a["minus_first_se"] == 0
    assert abs(b["minus_first"] - (b["loss"] - a["loss"])) < 1e-12
    assert b["loss"] < a["loss"]                         # 30 steps denoise better than 2
    assert 0 < b["minus_first_se"] < b["se"] + a["se"]   # pairing: the difference is known better than each loss
    # recomputed by hand: images 1500-1796 twice, t and noise from the generator seeded 1234
    held = dl.load_dataset("digits", index_range="1500:1797").x
    g = torch.Generator().manual_seed(1234)
    x0 = held.repeat(2, 1, 1, 1)
    t = torch.rand(len(x0), generator=g, dtype=torch.float64)
    eps = torch.randn(x0.shape, generator=g)
    with torch.no_grad():
        direct = denoising_loss(dl.load(runs[1]).eval(), x0, t, eps, "min_snr").double().mean()
    assert abs(float(direct) - b["loss"]) < 1e-6 * float(direct)
    assert "minus the first run's" in capsys.readouterr().out
    assert bench.main([str(tmp_path / "missing"), "--data", "digits"]) == 2
    assert capsys.readouterr().err.startswith("heldout_loss: error: ")
