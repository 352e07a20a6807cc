"""Training and sampling throughput of difflab's UNet against diffusers' UNet2DModel of the same configuration,
the fraction of the device's peak FLOP rate a training step reaches, and one against two processes.

    python benchmarks/throughput.py                                  # this CPU, the MNIST UNet (~15 min)
    python benchmarks/throughput.py --model cifar10 --device cuda --batch 128 --precisions bf16 --sampling
    python benchmarks/throughput.py --quick --out /tmp/tp.json       # tiny sizes: a check that it runs

Models, each one UNet2DModel config from which difflab's UNet is built
(:func:`difflab.interop.diffusers.unet_config_from_diffusers`); difflab's UNet loads the diffusers weights, so
the two compute the same function (the script prints the largest output difference):

* ``mnist``: the default ``difflab train`` network for 28x28 MNIST (widths 16/32/64, one res block a level,
  attention at 7x7 and in the middle, 0.69M parameters);
* ``cifar10``: google/ddpm-cifar10-32's UNet (widths 128/256/256/256, two res blocks a level, attention at
  16x16, 35.7M parameters), random weights.

A training step is what ``difflab train`` does: v-prediction denoising loss (min-SNR-5) on a batch of
synthetic images (the data does not change the arithmetic), backward, gradient clipping, fused AdamW.  Each
variant (precision fp32/bf16 autocast, memory format contiguous/channels_last, eager/``torch.compile``) is
warmed up and then timed over ``--steps`` steps; images/s = batch / step time.  Step FLOPs are counted by
``torch.utils.flop_counter.FlopCounterMode`` (matmuls and convolutions, forward and backward); the peak is a
measured float32 (and bf16) matmul rate on the same device, so the fraction is of what the hardware can do
at best here, not of a datasheet.  ``--procs 1,2`` also trains difflab's UNet with the same global batch on 1
and on 2 gloo processes (torchrun; the threads split between them) and reports images/s of each.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]

# UNet2DModel configs (the fields that differ from diffusers' defaults are spelled out)
MODELS: dict[str, dict[str, Any]] = {
    "mnist": dict(sample_size=28, in_channels=1, out_channels=1, block_out_channels=(16, 32, 64), layers_per_block=1,
                  down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
                  up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"), attention_head_dim=None,
                  norm_num_groups=8, norm_eps=1e-5, flip_sin_to_cos=True, freq_shift=0, downsample_padding=1),
    # google/ddpm-cifar10-32 unet/config.json
    "cifar10": dict(sample_size=32, in_channels=3, out_channels=3, block_out_channels=(128, 256, 256, 256),
                    layers_per_block=2, down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
                    up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"), attention_head_dim=None,
                    norm_num_groups=32, norm_eps=1e-6, flip_sin_to_cos=False, freq_shift=1, downsample_padding=0),
}
QUICK_WIDTHS = {"mnist": (8, 8, 16), "cifar10": (8, 16, 16, 16)}


def model_config(name: str, quick: bool = False) -> dict[str, Any]:
    cfg = dict(MODELS[name])
    if quick:   # the same topology at tiny widths (GroupNorm groups dividing them)
        cfg.update(block_out_channels=QUICK_WIDTHS[name], norm_num_groups=4, sample_size=8 if name == "mnist" else 16)
    return cfg


class DiffusersNet(nn.Module):
    """UNet2DModel behind difflab's network contract ``net(x, timestep) -> out``."""

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.unet = unet

    def forward(self, x: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        return self.unet(x, timestep).sample


def build_pair(cfg: dict[str, Any], seed: int = 0) -> dict[str, nn.Module]:
    """``{"difflab": UNet, "diffusers": DiffusersNet}`` of one config, difflab's loaded with diffusers' weights."""
    from diffusers import UNet2DModel

    from difflab.interop.diffusers import diffusers_to_difflab_keys, unet_config_from_diffusers
    from difflab.nn import build_network
    torch.manual_seed(seed)
    unet = UNet2DModel(**cfg)
    ours = build_network({"type": "unet", **unet_config_from_diffusers(dict(unet.config))})
    ours.load_state_dict({diffusers_to_difflab_keys(k): v for k, v in unet.state_dict().items()})
    return {"difflab": ours, "diffusers": DiffusersNet(unet)}


def output_difference(pair: dict[str, nn.Module], shape: tuple[int, ...]) -> float:
    """max |difflab - diffusers| of the two networks' outputs on one random batch (float32, CPU)."""
    g = torch.Generator().manual_seed(1)
    x, t = torch.randn((2, *shape), generator=g), torch.tensor([10.0, 700.0])
    with torch.no_grad():
        return float((pair["difflab"](x, t) - pair["diffusers"](x, t)).abs().max())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _denoiser(net: nn.Module):
    from difflab.denoisers import Denoiser
    from difflab.process import get_schedule
    return Denoiser(net, get_schedule("cosine", T=1000), "v")


def train_step_fn(net: nn.Module, shape: tuple[int, ...], batch: int, device: torch.device, bf16: bool,
                  channels_last: bool, compile_backend: str | None):
    """A closure taking one ``difflab train`` step of ``net`` (moved to ``device``) on synthetic images."""
    from difflab.devices import autocast, to_memory_format
    from difflab.losses import denoising_loss
    net = net.to(device).train()
    if channels_last:
        net.to(memory_format=torch.channels_last)
    step_net = torch.compile(net, backend=compile_backend) if compile_backend else net
    den = _denoiser(step_net)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4, fused=device.type in ("cpu", "cuda"))
    g = torch.Generator().manual_seed(0)
    x0 = to_memory_format(torch.rand((batch, *shape), generator=g).mul(2).sub(1).to(device), channels_last)

    def step() -> torch.Tensor:
        t = den.schedule.sample_t(batch, generator=g)
        eps = to_memory_format(torch.randn(x0.shape, generator=g).to(device), channels_last)
        with autocast(device, bf16):
            loss = denoising_loss(den, x0, t, eps, "min_snr").mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        return loss
    return step


