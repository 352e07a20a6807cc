"""``benchmarks/guidance.py --quick``: every phase runs at toy sizes, guided settings count both network
evaluations, the figures are written, and a rerun skips finished phases."""
import json

import pytest

from bench_support import load_script


def _load():
    return load_script("benchmarks/guidance.py")


def test_quick_mode_runs_every_phase_and_resumes(tmp_path, capsys):
    bench = _load()
    assert bench.main(["--quick", "--work", str(tmp_path), "--no-progress"]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    phases = summary["phases"]
    for model in ("short", "long"):
        for method in ("cfg", "cfg_interval", "classifier"):
            for scale in (0, 1, 3):
                r = phases[f"guide_{model}_{method}_{scale}"]
                assert 0 <= r["class_accuracy"] <= 1 and r["fd_samples"] > 0 and r["fd_floor"] < r["fd_samples"]
        # quick mode: 3 sampler steps; CFG at scale 1 is the conditional model alone, above 1 both models per step
        assert phases[f"guide_{model}_cfg_1"]["nfe"] == 3 and phases[f"guide_{model}_cfg_3"]["nfe"] == 6
        # the interval leaves the steps outside it unguided: fewer evaluations than guiding every step
        assert 3 < phases[f"guide_{model}_cfg_interval_3"]["nfe"] < 6
        # classifier guidance below sigma/alpha 80: the first step, at t = 1 of the trailing grid, is unguided
        assert phases[f"guide_{model}_classifier_3"]["nfe"] == 1 + 2 + 2
        assert {"best_fd", "settings_meeting_target"} <= set(summary["target"][model])
    # classifier guidance of the unconditional model: scale 0 is the model alone, one evaluation a step
    assert phases["guide_uncond_classifier_0"]["nfe"] == 3 and phases["guide_uncond_classifier_3"]["nfe"] == 5
    assert phases["guide_uncond_classifier_3"]["class_accuracy"] >= 0
    assert "Classifier guidance of the unconditional" in summary["markdown"]
    acc = phases["noisy_accuracy"]["accuracy_by_sigma_ratio"]
    assert list(acc) == ["0.1", "0.3", "1", "3", "10"] and all(0 <= v <= 1 for v in acc.values())
    assert {"autoguide_1", "autoguide_2", "editing"} <= set(phases)
    for png in ("guidance.png", "superres.png", "inpaint_projection.png", "inpaint_tweedie.png"):
        assert (tmp_path / png).stat().st_size > 1000, png
    capsys.readouterr()
    assert bench.main(["--quick", "--work", str(tmp_path), "--no-progress"]) == 0   # every phase recorded: none rerun
    assert "[run ]" not in capsys.readouterr().out


def test_check_seed_redraws_the_neighbourhood_of_a_met_target(tmp_path, monkeypatch):
    """Where the target is met, the CFG settings at scales 1-2 are drawn again with --check-seed and the target
    is evaluated on those draws too (forced here: toy models meet nothing)."""
    bench = _load()
    args = ["--quick", "--work", str(tmp_path), "--no-progress"]
    assert bench.main(args) == 0
    assert not list(tmp_path.glob("check_*"))                   # not met: nothing drawn again
    monkeypatch.setattr(bench, "target_settings", lambda rows: (min(q["fd_samples"] for q in rows.values()),
                                                                 [next(iter(rows))]))
    assert bench.main(args) == 0
    s = json.loads((tmp_path / "summary.json").read_text())
    for model in ("short", "long"):
        for meth in ("cfg", "cfg_interval"):          # quick scales 0, 1, 3: only 1 lies in [1, 2]
            q, first = s["phases"][f"check_{model}_{meth}_1_seed1"], s["phases"][f"guide_{model}_{meth}_1"]
            assert q["seed"] == 1 and first["seed"] == 0 and q["fd_samples"] != first["fd_samples"]
        assert s["target"][model]["check"]["seed"] == 1
    assert "Drawn again with sampling seed 1" in s["markdown"]
    with pytest.raises(SystemExit):
        bench.main(args + ["--check-seed", "0"])
