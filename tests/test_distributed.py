"""Several processes (torchrun, gloo on the CPU): two ranks train and sample as one process does.

One ``torch.distributed.run`` launch of two ranks runs every multi-process command (tests/distributed_worker.py);
the one-process runs they are compared with run in this process.  The model is a tiny UNet on scikit-learn's
8x8 digits, through the CLI (so ``setup_device`` and the environment rendezvous are exercised too).

The runs are compared by what they compute: the denoiser's x0_hat of the model and of its EMA on a
fixed noised batch, within 1e-5 absolute.  Two ranks compute the gradient of the global mean loss as the average
of two half-batch means (DDP's all-reduce), one process as one mean over the batch: the same sum in another
order, ~1e-7 relative, and the outputs after ten Adam steps of lr 1e-2 agree to ~1.5e-6.  (The raw weights are
not compared: a conv bias followed by a one-channel GroupNorm has a gradient that is zero but for rounding
noise, which Adam's normalisation turns into steps of ~lr in either direction; the bias has no effect on the
output.)  A wrong split of the batch (both ranks on the same half) moves the outputs by ~1e-2, three orders
above the tolerance (checked by breaking :func:`difflab.distributed.shard` once).
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from difflab import distributed
from difflab.cli import main
from difflab.data import load_dataset
from difflab.errors import DifflabError
from difflab.experiments import run_sweep
from difflab.process import q_sample
from difflab.train import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ("train --data digits --index-range 0:64 --channels 8,16 --layers-per-block 1 --attention-levels 1 "
         "--timesteps 100 --batch-size 8 --lr 1e-2 --warmup 1 --ema-decay 0.9 --sample-every 0 --log-every 5 "
         "--ckpt-every-minutes 100 --seed 3 --no-progress --device cpu")
SAMPLE = "sample {run} --n 7 --batch-size 3 --steps 4 --seed 5 --no-progress --device cpu --out {out}"
TOL = 1e-5


SWEEP = {"name": "ranks", "seed": 0, "data": {"kind": "toy2d", "name": "eight_gaussians", "n": 2000},
         "network": {"type": "mlp", "hidden": 16, "layers": 2, "fourier": 4},
         "train": {"batch_size": 64, "lr": 3e-3, "warmup": 5, "log_every": 10}, "stages": [1.0],
         "grid": {"schedule": ["cosine", "edm"], "prediction": ["eps"], "weighting": ["uniform"],
                  "budget": [{"steps": 20}]},
         "sampling": {"samplers": ["ddim"], "nfe": [5], "n": 200}}


def _run(out: Path, steps: int, resume: bool = False) -> str:
    return f"{TRAIN} --out {out} --steps {steps}" + " --resume" * resume


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Two threads on two busy cores are many times slower for these tiny networks."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, one_thread):
    """one: one process, 10 steps; two: two ranks, 10 steps; two_then_one: two ranks to step 5, resumed on one
    process; one_then_two: one process to step 5, resumed on two ranks; samples of 'two' on two ranks and on one;
    a two-variant sweep on two ranks and on one."""
    root = tmp_path_factory.mktemp("ddp")
    r = {k: root / k for k in ("one", "two", "two_then_one", "one_then_two", "s_two", "s_one", "sweep_two",
                               "sweep_one")}
    (root / "sweep.yaml").write_text(json.dumps(SWEEP))   # JSON is YAML
    assert main(_run(r["one"], 10).split()) == 0
    assert main(_run(r["one_then_two"], 5).split()) == 0
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(ROOT / "tests" / "distributed_worker.py"),
           _run(r["two"], 10), _run(r["two_then_one"], 5), _run(r["one_then_two"], 10, resume=True),
           SAMPLE.format(run=r["two"], out=r["s_two"]),
           f"sweep {root / 'sweep.yaml'} --out {r['sweep_two']} --no-progress --device cpu"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert main(_run(r["two_then_one"], 10, resume=True).split()) == 0
    assert main(SAMPLE.format(run=r["two"], out=r["s_one"]).split()) == 0
    run_sweep(SWEEP, r["sweep_one"], progress=False, report=False)
    return r


def _x0_hat(path: Path, which: str = "model", step: int = 10) -> torch.Tensor:
    """The denoiser's x0_hat of a fixed batch of digits noised at fixed random times."""
    ck = load_checkpoint(path)
    assert ck.step == step
    den = ck.denoiser(which)
    g = torch.Generator().manual_seed(0)
    x0 = load_dataset("digits", None, "0:16").x
    t = 0.05 + 0.9 * torch.rand(16, generator=g, dtype=torch.float64)
    with torch.no_grad():
        return den(q_sample(den.schedule, x0, t, generator=g), t)


