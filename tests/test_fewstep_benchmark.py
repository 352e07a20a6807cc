"""``benchmarks/fewstep.py --quick``: every phase at toy sizes (teacher, classifier, the four methods, the
evaluation, the 2-step midpoint search), the midpoint chosen on the other sampling seed and read by the target
lines, and a rerun that skips every finished phase."""
import json

from bench_support import load_script


def test_quick_mode_runs_every_phase_chooses_the_midpoint_on_another_seed_and_resumes(tmp_path, capsys):
    bench = load_script("benchmarks/fewstep.py")
    args = ["--quick", "--work", str(tmp_path), "--no-progress"]
    calls, inner = [], bench.evaluate

    def spy(den, setting, a, *rest):
        calls.append((setting.get("sigma_ratios"), a.seed))
        return inner(den, setting, a, *rest)
    bench.evaluate = spy
    assert bench.main(args) == 0
    midpoint_calls = [c for c in calls if c[0] is not None]   # the search on seed 1, each report on seed 0
    assert len(midpoint_calls) == 2 * (len(bench.MIDPOINTS) + 1) == 18
    for k in range(2):
        block = midpoint_calls[k * 9:(k + 1) * 9]
        assert {seed for _, seed in block[:-1]} == {1} and block[-1][1] == 0
    assert all(seed == 0 for level, seed in calls if level is None)   # the other rows: the reported seed
    for name in ("teacher", "classifier", "evaluate", "midpoint", *(f"distill_{m}" for m in bench.METHODS)):
        assert (tmp_path / f"{name}.json").is_file(), name
    ev = json.loads((tmp_path / "evaluate.json").read_text())
    assert {r["target_nfe"] for r in ev["teacher"]} == set(bench.TEACHER_NFE)
    assert all([r["steps"] for r in ev["students"][m]] == list(bench.STUDENT_STEPS) for m in ("consistency", "reflow"))
    mid = json.loads((tmp_path / "midpoint.json").read_text())["methods"]
    assert set(mid) == {"consistency", "consistency_training"}
    for method, m in mid.items():
        assert [r["sigma_mid"] for r in m["search"]] == list(bench.MIDPOINTS) and m["choose_seed"] == 1
        assert m["sigma_mid"] == min(m["search"], key=lambda r: r["fd"])["sigma_mid"]   # argmin on seed 1
        assert m["reported"]["nfe"] == 2 and m["reported"]["sigma_ratios"] == str(m["sigma_mid"])
    text = (tmp_path / "summary.md").read_text()
    for method, m in mid.items():                                             # the target reads the chosen level
        assert f"* {method}: 2-step FD {m['reported']['fd']:.2f} (re-noised to sigma/alpha {m['sigma_mid']}) vs" in text
    assert "re-noised to sigma/alpha" in text and (tmp_path / "fewstep_toy2d.png").stat().st_size > 1000
    capsys.readouterr()
    assert bench.main(args) == 0
    out = capsys.readouterr().out
    assert "[midpoint] done before" in out and "[evaluate] done before" in out and "[midpoint] ..." not in out


def test_a_missing_classifier_fails_at_argument_parsing(tmp_path, capsys):
    """``--classifier`` is checked while the arguments are parsed (every MNIST benchmark uses the same type):
    a wrong folder exits 2 in one line before any training."""
    import pytest
    for script in ("fewstep", "latent", "guidance", "fidelity", "mnist_budget"):
        bench = load_script(f"benchmarks/{script}.py")
        with pytest.raises(SystemExit) as e:
            bench.main(["--classifier", str(tmp_path / "nope"), "--work", str(tmp_path / script)])
        assert e.value.code == 2, script
        assert f"no classifier in {tmp_path / 'nope'}" in capsys.readouterr().err, script
        assert not (tmp_path / script).exists(), script
