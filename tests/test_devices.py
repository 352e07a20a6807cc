"""Devices: choosing one, noise that does not depend on it, the CPU path unchanged, GPU paths where present.

The CPU path is guarded bit for bit by tests/test_fixed_samples.py (its hashes were not changed by the device
plumbing) and here by an explicit ``device="cpu"``.  The CUDA and MPS tests compare with the CPU and are
skipped, with the reason, on machines without them.
"""
import ctypes
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import difflab as dl
from difflab.cli import main
from difflab.devices import OnDevice, autocast, module_device, resolve_device, to_memory_format
from difflab.errors import DifflabError
from difflab.sampling.noise import SampleNoise, sample_seed
from difflab.train import session

FIXED = Path(__file__).parent / "data" / "fixed_checkpoint"   # a frozen 8x8 UNet (tests/test_fixed_samples.py)

ACCELERATORS = [
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here")),
    pytest.param("mps", marks=pytest.mark.skipif(not (hasattr(torch.backends, "mps")
                                                      and torch.backends.mps.is_available()), reason="no MPS here")),
]


@pytest.fixture(autouse=True)
def one_thread():
    """Two threads on two busy cores are many times slower for these tiny networks."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_resolve_device_names_and_refusals():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else
                                           "mps" if torch.backends.mps.is_available() else "cpu")
    with pytest.raises(DifflabError, match="unknown device 'tpu'"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(DifflabError, match="no CUDA GPU"):
            resolve_device("cuda")
    if not torch.backends.mps.is_available():
        with pytest.raises(DifflabError, match="MPS is not available"):
            resolve_device("mps")


def test_cuda_names_are_checked_before_any_gpu_is_touched(monkeypatch):
    """With two (pretended) GPUs: plain cuda takes the GPU of LOCAL_RANK, a bad index is one line, and an explicit
    index under torchrun is refused (every rank would take the same GPU)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert resolve_device("cuda") == torch.device("cuda", 1)
    assert resolve_device("cuda:0") == torch.device("cuda", 0)
    with pytest.raises(DifflabError, match="bad device 'cuda:x'"):
        resolve_device("cuda:x")
    with pytest.raises(DifflabError, match="only 2 GPU"):
        resolve_device("cuda:2")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(DifflabError, match="under torchrun give plain cuda"):
        resolve_device("cuda:0")


def test_sample_noise_is_drawn_on_the_cpu_and_moved():
    """Row i is torch.randn from the CPU generator seeded with sample_seed(seed, i), wherever it is delivered
    (the meta device stands in for an accelerator: it has shapes but no values)."""
    z = SampleNoise(7, range(3, 6)).randn((2, 4))
    for row, i in zip(z, range(3, 6)):
        assert torch.equal(row, torch.randn((2, 4), generator=torch.Generator().manual_seed(sample_seed(7, i))))
    noise = SampleNoise(7, range(3, 6), "meta")
    meta = noise.randn((2, 4))
    assert meta.device.type == "meta" and meta.shape == (3, 2, 4)
    assert all(g.device.type == "cpu" for g in noise.generators)


def test_explicit_cpu_device_gives_the_same_samples_bit_for_bit():
    den = dl.load(FIXED)
    a = dl.sample(den, n=3, steps=4, seed=1, progress=False)
    b = dl.sample(den, n=3, steps=4, seed=1, progress=False, device="cpu")
    assert module_device(den) == torch.device("cpu") and torch.equal(a.x, b.x)


@pytest.mark.parametrize("device", ACCELERATORS)
def test_samples_on_an_accelerator_equal_the_cpu_ones(device):
    """Same per-sample noise, same network: the samples agree to float32 kernel differences (1e-4)."""
    den = dl.load(FIXED)
    cpu = dl.sample(den, n=4, sampler="euler_ancestral", steps=6, seed=2, progress=False)
    acc = dl.sample(den.to(device), n=4, sampler="euler_ancestral", steps=6, seed=2, progress=False)
    assert acc.x.device.type == "cpu" and (acc.x - cpu.x).abs().max() < 1e-4


@pytest.mark.parametrize("device", ACCELERATORS)
def test_training_on_an_accelerator_follows_the_cpu_run(device, tmp_path):
    """The same batches, times and noise (drawn on the CPU) on either device: losses agree to 1e-4 over 5 steps."""
    data = dl.load_dataset("digits", index_range="0:64")
    losses = {}
    for dev in ("cpu", device):
        den = dl.create_denoiser(data.shape, {"channels": [8, 16]}, seed=0)
        dl.train(den, data, tmp_path / dev, steps=5, batch_size=8, device=dev, progress=False, sample_every=0,
                 sample_n=2, sample_steps=2, log_every=1)
        losses[dev] = [json.loads(line)["loss"] for line in (tmp_path / dev / "log.jsonl").read_text().splitlines()]
    assert max(abs(a - b) for a, b in zip(losses["cpu"], losses[device])) < 1e-4


