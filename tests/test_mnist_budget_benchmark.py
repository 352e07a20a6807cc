"""``benchmarks/mnist_budget.py --quick``: every phase at toy sizes; the sampler is chosen on the selection
seed's samples and reported on other seeds; the same-network row starts from the diffusers network's weights."""
import json
from pathlib import Path

import pytest

from bench_support import load_script

MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"

pytest.importorskip("diffusers")
pytestmark = pytest.mark.skipif(not (MNIST / "t10k-images-idx3-ubyte.gz").is_file(), reason="no MNIST on disk")


def _load():
    return load_script("benchmarks/mnist_budget.py")


def test_quick_mode_chooses_on_one_seed_and_reports_on_others(tmp_path, capsys):
    bench = _load()
    args = ["--quick", "--work", str(tmp_path), "--no-progress", "--data-dir", str(MNIST), "--extra-seeds", "1"]
    assert bench.main(args) == 0
    s = json.loads((tmp_path / "summary.json").read_text())
    ph = s["phases"]
    # the same network: difflab's trainer started from the diffusers network's initial weights, which it reproduced
    assert ph["train_samenet"]["params"] == ph["train_diffusers"]["params"] != ph["train_difflab"]["params"]
    assert ph["train_samenet"]["init_max_gap"] < 1e-4
    import difflab as dl
    net = dl.load(str(tmp_path / "samenet")).net.config   # the diffusers recipe's network, as a difflab UNet
    assert net["channels"] == list(bench.DIFFUSERS_CHANNELS) and net["layers_per_block"] == 2
    assert dl.load(str(tmp_path / "difflab")).net.config["layers_per_block"] == 1
    assert all(ph[f"train_{side}"]["steps"] == 3 for side in bench.SIDES)
    flops = ph["flops"]["step_flops"]       # one network, counted through both implementations: the same FLOPs
    assert flops["samenet"] == pytest.approx(flops["diffusers"], rel=0.01) and flops["difflab"] > 0
    assert "fraction of the fp32 matmul peak" in s["markdown"]
    # the sweep is drawn with the selection seed, the reported samples with the other seeds
    assert s["select_seed"] == 100 and s["reported_seeds"] == [0, 1]
    for side in bench.SIDES:
        assert ph[f"sample:{side}:{s['best'][side]}"]["seed"] == 100
        for seed in (0, 1):
            assert ph[f"sample:{side}:{s['best'][side]}:{seed}"]["seed"] == seed
        assert set(ph["eval_seeds"][side]["scores"]) == {"0", "1"}
    assert "ddpm-1000" not in s["best"].values() and "sample:samenet:ddpm-1000" not in ph
    fd = s["means"]["fd_samples"]
    assert fd["difflab"] == pytest.approx(sum(ph["eval_seeds"]["difflab"]["scores"][k]["fd_samples"]
                                              for k in ("0", "1")) / 2)
    assert "difflab recipe, diffusers net" in s["markdown"]
    capsys.readouterr()
    assert bench.main(args) == 0          # every phase recorded: none rerun
    assert "[run ]" not in capsys.readouterr().out


def test_a_work_folder_of_the_old_version_is_refused(tmp_path, capsys):
    (tmp_path / "args.json").write_text(json.dumps({"n": 1000}))   # version 1 wrote no version
    assert _load().main(["--quick", "--work", str(tmp_path)]) == 2
    assert "another version" in capsys.readouterr().err


def test_selection_seed_must_not_be_reported(tmp_path):
    with pytest.raises(SystemExit):
        _load().main(["--quick", "--work", str(tmp_path), "--select-seed", "1", "--extra-seeds", "1,2"])
