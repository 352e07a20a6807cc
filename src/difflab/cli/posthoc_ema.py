"""``difflab posthoc-ema``: the EMA of any length of a finished run, chosen after training
(:func:`difflab.train.posthoc_ema.reconstruct`; the run trained with ``--posthoc-ema``)."""
from __future__ import annotations

import argparse
import json

NAME = "posthoc-ema"
HELP = "reconstruct the EMA of a chosen length from a run's post-hoc EMA snapshots"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="a run trained with --posthoc-ema")
    p.add_argument("--sigma-rel", type=float, required=True,
                   help="EMA length as the std of its averaging profile relative to training time (e.g. 0.08)")
    p.add_argument("--step", type=int, help="the step the EMA ends at (default: the last snapshot)")
    p.add_argument("--out", required=True, help="run folder to write (one checkpoint with these weights)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..errors import DifflabError
    from ..train import load_checkpoint, save_checkpoint
    from ..train.posthoc_ema import reconstruct
    run, out = Path(args.run).resolve(), Path(args.out).resolve()
    if out == run or run in out.parents:
        raise DifflabError(f"--out {args.out} is inside the run {args.run}: its checkpoint would replace the run's "
                           f"own; write it elsewhere")
    ck = load_checkpoint(args.run)
    state, report = reconstruct(args.run, args.sigma_rel, args.step)
    den = ck.denoiser("model")
    den.net.load_state_dict(state)
    training = {**ck.config.get("training", {}), "posthoc_ema_reconstruction": report}
    path = save_checkpoint(args.out, den, tuple(ck.config["data_shape"]), report["step"], ema=den.net,
                           training=training, data_kind=ck.config.get("data_kind"), encoder=ck.encoder())
    print(json.dumps({"sigma_rel": args.sigma_rel, "step": report["step"], "profile_error": round(report["profile_error"], 5),
                      "snapshots": len(report["snapshots"]), "checkpoint": str(path)}))
    return 0