def time_steps(step, steps: int, warmup: int, device: torch.device) -> float:
    """Seconds per call of ``step`` after ``warmup`` calls (compilation, allocator, caches)."""
    for _ in range(warmup):
        step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return (time.perf_counter() - start) / steps


def step_flops(net: nn.Module, shape: tuple[int, ...], batch: int, device: torch.device) -> int:
    """FLOPs of one float32 training step (forward and backward of the loss; the optimizer's are negligible),
    counted by ``FlopCounterMode`` (it counts the operators, whatever the device)."""
    from torch.utils.flop_counter import FlopCounterMode
    step = train_step_fn(net, shape, batch, device, False, False, None)
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def peak_flops(device: torch.device, n: int, repeats: int, dtype: torch.dtype = torch.float32) -> float:
    """The best FLOP rate of an n x n matmul (2 n^3 FLOPs) over ``repeats`` timed runs."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def sampling_rate(net: nn.Module, shape: tuple[int, ...], n: int, steps: int, device: torch.device, bf16: bool) -> float:
    """Images per second of difflab's DDIM (``steps`` steps) through ``net`` (the same sampler for both networks)."""
    from difflab.devices import autocast
    from difflab.sampling import sample
    den = _denoiser(net.to(device).eval())
    with autocast(device, bf16):
        sample(den, n=min(n, 4), shape=shape, steps=2, progress=False, batch_size=n)   # warm-up
        _sync(device)
        start = time.perf_counter()
        sample(den, n=n, shape=shape, steps=steps, progress=False, batch_size=n)
        _sync(device)
    return n / (time.perf_counter() - start)


