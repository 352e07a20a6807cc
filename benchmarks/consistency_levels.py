"""Where along the noise levels is a consistency model inconsistent?  A diagnostic of few-step students.

    python benchmarks/consistency_levels.py --teacher runs/fidelity/B10/run \\
        --student cd=runs/fewstep/consistency --student ict=runs/fewstep/consistency_training [--n 32]

Held-out MNIST digits (8000-9999) are noised to every level of consistency distillation's Karras grid (18 levels
up to sigma/alpha 80, then t = 1) with the same noise z, x_t = alpha_t x0 + sigma_t z.  For each level the RMS
distance of each student's f(x_t, t) from the teacher's own probability-flow ODE endpoint from x_t
(:class:`difflab.distill.ODEConsistencyFunction`, adaptive Dormand-Prince, ``--rtol``) is printed, beside that of
the teacher's denoiser D(x_t, t) (where a student initialised from the teacher starts) and of the clean x0.  A
perfect consistency model scores 0 at every level; a student above D's row at a level has drifted away from
its start there.  About a minute on the 2-core CPU for 32 digits.  ``--quick`` runs it on 8x8 digits with a tiny
fresh teacher (a test of the script).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "mnist"


def levels_table(teacher, students: dict, x0: torch.Tensor, seed: int = 5, rtol: float = 1e-3,
                 boundaries: int = 18) -> list[dict]:
    """One row per level of the CD grid: sigma/alpha and the RMS distances described in the module docstring."""
    from difflab.distill import ODEConsistencyFunction, karras_boundaries
    from difflab.distill.common import student_x0
    from difflab.process.forward import q_sample
    z = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    ts, sig = karras_boundaries(teacher.schedule, boundaries)
    endpoint = ODEConsistencyFunction(teacher, rtol=rtol)
    rms = lambda u, v: float((u - v).pow(2).mean().sqrt())  # noqa: E731
    rows = []
    with torch.no_grad():
        for t, s in zip(ts.tolist(), sig.tolist()):
            tt = torch.full((len(x0),), t, dtype=torch.float64)
            x_t = q_sample(teacher.schedule, x0, tt, z)
            ref = endpoint(x_t, tt)
            row = {"sigma_ratio": s, "teacher_D": rms(teacher(x_t, tt), ref)}
            row.update({name: rms(student_x0(st, x_t, tt), ref) for name, st in students.items()})
            row["x0"] = rms(x0, ref)
            rows.append(row)
    return rows


def markdown(rows: list[dict]) -> str:
    keys = [k for k in rows[0] if k != "sigma_ratio"]
    lines = ["| sigma/alpha | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    lines += [f"| {r['sigma_ratio']:.4g} | " + " | ".join(f"{r[k]:.4f}" for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def quick_models(work: Path):
    """A tiny teacher on 8x8 digits and a consistency student of it, a few steps each."""
    import difflab as dl
    from difflab.distill import distill
    data = dl.load_dataset("digits", index_range="0:256")
    kw = dict(batch_size=16, sample_every=0, progress=False, seed=0)
    den = dl.create_denoiser(data.shape, {"channels": [8, 16]}, seed=0)
    dl.train(den, data, work / "teacher", dl.TrainConfig(steps=10, **kw))
    distill(work / "teacher", work / "cd", "consistency", data, dl.TrainConfig(steps=4, **kw), boundaries=6)
    return work / "teacher", {"cd": work / "cd"}, dl.load_dataset("digits", index_range="1500:1797")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", help="the teacher run (its EMA weights)")
    ap.add_argument("--student", action="append", default=[], metavar="NAME=RUN", help="a consistency student")
    ap.add_argument("--n", type=int, default=32, help="held-out digits")
    ap.add_argument("--rtol", type=float, default=1e-3, help="tolerance of the teacher's adaptive ODE solve")
    ap.add_argument("--data-dir", default=str(DEFAULT_DATA))
    ap.add_argument("--out", help="also write the rows as JSON here")
    ap.add_argument("--quick", action="store_true", help="a tiny fresh teacher and student on 8x8 digits")
    ap.add_argument("--work", default="runs/consistency_levels", help="--quick: where its models go")
    a = ap.parse_args(argv)
    import difflab as dl
    from difflab.distill.common import load_teacher
    from difflab.errors import DifflabError
    try:
        if a.quick:
            teacher_run, runs, held = quick_models(Path(a.work))
        else:
            if not a.teacher or not a.student:
                raise DifflabError("give --teacher RUN and at least one --student NAME=RUN")
            if any("=" not in s for s in a.student):
                raise DifflabError(f"--student takes NAME=RUN, got {[s for s in a.student if '=' not in s][0]!r}")
            teacher_run, runs = a.teacher, dict(s.split("=", 1) for s in a.student)
            held = dl.load_dataset("mnist", a.data_dir, "8000:10000")
        teacher = load_teacher(teacher_run)
        students = {name: dl.load(run) for name, run in runs.items()}
    except DifflabError as e:
        raise SystemExit(f"error: {e}") from None
    start = time.perf_counter()
    rows = levels_table(teacher, students, held.x[: a.n].float(), rtol=a.rtol)
    print(markdown(rows))
    print(f"\n{len(rows)} levels, {a.n} digits, {time.perf_counter() - start:.0f} s")
    if a.out:
        from difflab.io import atomic_write_json
        atomic_write_json(Path(a.out), {"rows": rows, "args": vars(a)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
