"""``benchmarks/fidelity.py --quick``: a run with milestones, every setting scored on the selection seed, the
chosen one and DDIM-50 drawn again on the reported seed, guided settings within 50 NFE, and a rerun that
skips finished phases."""
import json

import pytest

from bench_support import load_script


def _load():
    return load_script("benchmarks/fidelity.py")


def test_quick_mode_selects_on_one_seed_and_reports_on_another(tmp_path, capsys, monkeypatch):
    bench = _load()
    used = []
    sample = bench.dl.sample
    grids = []
    monkeypatch.setattr(bench.dl, "sample", lambda den, **kw: used.append((type(den).__name__, kw["sampler"]))
                        or grids.append(kw["grid"]) or sample(den, **kw))
    args = ["--quick", "--work", str(tmp_path), "--no-progress", "--scales", "1,2", "--guided-samplers", "ddim,sde",
            "--grids", "default,trailing"]
    assert bench.main(args) == 0
    s = json.loads((tmp_path / "summary.json").read_text())["budgets"]["10"]
    assert s["train"]["steps"] == 20 and s["train"]["options"]["milestones"] == [0.3]
    assert len(list((tmp_path / "B10" / "run" / "milestones").glob("step_*"))) == 1
    names = ["ddim-50", "ddim-25", "sde-50", "ag0.3-1", "ag0.3-2", "ag0.3-1-sde", "ag0.3-2-sde"]
    assert list(s["selection"]) == names + [f"{n}@trailing" for n in names]
    # the selection seed's draws, in order: the three base samplers, then autoguidance with DDIM and with the SDE,
    # on the default grid and then all again on the trailing grid
    assert used[:14] == 2 * ([("Denoiser", "ddim"), ("Denoiser", "ddim"), ("Denoiser", "dpmpp_2m_sde")] +
                             [("Autoguidance", "ddim")] * 2 + [("Autoguidance", "dpmpp_2m_sde")] * 2)
    assert grids[:14] == ["default"] * 7 + ["trailing"] * 7
    assert s["selection"]["ag0.3-2-sde@trailing"]["nfe"] == 4
    assert s["selection"]["ag0.3-2-sde"]["nfe"] == 4
    assert all(q["seed"] == 100 for q in s["selection"].values())
    assert set(s["reported"]) == {"ddim-50", s["chosen"]} and all(q["seed"] == 0 for q in s["reported"].values())
    # quick mode: 2 sampler steps; autoguidance at w = 1 is the model alone (1 NFE a step), above 1 both models
    assert s["selection"]["ag0.3-1"]["nfe"] == 2 and s["selection"]["ag0.3-2"]["nfe"] == 4
    q = s["reported"]["ddim-50"]
    assert q["precision_vs_floor"] == pytest.approx(q["precision_samples"] / q["precision_floor"])
    assert set(s["target"]["checks"]) >= {"precision >= 0.9 x floor", "recall >= 0.8 x floor"}
    assert (tmp_path / "B10" / "grid_ddim-50.png").stat().st_size > 500
    capsys.readouterr()
    assert bench.main(args) == 0           # every phase recorded: none rerun
    assert "[run ]" not in capsys.readouterr().out


def test_acceptable_needs_recall_balance_no_copying_and_the_fd():
    bench = _load()
    good = {"recall_vs_floor": 0.85, "class_entropy": 2.29, "nearest_train_ratio": 1.1, "fd_samples": 20.0}
    assert bench.acceptable(good)
    assert not bench.acceptable({**good, "recall_vs_floor": 0.7})
    assert not bench.acceptable({**good, "class_entropy": 2.2})
    assert not bench.acceptable({**good, "nearest_train_ratio": 0.8})
    assert bench.acceptable(good) and bench.acceptable(good, fd_limit=20.0)
    assert not bench.acceptable(good, fd_limit=19.0)     # the target's FD condition: no worse than DDIM 50's


def test_unknown_guided_sampler_is_refused_at_parsing(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        _load().main(["--quick", "--work", str(tmp_path), "--guided-samplers", "ddim,euler"])
    assert e.value.code == 2 and "unknown ['euler']" in capsys.readouterr().err


def test_unknown_grid_is_refused_at_parsing(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        _load().main(["--quick", "--work", str(tmp_path), "--grids", "default,trailng"])
    assert e.value.code == 2 and "--grids: unknown ['trailng']" in capsys.readouterr().err


def test_guidance_intervals_are_settings_of_their_own(tmp_path, monkeypatch):
    """``--intervals none,LO:HI``: each guided setting again with guidance only where sigma/alpha is in (LO, HI],
    named ``<setting>~LO_HI``; the base settings are drawn once."""
    bench = _load()
    seen = {}
    sample = bench.dl.sample
    monkeypatch.setattr(bench.dl, "sample", lambda den, **kw: seen.setdefault(kw["seed"], []).append(
        getattr(den, "interval", "unguided")) or sample(den, **kw))
    assert bench.main(["--quick", "--work", str(tmp_path), "--no-progress", "--scales", "2",
                       "--guided-samplers", "sde", "--intervals", "none,0.5:2"]) == 0
    s = json.loads((tmp_path / "summary.json").read_text())["budgets"]["10"]
    assert list(s["selection"]) == ["ddim-50", "ddim-25", "sde-50", "ag0.3-2-sde", "ag0.3-2-sde~0.5_2"]
    assert seen[100] == ["unguided"] * 3 + [None, (0.5, 2.0)]
    assert s["selection"]["ag0.3-2-sde~0.5_2"]["nfe"] <= s["selection"]["ag0.3-2-sde"]["nfe"] == 4
    # --report: a setting reported on the reported seed besides DDIM 50 and the chosen one, with its target
    assert bench.main(["--quick", "--work", str(tmp_path), "--no-progress", "--scales", "2", "--guided-samplers", "sde",
                       "--intervals", "none,0.5:2", "--report", "ag0.3-2-sde~0.5_2,sde-50"]) == 0
    s = json.loads((tmp_path / "summary.json").read_text())["budgets"]["10"]
    assert list(s["reported"])[0] == "ddim-50" and {"ag0.3-2-sde~0.5_2", "sde-50"} <= set(s["reported"])
    assert all(q["seed"] == 0 for q in s["reported"].values())
    assert set(s["target_also_reported"]) == set(s["reported"]) - {"ddim-50", s["chosen"]}
    assert len(seen[0]) == len(s["reported"])     # only the reported sets drawn with seed 0, each once


@pytest.mark.parametrize("value, message", [("2:1", "0 <= lo < hi"), ("0.3", "two noise levels"),
                                            ("a:b", "could not convert")])
def test_bad_interval_is_refused_at_parsing(tmp_path, capsys, value, message):
    with pytest.raises(SystemExit) as e:
        _load().main(["--quick", "--work", str(tmp_path), "--intervals", f"none,{value}"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "--intervals" in err and message in err


def test_report_must_name_a_setting(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        _load().main(["--quick", "--work", str(tmp_path), "--scales", "2", "--report", "ag0.3-3"])
    assert e.value.code == 2 and "--report: ['ag0.3-3'] not among the settings" in capsys.readouterr().err
