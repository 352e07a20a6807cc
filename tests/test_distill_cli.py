"""``difflab distill`` and the flow options of ``difflab train`` end to end on tiny budgets, their one-line
errors, students that sample with their own sampler, and an exactly resumed distillation."""
import json
from pathlib import Path

import torch

from difflab.cli import main
from difflab.train import load_checkpoint
from test_cli import _err   # one line "difflab: error: ...", exit status 2

FIXED = Path(__file__).parent / "data" / "fixed_checkpoint"   # a v-prediction UNet on the 8x8 digits (cosine table)
DATA = ["--data", "digits", "--index-range", "0:32"]
TINY = ["--steps", "2", "--batch-size", "4", "--no-progress"]


def cli(*args):
    return main([str(a) for a in args])


def test_train_with_the_flow_schedule(tmp_path, capsys):
    """difflab train --schedule flow --prediction velocity --t-proposal logit_normal: a continuous flow (the
    default T does not apply), the flow-matching weighting by default, the proposal recorded."""
    flow = tmp_path / "flow"
    assert main(["train", *DATA, *TINY, "--channels", "8,16", "--sample-every", "0", "--schedule", "flow",
                 "--prediction", "velocity", "--t-proposal", "logit_normal", "--t-logit-std", "0.8",
                 "--out", str(flow)]) == 0
    ck = load_checkpoint(flow)
    assert ck.config["schedule"]["name"] == "flow" and ck.config["prediction"] == "velocity"
    training = json.loads((flow / "run.json").read_text())["training"]
    assert training["weighting"] == "flow" and training["t_proposal"] == "logit_normal"
    assert training["t_logit_std"] == 0.8
    assert "unknown t proposal 'beta'" in _err(capsys, "train", *DATA, *TINY, "--t-proposal", "beta",
                                               "--out", tmp_path / "x")
    assert "unknown prediction 'vel'" in _err(capsys, "train", *DATA, *TINY, "--prediction", "vel",
                                              "--out", tmp_path / "x")


def test_every_method_makes_a_student_that_samples_with_its_own_sampler(tmp_path, capsys):
    """Each method on 2 steps from the fixed checkpoint: the student is an ordinary checkpoint recording its
    sampler, and difflab sample STUDENT uses it (DDIM 1 step after 2 progressive rounds, the 2-step student in
    rounds/round_1; the consistency sampler; Euler on the reflowed flow) unless --sampler is given."""
    pd, cd, ct, rf, out = (tmp_path / n for n in ("pd", "cd", "ct", "rf", "s"))
    assert cli("distill", FIXED, "--method", "progressive", "--rounds", "2", *DATA, *TINY, "--out", pd) == 0
    assert cli("distill", FIXED, "--method", "consistency", "--boundaries", "6", "--cm-weighting", "unit",
               "--proposal", "lognormal", *DATA, *TINY, "--out", cd) == 0
    assert cli("distill", FIXED, "--method", "consistency_training", "--s0", "2", "--s1", "4", *DATA, *TINY,
               "--out", ct) == 0
    assert cli("distill", FIXED, "--method", "reflow", "--pairs", "8", "--pair-steps", "2", *TINY, "--out", rf) == 0
    expect = {pd: ("ddim", 1, "v"), pd / "rounds" / "round_1": ("ddim", 2, "v"), rf: ("euler", 1, "velocity"),
              cd: ("consistency", 1, "consistency_v"), ct: ("consistency", 1, "consistency_v")}
    for run, (sampler, steps, prediction) in expect.items():
        cfg = load_checkpoint(run).config
        assert cfg["sampling"] == {"sampler": sampler, "steps": steps, "grid": "trailing"}, run
        assert cfg["prediction"] == prediction and cfg["training"]["objective" if run != rf else "weighting"]
    assert load_checkpoint(rf).config["schedule"]["name"] == "flow"
    objective = load_checkpoint(cd).config["training"]["objective"]
    assert objective["weighting"] == "unit" and objective["proposal"] == "lognormal"
    assert (rf / "pairs" / "pairs.safetensors").is_file()
    capsys.readouterr()
    assert cli("sample", pd, "--n", "3", "--no-progress", "--out", out) == 0
    assert cli("sample", cd, "--n", "3", "--steps", "2", "--no-progress", "--out", out) == 0
    assert cli("sample", cd, "--sampler", "ddim", "--steps", "3", "--n", "3", "--no-progress", "--out", out) == 0
    assert {p.name for p in out.glob("*.npz")} == {"ddim_1_seed0.npz", "consistency_2_seed0.npz", "ddim_3_seed0.npz"}
    assert "1 NFE each" in capsys.readouterr().out


