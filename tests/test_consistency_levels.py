"""benchmarks/consistency_levels.py: the per-level distances are exact for an oracle (a student that *is* the
teacher's ODE endpoint scores 0 at every level), the quick mode runs end to end, and bad arguments fail in one
line."""
import pytest
import torch

from bench_support import load_script


def test_an_exact_consistency_function_scores_zero_and_the_denoiser_does_not():
    bench = load_script("benchmarks/consistency_levels.py")
    import difflab as dl
    from difflab.distill import ODEConsistencyFunction
    from oracle_net import random_gaussian
    sch = dl.get_schedule("cosine")
    gauss, *_ = random_gaussian(sch, D=2)

    class Exact(torch.nn.Module):      # a "student" whose f is the teacher's ODE endpoint itself
        prediction, sigma_data, sigma_min, schedule = "x0", 0.5, 0.0, sch

        def __init__(self):
            super().__init__()
            self.f = ODEConsistencyFunction(gauss, rtol=1e-3)

        def raw(self, x, t, alpha_sigma=None):
            return self.f(x, t)

    x0 = gauss.sample_data(16, torch.Generator().manual_seed(0)).float()
    rows = bench.levels_table(gauss, {"exact": Exact()}, x0, boundaries=6)
    assert len(rows) == 7 and rows[-1]["sigma_ratio"] > 1e3
    assert max(r["exact"] for r in rows) < 1e-6
    assert rows[-1]["teacher_D"] > 0.1 and rows[-1]["x0"] > rows[-1]["teacher_D"]
    assert "| sigma/alpha | teacher_D | exact | x0 |" in bench.markdown(rows)


def test_quick_mode_and_bad_arguments(tmp_path, capsys):
    bench = load_script("benchmarks/consistency_levels.py")
    assert bench.main(["--quick", "--work", str(tmp_path), "--n", "4", "--out", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    assert "| sigma/alpha | teacher_D | cd | x0 |" in out and (tmp_path / "r.json").is_file()
    with pytest.raises(SystemExit, match="give --teacher RUN and at least one --student"):
        bench.main(["--teacher", str(tmp_path / "teacher")])
    with pytest.raises(SystemExit, match="--student takes NAME=RUN"):
        bench.main(["--teacher", str(tmp_path / "teacher"), "--student", "cd"])
