"""2-D toy data, the MLP denoiser, point figures and ``difflab sweep`` (run, resume, report, errors)."""
import json
import math

import pytest
import torch

import difflab as dl
from difflab.data import TOY2D, load_toy2d, sample_toy2d
from difflab.errors import DifflabError
from difflab.experiments import expand_grid, load_config, run_sweep
from difflab.metrics import sliced_wasserstein
from difflab.nn import MLP


def test_toy2d_exact_samplers():
    for name in TOY2D:
        a, b = sample_toy2d(name, 4000, seed=3), sample_toy2d(name, 4000, seed=3)
        assert a.shape == (4000, 2) and torch.equal(a, b)
        assert not torch.equal(a, sample_toy2d(name, 4000, seed=4))
        std = a.std(0)
        assert bool(((std > 0.5) & (std < 1.5)).all()), (name, std)
    # checkerboard: every point in a black cell (i + j even) of the 4x4 board on [-2, 2]^2, 1/8 per cell
    p = sample_toy2d("checkerboard", 8000) * 1.15 + 2
    cells = p.floor().long()
    assert bool(((cells >= 0) & (cells <= 3)).all()) and bool((cells.sum(1) % 2 == 0).all())
    counts = torch.bincount(cells[:, 0] * 4 + cells[:, 1], minlength=16).double()
    assert counts[counts > 0].numel() == 8 and (counts[counts > 0] - 1000).abs().max() < 5 * math.sqrt(1000)
    # eight Gaussians: each point within 5 std (0.1) of one of the centres on the radius-2 circle
    q = sample_toy2d("eight_gaussians", 4000) * 1.41
    k = torch.arange(8) * math.pi / 4
    centres = 2 * torch.stack([k.cos(), k.sin()], 1)
    assert torch.cdist(q, centres).min(1).values.max() < 0.5
    assert abs(float(q.norm(dim=1).mean()) - 2) < 0.02
    with pytest.raises(DifflabError, match="unknown 2-D data set"):
        sample_toy2d("spiral", 10)


def test_mlp_denoiser_and_checkpoint(tmp_path):
    net = MLP(hidden=32, layers=2, fourier=4)
    den = dl.Denoiser(net, dl.get_schedule("cosine", T=100), "v")
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.1)
    x = torch.randn(5, 2)
    assert den(x, torch.full((5,), 0.5)).shape == (5, 2)
    with pytest.raises(DifflabError, match="dimension 2"):
        net.check_input((1, 28, 28))
    from difflab.train import load_checkpoint, save_checkpoint
    save_checkpoint(tmp_path / "run", den, (2,), 1)
    den2 = load_checkpoint(tmp_path / "run").denoiser("model")
    assert den2.net.config == net.config
    assert torch.equal(den2(x, 0.3), den(x, 0.3))


def test_point_figures(tmp_path):
    from difflab.viz import forward_points_figure, points_figure, score_field_figure
    data = sample_toy2d("moons", 500)
    den = dl.Denoiser(MLP(hidden=16, layers=1), dl.get_schedule("linear", T=100), "eps")
    for path in (points_figure({"a": data, "b": data + 0.1}, tmp_path / "p.png", data=data),
                 forward_points_figure(data, {"linear": dl.get_schedule("linear")}, [0, 0.5, 1], tmp_path / "f.png"),
                 score_field_figure(den, [0.1, 0.5], tmp_path / "s.png", data=data)):
        assert path.stat().st_size > 5000


def _tiny_config(**over):
    cfg = {"name": "tiny", "seed": 0, "data": {"kind": "toy2d", "name": "eight_gaussians", "n": 4000},
           "network": {"type": "mlp", "hidden": 64, "layers": 2, "fourier": 4},
           "train": {"batch_size": 256, "lr": 3e-3, "warmup": 20, "ema_decay": 0.98},
           "grid": {"schedule": ["cosine", "edm"], "prediction": ["eps"], "weighting": ["uniform"],
                    "budget": [{"steps": 300}]},
           "stages": [0.5, 1.0],
           "sampling": {"samplers": ["ddim", "euler_ancestral"], "nfe": [5, 20], "n": 600,
                        "main": {"sampler": "ddim", "nfe": 20}}}
    cfg.update(over)
    return cfg


