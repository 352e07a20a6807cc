"""Class-conditional training, sampling by class with guidance, the editing commands and their one-line errors."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

import difflab as dl
from difflab.cli import main

TRAIN = ["train", "--data", "digits", "--index-range", "0:200", "--steps", "4", "--batch-size", "8", "--channels",
         "8,16", "--no-progress", "--sample-every", "0"]


def run(*args):
    return main([str(a) for a in args])


def _err(capsys, *args):
    code = main([str(a) for a in args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("difflab: error: "), (code, err)
    return err[0]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cond")
    assert main(TRAIN + ["--conditional", "--out", str(root / "cond")]) == 0
    assert main(TRAIN + ["--out", str(root / "uncond")]) == 0
    assert main(["train-classifier", "--data", "digits", "--index-range", "0:200", "--steps", "3", "--noisy",
                 "--out", str(root / "noisy"), "--no-progress"]) == 0
    assert main(["train-classifier", "--data", "digits", "--index-range", "0:200", "--steps", "2",
                 "--out", str(root / "clean"), "--no-progress"]) == 0
    return root


def test_conditional_checkpoint_records_its_classes(runs):
    cfg = json.loads(next((runs / "cond" / "checkpoints").glob("step_*/config.json")).read_text())
    assert cfg["network"]["num_classes"] == 10 and cfg["classes"] == [str(d) for d in range(10)]
    den = dl.load(runs / "cond")
    assert den.num_classes == 10 and den.classes[3] == "3"
    assert dl.load(runs / "uncond").num_classes == 0


def test_sample_a_class_and_all_classes_with_guidance(runs, tmp_path, capsys):
    out = tmp_path / "s"
    assert run(*["sample", runs / "cond", "--class", "7", "--guidance", "2", "--guidance-interval", "0.1,20",
                 "--n", "3", "--steps", "5", "--out", out, "--no-progress"]) == 0
    f = np.load(out / "ddim_5_seed0_class7_w2.npz")
    assert f["samples"].shape == (3, 1, 8, 8) and f["labels"].tolist() == [7, 7, 7]
    assert run(*["sample", runs / "cond", "--class", "all", "--n", "2", "--steps", "4", "--sampler", "dpmpp_2m",
                 "--out", out, "--no-progress"]) == 0
    f = np.load(out / "dpmpp_2m_4_seed0_classall.npz")
    assert f["labels"].tolist() == [k for k in range(10) for _ in range(2)]
    grid = Image.open(out / "dpmpp_2m_4_seed0_classall.png")
    assert grid.size[1] > 4 * grid.size[0]          # one row of 2 per class: 10 rows
    assert run(*["sample", runs / "uncond", "--autoguide", runs / "uncond", "--guidance", "1.5", "--n", "2",
                 "--steps", "3", "--out", out, "--no-progress"]) == 0
    assert "6 NFE each" in capsys.readouterr().out   # two models per step
    assert run(*["sample", runs / "cond", "--class", "2", "--guide-classifier", runs / "noisy",
                 "--classifier-scale", "3", "--n", "2", "--steps", "3", "--out", out, "--no-progress"]) == 0
    assert run(*["sample", runs / "cond", "--class", "2", "--guide-classifier", runs / "noisy",
                 "--classifier-scale", "3", "--classifier-interval", "0,80", "--n", "2", "--steps", "3",
                 "--grid", "trailing", "--out", tmp_path / "ci", "--no-progress"]) == 0
    # the trailing grid starts at t = 1 (sigma/alpha ~ 1e4): that step unguided (1 NFE), the two others 2 each
    assert "5 NFE each" in capsys.readouterr().out.splitlines()[-1]


def test_guidance_errors(runs, capsys):
    assert "class 12 is not one of the model's classes 0..9" in _err(capsys, "sample", runs / "cond", "--class", "12",
                                                                      "--no-progress")
    assert "unknown class 'seven'" in _err(capsys, "sample", runs / "cond", "--class", "seven", "--no-progress")
    assert "unconditional" in _err(capsys, "sample", runs / "uncond", "--guidance", "3", "--no-progress")
    assert "unconditional" in _err(capsys, "sample", runs / "uncond", "--class", "3", "--no-progress")
    assert "needs the class" in _err(capsys, "sample", runs / "cond", "--guidance", "3", "--no-progress")
    assert "noise-aware" in _err(capsys, "sample", runs / "cond", "--class", "1", "--guide-classifier", runs / "clean",
                                 "--no-progress")
    assert "needs the class" in _err(capsys, "sample", runs / "cond", "--guide-classifier", runs / "noisy",
                                     "--no-progress")
    assert "classifier guidance interval must be 0 <= lo < hi" in _err(
        capsys, "sample", runs / "cond", "--class", "1", "--guide-classifier", runs / "noisy", "--classifier-interval",
        "80,0", "--no-progress")
    assert "--classifier-interval takes LO,HI" in _err(
        capsys, "sample", runs / "cond", "--class", "1", "--guide-classifier", runs / "noisy", "--classifier-interval",
        "80", "--no-progress")
    assert "needs classifier guidance" in _err(capsys, "sample", runs / "cond", "--class", "1",
                                               "--classifier-interval", "0,80", "--no-progress")


def test_editing_commands(runs, tmp_path, capsys):
    img = tmp_path / "x.png"
    Image.fromarray((np.random.default_rng(0).random((8, 8)) * 255).astype(np.uint8)).save(img)
    for cmd in (["inpaint", "--mask", "centre", "--steps", "4"], ["inpaint", "--mask", "left", "--steps", "3",
                                                                   "--posterior", "tweedie", "--cg-iters", "2"],
                ["img2img", "--strength", "0.4", "--steps", "4"]):
        assert run(*[cmd[0], runs / "cond", "--image", img, "--class", "3", *cmd[1:], "--out", tmp_path / cmd[0],
                     "--no-progress"]) == 0
        assert (tmp_path / cmd[0] / f"{cmd[0]}.png").exists() and (tmp_path / cmd[0] / f"{cmd[0]}.npz").exists()
    assert run(*["superres", runs / "uncond", "--data", "digits", "--index-range", "1700:1797", "--indices", "0,1",
                 "--downsample", "--steps", "3", "--out", tmp_path / "sr", "--no-progress"]) == 0
    res = np.load(tmp_path / "sr" / "superres.npz")["samples"]
    assert res.shape == (2, 1, 8, 8)
    big = tmp_path / "big.png"
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(big)
    assert "mask is" in _err(capsys, "inpaint", runs / "cond", "--image", img, "--mask", big, "--no-progress")
    assert "strength must be in (0, 1]" in _err(capsys, "img2img", runs / "cond", "--image", img, "--strength", "1.5",
                                                "--no-progress")
    assert "takes images of" in _err(capsys, "superres", runs / "uncond", "--image", img, "--no-progress")
    assert "give the input images" in _err(capsys, "img2img", runs / "cond", "--no-progress")


def test_conditional_training_needs_labels_and_feeds_them(tmp_path):
    """The trainer passes each batch's labels, with the null label at the cond_drop rate."""
    from difflab.errors import DifflabError
    data = dl.load_dataset("digits", index_range="0:64")
    den = dl.create_denoiser(data.shape, {"channels": [8, 16], "num_classes": 10}, seed=0)
    seen = []
    den.net.register_forward_hook(lambda m, args, kwargs, out: seen.append(kwargs.get("label")), with_kwargs=True)
    dl.train(den, data, tmp_path / "r", steps=20, batch_size=32, cond_drop=0.25, progress=False, sample_every=0,
             sample_n=10, sample_steps=2)
    train_labels = torch.cat([s for s in seen[:20]])
    assert 0.15 < float((train_labels == 10).double().mean()) < 0.35
    unlabelled = dl.ImageData(data.x)
    with pytest.raises(DifflabError, match="needs labelled data"):
        dl.train(dl.create_denoiser(data.shape, {"channels": [8, 16], "num_classes": 10}), unlabelled, tmp_path / "u",
                 steps=1, progress=False)
