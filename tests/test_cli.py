"""The CLI end to end, and its one-line errors with a non-zero exit."""
import json
import os
import subprocess
import sys

import numpy as np
from PIL import Image

from difflab.cli import main


def run_cli(*args, cwd=None):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "difflab.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=600)


def _err(capsys, *args):
    code = main([str(a) for a in args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("difflab: error: "), err
    return err[0]


TRAIN = ["train", "--steps", "3", "--batch-size", "4", "--channels", "8,16", "--no-progress", "--sample-every", "0"]


def test_train_sample_forward_end_to_end(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(TRAIN + ["--data", "digits", "--index-range", "0:64", "--lr-schedule", "cosine",
                         "--adam-betas", "0.9,0.99", "--out", str(run)]) == 0
    assert (run / "checkpoints" / "latest").exists() and (run / "log.jsonl").exists()
    training = json.loads((run / "run.json").read_text())["training"]
    assert training["lr_schedule"] == "cosine" and training["adam_betas"] == [0.9, 0.99]
    assert main(["sample", str(run), "--sampler", "ddpm", "--steps", "20", "--n", "4", "--out", str(tmp_path / "s"),
                 "--trajectory", "--trajectory-points", "3", "--no-progress"]) == 0
    arr = np.load(tmp_path / "s" / "ddpm_20_seed0.npz")["samples"]
    assert arr.shape == (4, 1, 8, 8) and arr.dtype == np.uint8
    assert (tmp_path / "s" / "ddpm_20_seed0.png").exists()
    assert (tmp_path / "s" / "ddpm_20_seed0_trajectory.png").exists()
    assert main(["forward", "--data", "digits", "--schedules", "linear,cosine,edm", "--out",
                 str(tmp_path / "f.png")]) == 0
    img = tmp_path / "img.png"
    Image.fromarray((np.random.default_rng(0).random((16, 16)) * 255).astype(np.uint8)).save(img)
    assert main(["forward", "--image", str(img), "--out", str(tmp_path / "g.png")]) == 0
    assert main(["schedules", "--out", str(tmp_path / "sched.png")]) == 0
    for f in ["f.png", "g.png", "sched.png"]:
        assert Image.open(tmp_path / f).size[0] > 100


def test_train_defaults_are_the_fidelity_recipe_and_print_the_autoguided_command(tmp_path, capsys):
    """Batch 64 and a milestone at 30 % of the budget (the weak model of autoguidance) unless told otherwise;
    the run ends with the autoguided sampling command, which works as printed."""
    run = tmp_path / "run"
    base = ["train", "--data", "digits", "--index-range", "0:64", "--steps", "10", "--channels", "8,16",
            "--no-progress", "--sample-every", "0"]
    assert main(base + ["--out", str(run)]) == 0
    out = capsys.readouterr().out
    training = json.loads((run / "run.json").read_text())["training"]
    assert training["batch_size"] == 64 and training["milestones"] == [0.3]
    assert [p.name for p in (run / "milestones").iterdir()] == ["step_0000003"]
    hint = [ln for ln in out.splitlines() if ln.startswith("autoguided samples")]
    assert len(hint) == 1
    cmd = hint[0].split(": ", 1)[1].split()
    assert cmd[:3] == ["difflab", "sample", str(run)] and cmd[cmd.index("--autoguide") + 1] == str(
        run / "milestones" / "step_0000003")
    assert cmd[cmd.index("--guidance") + 1] == "3" and cmd[cmd.index("--guidance-interval") + 1] == "0.28,5.42"
    assert main(cmd[1:] + ["--n", "4", "--out", str(tmp_path / "s"), "--no-progress"]) == 0
    assert (tmp_path / "s" / "dpmpp_2m_sde_25_seed0.npz").exists()
    assert main(base + ["--batch-size", "8", "--milestones", "none", "--out", str(tmp_path / "r2")]) == 0
    training = json.loads((tmp_path / "r2" / "run.json").read_text())["training"]
    assert training["batch_size"] == 8 and training["milestones"] == []
    assert not (tmp_path / "r2" / "milestones").exists()
    assert "autoguided samples" not in capsys.readouterr().out
    # a resume keeps the run's own batch (not today's default)
    resume = [a if a != "10" else "12" for a in base] + ["--resume", "--out", str(tmp_path / "r2")]
    assert main(resume) == 0
    training = json.loads((tmp_path / "r2" / "run.json").read_text())["training"]
    assert training["batch_size"] == 8 and training["steps"] == 12
    assert "must be >= 1" in _err(capsys, *base, "--batch-size", "0", "--out", tmp_path / "r3")


def test_user_errors(tmp_path, capsys):
    assert "MNIST folder not found" in _err(capsys, *TRAIN, "--data", "mnist", "--data-dir", tmp_path / "nope",
                                            "--out", tmp_path / "r")
    assert "unknown schedule 'cosin'" in _err(capsys, *TRAIN, "--data", "digits", "--schedule", "cosin",
                                              "--out", tmp_path / "r")
    assert "does not fit a UNet" in _err(capsys, *TRAIN, "--data", "digits", "--channels", "8,16,16,16,16",
                                         "--out", tmp_path / "r")
    assert "--adam-betas: expected two numbers" in _err(capsys, *TRAIN, "--data", "digits", "--adam-betas", "0.9",
                                                        "--out", tmp_path / "r")
    assert "Adam betas must be" in _err(capsys, *TRAIN, "--data", "digits", "--adam-betas", "0.9,1.5",
                                        "--out", tmp_path / "r")
    assert "give a training budget" in _err(capsys, "train", "--data", "digits", "--out", tmp_path / "r")
    assert "train it with difflab distill" in _err(capsys, *TRAIN, "--data", "digits", "--prediction", "consistency_v",
                                                   "--out", tmp_path / "r")
    assert "checkpoint not found" in _err(capsys, "sample", tmp_path / "none")
    run = tmp_path / "run"
    assert main(TRAIN + ["--data", "digits", "--index-range", "0:32", "--out", str(run)]) == 0
    capsys.readouterr()
    assert "unknown sampler 'foo'" in _err(capsys, "sample", run, "--sampler", "foo", "--no-progress")
    ck = run / "checkpoints" / (run / "checkpoints" / "latest").read_text().strip()   # the one sample opens
    (ck / "model.safetensors").write_bytes(b"\0" * 10)
    (ck / "ema.safetensors").write_bytes(b"\0" * 10)
    assert "corrupt or truncated" in _err(capsys, "sample", run, "--no-progress")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "t10k-images-idx3-ubyte.gz").write_bytes(b"junk")
    assert "cannot read" in _err(capsys, *TRAIN, "--data", "mnist", "--data-dir", bad, "--out", tmp_path / "r")


def test_console_entry_point_and_ctrl_c(tmp_path):
    """`python -m difflab.cli` exits 2 with one line on error; SIGINT during training saves and exits 130."""
    p = run_cli("sample", tmp_path / "none")
    assert p.returncode == 2 and p.stderr.strip().count("\n") == 0 and "checkpoint not found" in p.stderr
    import signal
    import time
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "difflab.cli", "train", "--data", "digits", "--minutes", "5",
                             "--channels", "8,16", "--batch-size", "4", "--no-progress", "--sample-every", "0",
                             "--out", str(tmp_path / "r")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    log = tmp_path / "r" / "log.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (log.exists() and log.read_text().strip()):
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, (out, err)
    assert "continue with --resume" in out
    assert (tmp_path / "r" / "checkpoints" / "latest").exists()