def test_sweep_runs_resumes_and_reports(tmp_path):
    """Two variants, two stages: results, a ranked report (Markdown + self-contained HTML + figures),
    trained models beat the N(0, I) starting point, and a killed sweep continues where it stopped."""
    out = run_sweep(_tiny_config(), tmp_path / "sw", progress=False)
    results = [json.loads(p.read_text()) for p in sorted((out / "variants").glob("*/result.json"))]
    assert len(results) == 2
    ref = sample_toy2d("eight_gaussians", 5000, seed=1).double()
    gauss = sliced_wasserstein(torch.randn(600, 2, dtype=torch.float64), ref)
    for r in results:
        assert [s["stage"] for s in r["stages"]] == [0.5, 1.0] and r["stages"][-1]["steps"] == 300
        assert {(q["sampler"], q["nfe"]) for q in r["quality"]} == {("ddim", 5), ("ddim", 20),
                                                                   ("euler_ancestral", 5), ("euler_ancestral", 20)}
        assert r["stages"][-1]["quality"]["sliced_wasserstein"] < 0.6 * gauss
        assert len(r["loss_buckets"]["x0_mse"]) == 10
        assert 0 < r["floor_std"] < r["floor"] < 0.3 * gauss
    rep = out / "report"
    md = (rep / "report.md").read_text()
    assert "| 1 |" in md and "| 2 |" in md and "real vs real" in md
    for name in ("schedules", "loss_buckets", "quality_vs_nfe", "quality_vs_time", "samples", "forward_points",
                 "score_field"):
        assert (rep / f"{name}.png").stat().st_size > 5000, name
        assert f"({name}.png)" in md
    html = (rep / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 7 and "<table>" in html
    # resume: finished variants are not redone
    stamp = (out / "variants" / "cosine-eps-uniform-300st" / "result.json").stat().st_mtime_ns
    # simulate a kill after the first stage of the edm variant: drop its result and its last stage
    v = out / "variants" / "edm-eps-uniform-300st"
    first = json.loads((v / "result.json").read_text())
    (v / "result.json").unlink()
    stages = json.loads((v / "stages.json").read_text())
    (v / "stages.json").write_text(json.dumps(stages[:1]))
    import shutil
    ck = sorted((v / "run" / "checkpoints").glob("step_*"))
    assert [c.name for c in ck][-1] == "step_0000300"
    shutil.rmtree(ck[-1])
    (v / "run" / "checkpoints" / "latest").write_text(ck[-2].name)
    run_sweep(_tiny_config(), out, progress=False)
    assert (out / "variants" / "cosine-eps-uniform-300st" / "result.json").stat().st_mtime_ns == stamp
    again = json.loads((v / "result.json").read_text())
    assert again["stages"][-1]["steps"] == 300
    # same seed, same batches: the continued run reproduces the uninterrupted one
    a = {(q["sampler"], q["nfe"]): q["sliced_wasserstein"] for q in first["quality"]}
    b = {(q["sampler"], q["nfe"]): q["sliced_wasserstein"] for q in again["quality"]}
    assert all(abs(a[k] - b[k]) < 1e-6 for k in a), (a, b)


def test_sweep_config_errors(tmp_path):
    from difflab.cli import main
    bad = [({"grid": {"schedule": ["quadratic"], "budget": [{"steps": 1}]}}, "unknown schedule"),
           ({"grid": {"schedule": ["cosine"]}}, "grid.budget is required"),
           ({"grid": {"budget": [{"epochs": 3}]}}, "budget entries"),
           ({"stages": [0.5, 0.2, 1.0]}, "stages must increase"),
           ({"sampling": {"samplers": ["ddim"], "nfe": [5], "main": {"sampler": "heun", "nfe": 5}}}, "sampling.main"),
           ({"data": {"kind": "cifar"}}, "data.kind"),
           ({"optimiser": "sgd"}, "unknown sweep config keys")]
    import yaml
    for over, msg in bad:
        p = tmp_path / "c.yaml"
        p.write_text(yaml.safe_dump(_tiny_config(**over)))
        with pytest.raises(DifflabError, match=msg):
            load_config(p)
    (tmp_path / "c.toml").write_text('name = "t"\n[data]\nkind = "toy2d"\nname = "moons"\n[grid]\nbudget = [{steps = 10}]\n'
                                    '[sampling]\nsamplers = ["ddim"]\nnfe = [5]\n')
    assert [v.id for v in expand_grid(load_config(tmp_path / "c.toml"))] == ["cosine-v-min_snr-10st"]
    (tmp_path / "c.json").write_text("{}")
    assert main(["sweep", str(tmp_path / "c.json")]) == 2
    (tmp_path / "broken.yaml").write_text("grid: [unclosed")
    assert main(["sweep", str(tmp_path / "broken.yaml")]) == 2
    assert main(["sweep", str(tmp_path / "missing.yaml")]) == 2


def test_presets_parse():
    from pathlib import Path
    root = Path(__file__).resolve().parents[1] / "sweeps"
    toy = load_config(root / "schedules-toy2d.yaml")
    assert len(expand_grid(toy)) == 8 and toy["data"]["kind"] == "toy2d"
    assert len(expand_grid(load_config(root / "schedules-mnist.yaml"))) == 4
    assert load_toy2d("moons", 100).shape == (2,)
