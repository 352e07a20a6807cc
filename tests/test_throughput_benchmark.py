"""benchmarks/throughput.py and benchmarks/gpu.sh at tiny sizes (--quick, QUICK=1): every part runs and the
report holds what BENCHMARKS.md shows.  Measurements, not correctness, are their output; what is checked
for correctness is that difflab's UNet built from a UNet2DModel config and loaded with its weights computes the
same function (to float32 rounding, 1e-5), and that both count the same step FLOPs."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench_support import load_script

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    return load_script("benchmarks/throughput.py")


def test_configs_match_the_models_they_name(bench):
    """The cifar10 config is google/ddpm-cifar10-32's UNet (35.7M parameters); the mnist one is difflab's default
    MNIST network (the same parameters as `difflab train` builds for 28x28 images)."""
    from diffusers import UNet2DModel

    from difflab.nn import build_network, default_network
    assert sum(p.numel() for p in UNet2DModel(**bench.MODELS["cifar10"]).parameters()) == 35_746_307
    default = sum(p.numel() for p in build_network(default_network((1, 28, 28))).parameters())
    assert sum(p.numel() for p in UNet2DModel(**bench.MODELS["mnist"]).parameters()) == default


def test_throughput_quick(bench, tmp_path, capsys):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert bench.main(["--quick", "--batch", "4", "--steps", "1", "--warmup", "1", "--compile", "eager",
                           "--sampling", "--sample-n", "4", "--sample-steps", "2",
                           "--procs", "2", "--out", str(tmp_path / "tp.json")]) == 0
    finally:
        torch.set_num_threads(threads)
    r = json.loads((tmp_path / "tp.json").read_text())
    assert r["output_difference"] < 1e-5
    assert r["step_flops"]["difflab"] > 0
    assert abs(r["step_flops"]["difflab"] / r["step_flops"]["diffusers"] - 1) < 0.02
    assert len(r["training"]) == 2 * 2 * 2   # networks x precisions x formats
    assert all(0 < row["peak_fraction"] < 1 and row["images_s"] > 0 for row in r["training"])
    assert r["sampling"]["difflab"] > 0 and r["processes"][0]["procs"] == 2
    out = capsys.readouterr().out
    assert "difflab / diffusers training images/s" in out and (tmp_path / "tp.md").is_file()


def test_gpu_script_quick(tmp_path):
    env = {**os.environ, "QUICK": "1", "PYTHON": sys.executable, "OUT": str(tmp_path), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu.sh")], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    r = json.loads((tmp_path / "cifar10.json").read_text())
    assert r["model"] == "cifar10" and {row["precision"] for row in r["training"]} == {"bf16"}
    assert "ratio" in (tmp_path / "cifar10.md").read_text()
    assert list((tmp_path / "mnist" / "samples").glob("*.png"))


def test_compiled_step_computes_the_eager_step(bench):
    """torch.compile (the dynamo graph capture, run by the eager backend here: no C++ compiler needed) takes the
    same training step: the losses of three steps are equal to float32 rounding."""
    cfg = bench.model_config("mnist", quick=True)
    shape = (1, cfg["sample_size"], cfg["sample_size"])
    losses = {}
    for backend in (None, "eager"):
        net = bench.build_pair(cfg)["difflab"]
        step = bench.train_step_fn(net, shape, 2, torch.device("cpu"), False, False, backend)
        losses[backend] = [float(step().detach()) for _ in range(3)]
    assert max(abs(a - b) for a, b in zip(losses[None], losses["eager"])) < 1e-5