def test_two_ranks_with_half_batches_take_the_steps_of_one_process(runs):
    for which in ("model", "ema"):
        assert (_x0_hat(runs["one"], which) - _x0_hat(runs["two"], which)).abs().max() < TOL
    # the runs did move: the tolerance is far below what five steps change
    start = _x0_hat(runs["one_then_two"] / "checkpoints" / "step_0000005", step=5)
    assert (start - _x0_hat(runs["one"])).abs().max() > 100 * TOL
    # rank 0 alone logged (one record per log step), the loss averaged over the ranks
    logs = [[json.loads(line) for line in open(runs[k] / "log.jsonl")] for k in ("one", "two")]
    assert [r["step"] for r in logs[1]] == [r["step"] for r in logs[0]] == [5, 10]
    for a, b in zip(*logs):
        assert abs(a["loss"] - b["loss"]) < 1e-5 and abs(a["grad_norm"] - b["grad_norm"]) < 1e-4


def test_resume_with_another_number_of_processes(runs):
    one = _x0_hat(runs["one"])
    for k in ("two_then_one", "one_then_two"):
        assert (one - _x0_hat(runs[k])).abs().max() < TOL
        assert (_x0_hat(runs["one"], "ema") - _x0_hat(runs[k], "ema")).abs().max() < TOL


def test_split_sampling_equals_one_process(runs):
    """Rank 0 draws samples 0-3, rank 1 samples 4-6 (batches of 3); per-sample noise makes them the samples one
    process draws, up to the float differences of other batch compositions in the network (~1e-7)."""
    two, one = (np.load(next(runs[k].glob("*.npz")))["samples"] for k in ("s_two", "s_one"))
    assert two.shape == one.shape == (7, 1, 8, 8)
    assert np.abs(two - one).max() < 1e-5
    assert len(list(runs["s_two"].glob("*.npz"))) == 1


def test_blocks_and_shards_partition_the_indices():
    for n, w in ((7, 2), (10, 3), (2, 4)):
        blocks = [distributed.block(n, r, w) for r in range(w)]
        assert [i for b in blocks for i in b] == list(range(n))
        assert max(map(len, blocks)) - min(map(len, blocks)) <= 1
    assert [distributed.shard(8, r, 2) for r in range(2)] == [slice(0, 4), slice(4, 8)]
    with pytest.raises(DifflabError, match="does not split evenly"):
        distributed.shard(7, 0, 2)
    assert distributed.my_share(list("abcde"), 1, 2) == ["b", "d"]
    # one process: rank 0 of 1, everything its own
    assert (distributed.world(), distributed.rank(), distributed.block(5)) == (1, 0, range(5))


def test_sweep_variants_spread_over_ranks(runs):
    """Each rank trains its own variants alone (rank 0 cosine, rank 1 edm): each variant trained once (two log
    records of its 20 steps, not four), its results those of one process (the same seeded run, bit for bit in
    the quality numbers), and the report written once."""
    for v in ("cosine-eps-uniform-20st", "edm-eps-uniform-20st"):
        log = (runs["sweep_two"] / "variants" / v / "run" / "log.jsonl").read_text().splitlines()
        assert [json.loads(line)["step"] for line in log] == [10, 20]
        two, one = (json.loads((runs[k] / "variants" / v / "result.json").read_text()) for k in ("sweep_two",
                                                                                                  "sweep_one"))
        assert two["quality"] == [{**q, "seconds": two["quality"][i]["seconds"]} for i, q in enumerate(one["quality"])]
    assert (runs["sweep_two"] / "report" / "report.md").is_file()
