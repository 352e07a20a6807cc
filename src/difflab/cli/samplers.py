"""``difflab samplers``: the registry of samplers and their facts."""
from __future__ import annotations

import argparse

NAME = "samplers"
HELP = "list the samplers"


def add_arguments(p: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    from ..sampling import SAMPLERS
    print(f"{'name':<16}{'order':>5}{'NFE/step':>9}  {'kind':<27}summary")
    for name, info in sorted(SAMPLERS.items()):
        if isinstance(info.stochastic, str):
            kind = f"stochastic if {info.stochastic} > 0"
        else:
            kind = "stochastic" if info.stochastic else "deterministic"
        nfe = "adapt." if info.adaptive else str(info.nfe_of_step())
        rec = [f"--grid {info.grid}"] if info.grid != "default" else []
        if info.sigma_max is not None:
            rec.append(f"--sigma-max {info.sigma_max:g}")
        rec += [f"--opt {k}={v}" for k, v in info.recommended.items()]
        print(f"{name:<16}{info.order:>5}{nfe:>9}  {kind:<27}{info.summary}")
        print(f"{'':<37}options: {', '.join(info.options) or '-'}" + (f"; recommended: {' '.join(rec)}" if rec else ""))
    return 0