def test_distill_refuses_bad_input(tmp_path, capsys):
    assert "unknown distillation method 'pd'" in _err(capsys, "distill", FIXED, "--method", "pd", *TINY,
                                                      "--out", tmp_path / "a")
    assert "rounds must be between 1 and 12" in _err(capsys, "distill", FIXED, "--method", "progressive", "--rounds",
                                                     "0", *DATA, *TINY, "--out", tmp_path / "a")
    assert "needs --rounds" in _err(capsys, "distill", FIXED, "--method", "progressive", *DATA, *TINY,
                                    "--out", tmp_path / "a")
    assert "--rounds applies to --method progressive" in _err(capsys, "distill", FIXED, "--method", "consistency",
                                                              "--rounds", "2", *DATA, *TINY, "--out", tmp_path / "a")
    assert "needs the training data" in _err(capsys, "distill", FIXED, "--method", "consistency", *TINY,
                                             "--out", tmp_path / "a")
    assert "give a distillation budget" in _err(capsys, "distill", FIXED, "--method", "reflow", "--out", tmp_path / "a")
    assert "deterministic" in _err(capsys, "distill", FIXED, "--method", "reflow", "--pair-sampler", "ddpm", *TINY,
                                   "--out", tmp_path / "b")
    assert "checkpoint not found" in _err(capsys, "distill", tmp_path / "none", "--method", "reflow", *TINY,
                                          "--out", tmp_path / "c")
    assert "cannot resume" in _err(capsys, "distill", FIXED, "--method", "reflow", "--resume", *TINY,
                                   "--out", tmp_path / "d")
    assert "cannot be split over 3 rounds" in _err(capsys, "distill", FIXED, "--method", "progressive", "--rounds",
                                                   "3", "--steps", "2", *DATA, "--out", tmp_path / "e")
    # a refused distillation leaves no record behind: its --out is not blocked for the corrected command
    for out in ("b", "c", "e"):
        assert not (tmp_path / out / "distill.json").exists(), out
    assert "unknown consistency metric 'l1'" in _err(capsys, "distill", FIXED, "--method", "consistency", "--metric",
                                                     "l1", *DATA, *TINY, "--out", tmp_path / "f")
    assert not (tmp_path / "f" / "distill.json").exists()
    assert "unknown consistency weighting 'x'" in _err(capsys, "distill", FIXED, "--method", "consistency",
                                                       "--cm-weighting", "x", *DATA, *TINY, "--out", tmp_path / "g")
    assert "--proposal applies to --method consistency / consistency_training" in _err(
        capsys, "distill", FIXED, "--method", "reflow", "--proposal", "lognormal", *TINY, "--out", tmp_path / "h")


def test_a_distillation_resumes_exactly(tmp_path):
    """Consistency distillation for 4 steps, or for 2 and resumed to 4 (batches, noise levels, teacher steps and
    the optimiser continue): the same per-step losses and the same weights; resuming it as another method is
    refused.  (Consistency training's curriculum follows the fraction of the budget, so its 2-step run is another
    run; after an interruption it resumes exactly like this one.)"""
    import pytest

    from difflab.data import load_dataset
    from difflab.distill import distill
    from difflab.errors import DifflabError
    from difflab.train import TrainConfig
    data = load_dataset("digits", index_range="0:32")
    cfg = dict(batch_size=4, log_every=1, sample_every=0, sample_n=2, ckpt_every_minutes=100.0, progress=False,
               warmup=2, lr=1e-3)
    opts = dict(boundaries=6)
    distill(FIXED, tmp_path / "a", "consistency", data, TrainConfig(steps=4, **cfg), **opts)
    distill(FIXED, tmp_path / "b", "consistency", data, TrainConfig(steps=2, **cfg), **opts)
    distill(FIXED, tmp_path / "b", "consistency", data, TrainConfig(steps=4, **cfg), resume=True, **opts)
    logs = [[json.loads(line)["loss"] for line in (tmp_path / r / "log.jsonl").read_text().splitlines()]
            for r in ("a", "b")]
    assert len(logs[0]) == 4 and logs[0] == logs[1]
    wa, wb = (load_checkpoint(tmp_path / r).tensors("model.safetensors") for r in ("a", "b"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    with pytest.raises(DifflabError, match="cannot resume"):
        distill(FIXED, tmp_path / "b", "consistency_training", data, TrainConfig(steps=6, **cfg), resume=True)
    # the resolved weighting is recorded: a run begun with another one (e.g. the old unit default) is not
    # resumed under the new default
    record = json.loads((tmp_path / "b" / "distill.json").read_text())
    assert record["options"]["weighting"] == "inverse_interval"
    record["options"]["weighting"] = "unit"
    (tmp_path / "b" / "distill.json").write_text(json.dumps(record))
    with pytest.raises(DifflabError, match="cannot resume .* options"):
        distill(FIXED, tmp_path / "b", "consistency", data, TrainConfig(steps=6, **cfg), resume=True, **opts)
