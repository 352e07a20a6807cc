"""``difflab distill``: a few-step student from a trained run (:func:`difflab.distill.distill`)."""
from __future__ import annotations

import argparse
import json

from ..errors import DifflabError
from .common import add_data_args, add_loop_args, load_data, milestones_arg

NAME = "distill"
HELP = "distil a trained run into a few-step student (progressive, consistency, reflow)"

# option -> the methods it belongs to (None defaults mean "not given", so a stray one is refused)
METHOD_OPTIONS = {
    "rounds": ("progressive",), "student_steps": ("progressive",), "pd_weighting": ("progressive",),
    "boundaries": ("consistency",), "solver": ("consistency",),
    "metric": ("consistency", "consistency_training"), "sigma_max": ("consistency", "consistency_training"),
    "proposal": ("consistency", "consistency_training"), "cm_weighting": ("consistency", "consistency_training"),
    "s0": ("consistency_training",), "s1": ("consistency_training",),
    "init": ("consistency", "consistency_training", "reflow"),
    "pairs": ("reflow",), "pair_sampler": ("reflow",), "pair_steps": ("reflow",), "pair_grid": ("reflow",),
}
# CLI name -> keyword of the method's function
KEYWORDS = {"pd_weighting": "weighting", "cm_weighting": "weighting"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("teacher", help="the teacher: a run folder (latest checkpoint) or checkpoint folder")
    p.add_argument("--method", required=True,
                   help="progressive, consistency (distillation), consistency_training or reflow")
    p.add_argument("--out", required=True, help="the student's run folder (an ordinary difflab checkpoint)")
    add_data_args(p, required=False)
    p.set_defaults(data=None)
    p.add_argument("--steps", type=int, help="total optimisation steps (progressive: over all rounds)")
    p.add_argument("--minutes", type=float, help="wall-clock budget in minutes")
    p.add_argument("--resume", action="store_true", help="continue the distillation in --out")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-4, help="the students start from the teacher: a small rate")
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--ema-decay", type=float, default=0.999)
    add_loop_args(p, sample_every=0)
    g = p.add_argument_group("progressive")
    g.add_argument("--rounds", type=int, help="halvings: the teacher runs STUDENT_STEPS * 2^ROUNDS DDIM steps")
    g.add_argument("--student-steps", type=int, help="steps of the final student (default 1)")
    g.add_argument("--pd-weighting", help="truncated_snr (default) or snr_plus_one")
    g = p.add_argument_group("consistency")
    g.add_argument("--boundaries", type=int, help="distillation: N noise levels (default 18)")
    g.add_argument("--solver", help="distillation: the teacher's ODE step, heun (default) or ddim")
    g.add_argument("--metric", help="l2 (consistency's default) or pseudo_huber (consistency_training's default)")
    g.add_argument("--proposal", help="how the noise interval is drawn: uniform (consistency's default) or lognormal "
                                      "(consistency_training's, Song & Dhariwal 2023)")
    g.add_argument("--cm-weighting", help="loss weight of an interval: inverse_interval (1/its width in sigma/alpha, "
                                          "Song & Dhariwal 2023; default) or unit (Song et al. 2023's CD)")
    g.add_argument("--sigma-max", type=float, help="top noise level sigma/alpha (default 80, as Song et al.; 0: up to t = 1)")
    g.add_argument("--s0", type=int, help="training: first number of intervals of the curriculum (10)")
    g.add_argument("--s1", type=int, help="training: last number of intervals of the curriculum (1280)")
    g.add_argument("--init", help="consistency*, reflow: start from the teacher's weights (teacher, default) "
                                  "or scratch")
    g = p.add_argument_group("reflow")
    g.add_argument("--pairs", type=int, help="(noise, sample) pairs drawn from the teacher (default 4096)")
    g.add_argument("--pair-sampler", help="deterministic sampler for the pairs (default dpmpp_2m)")
    g.add_argument("--pair-steps", type=int, help="its steps (default 20)")
    g.add_argument("--pair-grid", help="its time grid (default trailing)")


def run(args: argparse.Namespace) -> int:
    from ..distill import METHODS, distill
    from ..train import TrainConfig

    if args.method not in METHODS:
        raise DifflabError(f"unknown distillation method {args.method!r}; choose from {', '.join(METHODS)}")
    options = {}
    for name, methods in METHOD_OPTIONS.items():
        value = getattr(args, name)
        if value is None:
            continue
        if args.method not in methods:
            raise DifflabError(f"--{name.replace('_', '-')} applies to --method {' / '.join(methods)}, "
                               f"not {args.method}")
        options[KEYWORDS.get(name, name)] = value
    if options.get("sigma_max") == 0:
        options["sigma_max"] = None   # the whole schedule, up to t = 1
    if args.method == "progressive" and "rounds" not in options:
        raise DifflabError("--method progressive needs --rounds K (the teacher then runs 2^K DDIM steps per "
                           "student step)")
    if args.minutes is None and args.steps is None:
        raise DifflabError("give a distillation budget: --steps N or --minutes M")
    data = load_data(args) if args.data is not None else None
    cfg = TrainConfig(steps=args.steps, minutes=args.minutes, batch_size=args.batch_size, lr=args.lr,
                      warmup=args.warmup, ema_decay=args.ema_decay, seed=args.seed, sample_every=args.sample_every,
                      ckpt_every_minutes=args.ckpt_every_minutes, progress=not args.no_progress,
                      milestones=milestones_arg(args.milestones))
    res = distill(args.teacher, args.out, args.method, data=data, config=cfg, resume=args.resume, **options)
    results = res if isinstance(res, list) else [res]
    last = results[-1] if results else None
    if last is None:
        print(f"{args.out}: nothing left to do")
        return 0
    print(json.dumps({"method": args.method, "student": str(args.out), "step": last.step,
                      "seconds": round(sum(r.seconds for r in results), 1),
                      "final_loss": round(last.final_loss, 6)}))
    return 130 if last.interrupted else 0