def test_channels_last_training_equals_the_default_layout(tmp_path):
    """channels_last changes strides, not values: the network's convolutions take NHWC weights and the losses
    agree with the default layout to float32 kernel differences (1e-5)."""
    data = dl.load_dataset("digits", index_range="0:64")
    losses = {}
    for cl in (False, True):
        den = dl.create_denoiser(data.shape, {"channels": [8, 16]}, seed=0)
        dl.train(den, data, tmp_path / str(cl), steps=4, batch_size=8, channels_last=cl, progress=False,
                 sample_every=0, sample_n=2, sample_steps=2, log_every=1)
        losses[cl] = [json.loads(line)["loss"] for line in (tmp_path / str(cl) / "log.jsonl").read_text().splitlines()]
        convs = [p for p in den.net.parameters() if p.ndim == 4 and p.shape[1] > 1 and p.shape[-1] > 1]
        assert convs and all(p.is_contiguous(memory_format=torch.channels_last) == cl for p in convs)
    assert max(abs(a - b) for a, b in zip(losses[False], losses[True])) < 1e-5
    x = torch.zeros(2, 3, 4, 5)
    assert to_memory_format(x, True).stride() == (60, 1, 15, 3) and to_memory_format(x, False) is x


def test_autocast_follows_the_device_type():
    lin = torch.nn.Linear(4, 4)
    with autocast("cpu", True):
        assert lin(torch.ones(1, 4)).dtype == torch.bfloat16
    with autocast("cpu", False):
        assert lin(torch.ones(1, 4)).dtype == torch.float32


def test_session_reads_tensor_terms_only_at_log_steps_and_logs_what_floats_log(tmp_path):
    """A trainer may report 0-d tensors (no device synchronisation a step): the log records equal those of the
    same values reported as Python floats, bit for bit (float64 sums in both)."""
    # magnitudes far apart: a float32 sum would round where the float64 one does not
    values = torch.tensor([1.0, 1e-7, 3e-8, 2.0, 1e-6, 5e-9])
    cfg = session.LoopConfig(steps=6, log_every=3, sample_every=0, progress=False, ckpt_every_minutes=100)
    records = {}
    for kind in ("float", "tensor"):
        out = tmp_path / kind
        with session.Session(out, cfg, 0, lambda step: out, lambda tag: None) as s:
            for step in range(6):
                v = values[step]
                s.after_step(step + 1, {"loss": float(v) if kind == "float" else v},
                             extra={"grad_norm": 2 * v if kind == "tensor" else 2 * float(v)})
        records[kind] = [{k: r[k] for k in ("step", "loss", "grad_norm")} for r in s.history]
    assert records["float"] == records["tensor"] and [r["step"] for r in records["tensor"]] == [3, 6]
    assert records["tensor"][0]["loss"] == sum(float(v) for v in values[:3]) / 3


def test_on_device_moves_inputs_and_outputs_and_keeps_gradients():
    den = dl.load(FIXED)
    wrapped = OnDevice(den, "cpu")
    x = torch.randn(2, 1, 8, 8, dtype=torch.float32, requires_grad=True)
    t = torch.tensor([0.3, 0.7], dtype=torch.float64)
    out = wrapped(x, t)
    assert torch.equal(out, den(x, t)) and out.device == x.device and wrapped.schedule is den.schedule
    out.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_cli_device_option(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(f"train --data digits --index-range 0:32 --channels 8 --layers-per-block 1 --attention-levels 0 "
                f"--steps 2 --batch-size 4 --sample-every 0 --no-progress --device cpu --out {run}".split()) == 0
    assert main(f"sample {run} --n 2 --steps 2 --no-progress --device cpu --out {tmp_path / 's'}".split()) == 0
    if not torch.cuda.is_available():
        assert main(f"sample {run} --n 2 --steps 2 --no-progress --device cuda --out {tmp_path / 's'}".split()) == 2
        assert "no CUDA GPU" in capsys.readouterr().err


# -- keep_freed_cpu_memory ------------------------------------------------------------------------
_FAULTS = """
import resource, sys, torch
from difflab.devices import keep_freed_cpu_memory
print(keep_freed_cpu_memory())
x = torch.ones(16 * 2**20)             # 64 MiB, above glibc's largest mmap threshold (32 MiB)
del x
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    x = torch.ones(16 * 2**20)
    del x
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _thp_always() -> bool:
    """Transparent huge pages on every mapping: a fresh 64 MiB map then faults 32 times, not 16,384."""
    try:
        return "[always]" in open("/sys/kernel/mm/transparent_hugepage/enabled").read()
    except OSError:
        return False


@pytest.mark.skipif(not (sys.platform.startswith("linux") and hasattr(ctypes.CDLL(None), "mallopt")),
                    reason="needs glibc's mallopt")
@pytest.mark.skipif(_thp_always(), reason="transparent huge pages always on: page faults do not show the effect")
def test_keep_freed_cpu_memory_stops_page_faults_on_large_tensors():
    """Ten 64 MiB tensors allocated and freed: by default glibc maps each afresh (16,384 page faults each,
    ~160,000 in all); with the setting the second and later reuse the heap (a few hundred faults)."""
    def faults(keep: str) -> tuple[str, int]:
        out = subprocess.run([sys.executable, "-c", _FAULTS], capture_output=True, text=True, check=True,
                             env={**os.environ, "DIFFLAB_KEEP_FREED_MEMORY": keep}).stdout.split()
        return out[0], int(out[1])
    on, off = faults("1"), faults("0")
    assert on[0] == "True" and off[0] == "False" and off[1] > 100_000, off
    assert on[1] < 0.1 * off[1], (on, off)