def ddp_worker(args: argparse.Namespace) -> NoReturn:
    """One rank of the several-process measurement (started by torchrun): its share of the global batch through
    DistributedDataParallel; rank 0 writes images/s of the global batch to ``--ddp-out``."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from difflab import distributed
    torch.set_num_threads(max(1, args.threads))
    device = torch.device(args.device)
    distributed.init_from_env(device)
    cfg = model_config(args.model, args.quick)
    shape = (cfg["in_channels"], cfg["sample_size"], cfg["sample_size"])
    from difflab.interop.diffusers import unet_config_from_diffusers
    from difflab.nn import build_network
    torch.manual_seed(0)
    net = build_network({"type": "unet", **unet_config_from_diffusers(cfg)})   # diffusers not even imported
    local = args.batch // distributed.world()
    ddp = DistributedDataParallel(net.to(device)) if distributed.world() > 1 else net
    step = train_step_fn(ddp, shape, local, device, False, False, None)
    seconds = time_steps(step, args.steps, args.warmup, device)
    if distributed.is_main():
        Path(args.ddp_out).write_text(json.dumps({"procs": distributed.world(), "step_s": seconds,
                                                  "images_s": args.batch / seconds}))
    del step, ddp           # DDP's reducer holds the process group: let it go before the group is destroyed
    gc.collect()
    if dist.is_initialized():
        distributed.barrier()   # no rank leaves the group while another still uses it
        dist.destroy_process_group()
    # Measured and written: leave without the interpreter's teardown, where gloo's C++ threads once aborted a
    # rank in CI ("terminate called without an active exception", SIGABRT) after the work was done.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def processes_rate(args: argparse.Namespace, procs: int, work: Path) -> dict[str, Any]:
    """images/s of difflab's UNet at the global ``--batch`` on ``procs`` gloo processes sharing the CPU's threads."""
    out = work / f"ddp_{procs}.json"
    threads = max(1, (os.cpu_count() or 1) // procs)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(procs),
           __file__, "--ddp-worker", "--ddp-out", str(out), "--model", args.model, "--batch", str(args.batch),
           "--steps", str(args.steps), "--warmup", str(args.warmup), "--threads", str(threads), "--device", "cpu"]
    cmd += ["--quick"] * args.quick
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{procs}-process run failed:\n{proc.stderr[-3000:]}")
    return {**json.loads(out.read_text()), "threads_per_process": threads}


def run(args: argparse.Namespace) -> dict[str, Any]:
    from difflab.devices import resolve_device
    device = resolve_device(args.device)
    cfg = model_config(args.model, args.quick)
    shape = (cfg["in_channels"], cfg["sample_size"], cfg["sample_size"])
    pair = build_pair(cfg)
    n_params = sum(p.numel() for p in pair["difflab"].parameters())
    report: dict[str, Any] = {"device": str(device), "model": args.model, "params": n_params, "batch": args.batch,
                              "threads": torch.get_num_threads(), "torch": torch.__version__,
                              "output_difference": output_difference(pair, shape)}
    n = 4096 if device.type == "cuda" else 2048
    n = 128 if args.quick else n
    report["peak_flops"] = {"fp32": peak_flops(device, n, 3 if args.quick else 10)}
    if device.type == "cuda" or not args.quick:
        report["peak_flops"]["bf16"] = peak_flops(device, n, 3 if args.quick else 10, torch.bfloat16)
    report["step_flops"] = {name: step_flops(net, shape, args.batch, device) for name, net in pair.items()}
    rows = []
    for name in ("difflab", "diffusers"):
        for precision in args.precisions.split(","):
            for fmt in args.formats.split(","):
                for compiled in args.compile.split(","):
                    pair = build_pair(cfg)   # fresh weights and optimizer for every variant
                    backend = args.compile_backend if compiled == "compile" else None
                    step = train_step_fn(pair[name], shape, args.batch, device, precision == "bf16",
                                         fmt == "channels_last", backend)
                    seconds = time_steps(step, args.steps, args.warmup, device)
                    peak = report["peak_flops"].get(precision, report["peak_flops"]["fp32"])
                    row = {"net": name, "precision": precision, "format": fmt, "compile": compiled, "step_s": seconds,
                           "images_s": args.batch / seconds,
                           "peak_fraction": report["step_flops"][name] / seconds / peak}
                    rows.append(row)
                    print(_row_text(row), flush=True)
    report["training"] = rows
    if args.sampling:
        report["sampling"] = {name: sampling_rate(net, shape, args.sample_n, args.sample_steps, device,
                                                  "bf16" in args.precisions.split(","))
                              for name, net in build_pair(cfg).items()}
    if args.procs:
        work = Path(args.out).parent if args.out else Path("/tmp")
        work.mkdir(parents=True, exist_ok=True)
        report["processes"] = [processes_rate(args, int(p), work) for p in args.procs.split(",")]
    return report


def _row_text(r: dict[str, Any]) -> str:
    return (f"| {r['net']} | {r['precision']} | {r['format']} | {r['compile']} | {r['step_s'] * 1000:.1f} | "
            f"{r['images_s']:.1f} | {100 * r['peak_fraction']:.1f}% |")


def summary(report: dict[str, Any]) -> str:
    """The markdown of a report (the tables BENCHMARKS.md holds)."""
    peak = ", ".join(f"{k} {v / 1e9:.1f} GFLOP/s" for k, v in report["peak_flops"].items())
    lines = [f"{report['model']} UNet, {report['params'] / 1e6:.2f}M parameters, batch {report['batch']}, "
             f"{report['device']} ({report['threads']} threads), torch {report['torch']}; measured matmul peak: {peak}; "
             f"step FLOPs: " + ", ".join(f"{k} {v / 1e9:.2f} GFLOP" for k, v in report["step_flops"].items())
             + f"; max output difference difflab vs diffusers on the same weights: {report['output_difference']:.2e}",
             "", "| network | precision | memory format | compile | step (ms) | images/s | of peak |",
             "| --- | --- | --- | --- | --- | --- | --- |", *map(_row_text, report["training"])]
    rows = {(r["precision"], r["format"], r["compile"]): r for r in report["training"] if r["net"] == "diffusers"}
    ratios = [f"{'/'.join(k)}: {r['images_s'] / rows[k]['images_s']:.2f}x" for r in report["training"]
              if r["net"] == "difflab" and (k := (r["precision"], r["format"], r["compile"])) in rows]
    lines += ["", "difflab / diffusers training images/s: " + ", ".join(ratios)]
    if "sampling" in report:
        s = report["sampling"]
        lines.append(f"sampling (DDIM) images/s: difflab {s['difflab']:.1f}, diffusers {s['diffusers']:.1f}, "
                     f"ratio {s['difflab'] / s['diffusers']:.2f}x")
    for p in report.get("processes", []):
        lines.append(f"{p['procs']} process(es) x {p['threads_per_process']} threads: {p['images_s']:.1f} images/s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", choices=sorted(MODELS), default="mnist")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=20, help="timed steps per variant")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--precisions", default="fp32,bf16")
    p.add_argument("--formats", default="contiguous,channels_last")
    p.add_argument("--compile", default="eager,compile", help="eager, compile or both")
    p.add_argument("--compile-backend", default="inductor")
    p.add_argument("--sampling", action="store_true", help="also sampling images/s (DDIM)")
    p.add_argument("--sample-n", type=int, default=128)
    p.add_argument("--sample-steps", type=int, default=50)
    p.add_argument("--procs", default="1,2", help="also images/s on these numbers of gloo processes ('' : none)")
    p.add_argument("--threads", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--quick", action="store_true", help="tiny widths and sizes: a check that it runs")
    p.add_argument("--out", help="write the report as JSON here (and the markdown beside it)")
    p.add_argument("--ddp-worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--ddp-out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.ddp_worker:
        return ddp_worker(args)
    report = run(args)
    text = summary(report)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=1))
        Path(args.out).with_suffix(".md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
