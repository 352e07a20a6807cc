"""``difflab compare`` on tiny diffusion and GAN runs trained through the CLI, its refusals, the training
time read from a log, and the benchmark's quick mode."""
import json
import math
import shutil
import warnings

import pytest
import torch

from difflab.cli import main
from difflab.experiments.compare import count_parameters, training_seconds
from difflab.generators import load_generator
from difflab.metrics import load_classifier
from difflab.metrics.evaluate import evaluate_samples

DIGITS = ["--data", "digits", "--index-range", "0:1500", "--no-progress"]
EVAL = ["--data", "digits", "--train-range", "0:1500", "--ref-range", "1500:1797", "--no-progress"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two diffusion runs (`difflab train`, 3 steps) and two GAN runs (`difflab train-gan`, 4 steps, milestones
    at half and all of the budget) with seeds 0 and 1, and a classifier (20 steps), all on the 8x8 digits."""
    root = tmp_path_factory.mktemp("runs")
    for seed in (0, 1):
        assert main(["train", *DIGITS, "--out", str(root / f"diff{seed}"), "--steps", "3", "--channels", "8,16",
                     "--sample-every", "0", "--seed", str(seed)]) == 0
        assert main(["train-gan", *DIGITS, "--out", str(root / f"gan{seed}"), "--steps", "4", "--width", "4",
                     "--latent-dim", "8", "--milestones", "0.5,1", "--sample-every", "0", "--seed", str(seed)]) == 0
    assert main(["train-classifier", *DIGITS, "--out", str(root / "clf"), "--steps", "20"]) == 0
    return root


def test_compare_diffusion_and_gan_runs_grouped_by_training_seed(runs, tmp_path, capsys):
    out = tmp_path / "cmp"
    r = lambda name: str(runs / name)  # noqa: E731
    assert main(["compare", "--group", f"diffusion={r('diff0')},{r('diff1')}", "--group", f"gan={r('gan0')},{r('gan1')}",
                 "--opt", "diffusion:steps=4", *EVAL, "--classifier", r("clf"), "--n", "20", "--seeds", "0,1",
                 "--curve-n", "12", "--min-samples", "0", "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    models = {m["name"]: m for m in res["models"]}
    assert list(models) == ["diffusion", "gan"] and all(m["runs"] == 2 for m in models.values())
    assert models["gan"]["nfe"] == 1 and models["diffusion"]["nfe"] == 4   # dpmpp_2m, 4 steps: one call each
    assert models["gan"]["generator"] == "GAN" and models["diffusion"]["generator"] == "Diffusion (dpmpp_2m, 4 steps)"
    # a model's cell is the mean +- std (ddof 1) over its runs of the run's mean over sampling seeds
    for name, m in models.items():
        vals = torch.tensor([run["fd_samples"] for run in res["runs"][name]], dtype=torch.float64)
        assert m["fd_samples"] == pytest.approx(float(vals.mean()), rel=1e-12)
        assert m["fd_samples_std"] == pytest.approx(float(vals.std()), rel=1e-12)
    # a run's score is the evaluation suite's on the generator's samples, recomputed here independently
    g0 = res["runs"]["gan"][0]
    gen = load_generator(runs / "gan0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train, ref = (__import__("difflab").load_dataset("digits", index_range=rr).x for rr in ("0:1500", "1500:1797"))
        fds = [evaluate_samples(gen.sample(20, s), train, ref, load_classifier(runs / "clf"), min_samples=0, seed=s)
               ["fd_samples"] for s in (0, 1)]
    assert g0["fd_samples"] == pytest.approx(sum(fds) / 2, rel=1e-9)
    assert g0["parameters"] == count_parameters(gen) == sum(p.numel() for p in gen.net.parameters())
    assert g0["train_steps"] == 4 and g0["train_seconds"] > 0 and g0["seconds_per_image"] > 0
    # quality against training time: the GAN's two milestones, in training order
    curve = g0["curve"]
    assert [c["step"] for c in curve] == [2, 4] and curve[0]["train_seconds"] < curve[1]["train_seconds"]
    assert all(math.isfinite(c["fd"]) for c in curve)
    # difflab train keeps its checkpoint at 30 % of the budget by default (step 1 of 3): a point of the curve
    assert [c["step"] for c in res["runs"]["diffusion"][0]["curve"]] == [1, 3]
    md = (out / "report.md").read_text()
    assert "| diffusion | Diffusion (dpmpp_2m, 4 steps) | 2 |" in md and "| gan | GAN | 2 |" in md
    assert "| real data |" in md
    page = (out / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') == 2 and 'src="' not in page.replace('src="data:', "")
    assert (out / "samples.png").is_file() and (out / "quality_vs_time.png").is_file()
    assert "report:" in capsys.readouterr().out


def test_a_vae_run_is_compared_beside_a_gan(runs, tmp_path, capsys):
    """The autoencoder as a VAE (decoder of prior samples, one evaluation per sample) is a third kind of run
    `difflab compare` takes; its score is the evaluation suite's on the VAE's own samples."""
    vae = tmp_path / "vae"
    assert main(["train-autoencoder", *DIGITS, "--factor", "2", "--channels", "8,16", "--steps", "6",
                 "--batch-size", "16", "--heldout-range", "1500:1540", "--sample-every", "0", "--out", str(vae)]) == 0
    out = tmp_path / "cmp"
    assert main(["compare", "--group", f"vae={vae}", "--group", f"gan={runs / 'gan0'}", *EVAL, "--classifier", str(runs / "clf"),
                 "--n", "20", "--seeds", "0", "--curve-n", "12", "--min-samples", "0", "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    models = {m["name"]: m for m in res["models"]}
    assert set(models) == {"vae", "gan"} and models["vae"]["nfe"] == 1
    gen = load_generator(vae)
    assert type(gen).__name__ == "VAEGenerator"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train, ref = (__import__("difflab").load_dataset("digits", index_range=rr).x for rr in ("0:1500", "1500:1797"))
        fd = evaluate_samples(gen.sample(20, 0), train, ref, load_classifier(runs / "clf"), min_samples=0,
                              seed=0)["fd_samples"]
    assert res["runs"]["vae"][0]["fd_samples"] == pytest.approx(fd, rel=1e-9)
    assert res["runs"]["vae"][0]["parameters"] == count_parameters(gen) > 0
    assert "| vae |" in (out / "report.md").read_text()


def _fails(capsys, argv, *match):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("difflab: error:") and all(m in err for m in match), err


def test_bad_input_is_refused_in_one_line(runs, tmp_path, capsys):
    r = lambda name: str(runs / name)  # noqa: E731
    base = [*EVAL, "--classifier", r("clf"), "--n", "20", "--out", str(tmp_path / "o")]
    _fails(capsys, ["compare", r("gan0"), str(tmp_path / "nope"), *base], "run not found")
    # a GAN trained on other digits (images 0-999)
    assert main(["train-gan", "--data", "digits", "--index-range", "0:1000", "--no-progress", "--out",
                 str(tmp_path / "other"), "--steps", "1", "--width", "4", "--latent-dim", "8", "--sample-every", "0"]) == 0
    capsys.readouterr()
    _fails(capsys, ["compare", r("gan0"), str(tmp_path / "other"), *base], "trained on different data",
           "range: [0, 1500] vs [0, 1000]")
    # a run whose samples have another shape
    shutil.copytree(runs / "gan1", tmp_path / "rgb")
    cfg_path = next((tmp_path / "rgb" / "checkpoints").glob("step_*")) / "config.json"
    cfg = json.loads(cfg_path.read_text())
    for ck in (tmp_path / "rgb" / "checkpoints").glob("step_*"):
        (ck / "config.json").write_text(json.dumps({**cfg, "data_shape": [3, 8, 8]}))
    _fails(capsys, ["compare", r("gan0"), str(tmp_path / "rgb"), *base], "makes samples of shape (3, 8, 8)")
    _fails(capsys, ["compare", "--group", "gan", *base], "--group must look like NAME=RUN1,RUN2")
    _fails(capsys, ["compare", r("gan0"), "--opt", "diffusion:steps=4", *base], "--opt must look like NAME:KEY=VALUE")
    _fails(capsys, ["compare", r("gan0"), "--opt", "gan0:steps=4", *base], "bad generator options")
    _fails(capsys, ["compare", r("gan0"), r("gan0"), *base], "model names must differ")
    _fails(capsys, ["compare", r("gan0"), *EVAL[:-3], "--no-progress", "--classifier", r("clf"), "--out", "o"],
           "held-out images")


def test_runs_on_another_data_set_are_refused(runs, tmp_path, capsys, mnist_dir):
    _fails(capsys, ["compare", str(runs / "gan0"), "--data", "mnist", "--data-dir", str(mnist_dir), "--no-progress",
                    "--classifier", str(runs / "clf"), "--out", str(tmp_path / "o")],
           f"run {runs / 'gan0'} was trained on 'digits', not on 'mnist'")


def test_training_seconds_from_a_log_across_a_resume(tmp_path):
    """Invocation 1 logs steps 25, 50 at 10, 20 s (2.5 it/s); the resume logs 75, 100 at 12, 24 s.
    Step 100: 20 + 24 = 44 s; step 60: 20 + 10 steps / 2.5 it/s = 24 s; a recorded value wins."""
    lines = [{"step": 25, "elapsed_s": 10.0, "it_s": 2.5}, {"step": 50, "elapsed_s": 20.0, "it_s": 2.5},
             {"step": 75, "elapsed_s": 12.0, "it_s": 2.0}, {"step": 100, "elapsed_s": 24.0, "it_s": 2.0}]
    (tmp_path / "log.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    for step, cfg in ((100, {}), (60, {}), (10, {}), (70, {"training_seconds": 33.0})):
        ck = tmp_path / "checkpoints" / f"step_{step:07d}"
        ck.mkdir(parents=True)
        (ck / "config.json").write_text(json.dumps({"format": "x", "step": step, **cfg}))
    ck = tmp_path / "checkpoints"
    assert training_seconds(ck / "step_0000100") == pytest.approx(44.0)
    assert training_seconds(ck / "step_0000060") == pytest.approx(24.0)
    assert training_seconds(ck / "step_0000010") is None
    assert training_seconds(ck / "step_0000070") == 33.0


def test_benchmark_quick_mode_runs_end_to_end(tmp_path, mnist_dir):
    from bench_support import load_script
    bench = load_script("benchmarks/diffusion_vs_gan.py")
    summary = bench.main(["--quick", "--work", str(tmp_path), "--data-dir", str(mnist_dir), "--no-progress"])
    assert set(summary) == {"mnist", "stacked_mnist"}
    assert {m["name"] for m in summary["mnist"]["models"]} == {"diffusion", "gan", "vae"}
    assert {m["name"] for m in summary["stacked_mnist"]["models"]} == {"diffusion", "gan"}
    vae = next(m for m in summary["mnist"]["models"] if m["name"] == "vae")
    assert vae["nfe"] == 1 and vae["runs"] == 2
    assert all("modes" in m for m in summary["stacked_mnist"]["models"])
    assert (tmp_path / "mnist" / "report.html").is_file() and (tmp_path / "stacked_mnist" / "report.html").is_file()
