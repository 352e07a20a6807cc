"""Spoken digits end to end: train on log-mels of a small FSDD subset -> sample -> WAV files -> eval, and the
audio classifier and scores on their own."""
import json

import numpy as np
import pytest
import torch

from difflab.cli import main
from difflab.data import load_dataset
from difflab.data.audio import read_wav
from difflab.encoders import MelEncoder
from difflab.errors import DifflabError
from difflab.metrics import load_classifier, save_classifier
from difflab.metrics.audio import (AudioCNN, evaluate_audio, format_audio_table, sample_audio_sets,
                                   train_audio_classifier)
from difflab.train import load_checkpoint


def test_train_sample_eval_on_spoken_digits(fsdd_dir, tmp_path, capsys):
    run, clf, out = tmp_path / "run", tmp_path / "clf", tmp_path / "s"
    data = ["--data", "fsdd", "--data-dir", str(fsdd_dir)]
    assert main(["train", *data, "--index-range", "0:40", "--steps", "2", "--batch-size", "4", "--channels", "8,16",
                 "--attention-levels", "",
                 "--sample-every", "0", "--out", str(run), "--no-progress"]) == 0
    ck = load_checkpoint(run)
    assert ck.config["data_kind"] == "mel" and ck.config["data_shape"] == [1, 64, 64]
    assert ck.config["encoder"]["name"] == "mel" and "path" not in ck.config["encoder"]   # the config is enough
    assert ck.denoiser().encoder.digest() == MelEncoder().digest()           # the encoder travels with the run
    assert (run / "samples" / "step_0000002.png").exists()                    # the training preview (decoded)
    assert main(["sample", str(run), "--sampler", "ddim", "--steps", "2", "--n", "10", "--out", str(out),
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "real-time factor" in printed
    npz = np.load(out / "ddim_2_seed0.npz")
    assert npz["samples"].dtype == np.int16 and npz["samples"].shape == (10, 1, 8192)
    wavs = sorted((out / "ddim_2_seed0_audio").glob("*.wav"))
    assert len(wavs) == 10 and (out / "ddim_2_seed0.png").exists()
    rate, a = read_wav(wavs[3])
    assert rate == 8000 and np.array_equal(a, npz["samples"][3, 0])            # the WAV is what is scored
    assert main(["train-classifier", *data, "--index-range", "0:100", "--steps", "3", "--out", str(clf),
                 "--no-progress"]) == 0
    res = tmp_path / "res.json"
    with pytest.warns(UserWarning, match="biased upward"):
        assert main(["eval", str(out / "ddim_2_seed0.npz"), *data, "--classifier", str(clf), "--out", str(res),
                     "--no-progress"]) == 0
    table = capsys.readouterr().out
    assert "vocoder floor" in table and "real vs real" in table and "classifier, held-out real" in table
    r = json.loads(res.read_text())
    assert r["n"] == 10 and r["n_reference"] == 500 and r["accuracy_samples"] is None   # unconditional: no request
    assert all(f"fd_{k}" in r for k in ("samples", "floor", "vocoder")) and 0 <= r["accuracy_floor"] <= 1
    with pytest.warns(UserWarning, match="biased upward"):   # or sampled from the run itself, per seed
        assert main(["eval", *data, "--checkpoint", str(run), "--sampler", "ddim", "--steps", "2", "--n", "10",
                     "--seeds", "0,1", "--classifier", str(clf), "--out", str(res), "--no-progress"]) == 0
    r = json.loads(res.read_text())
    assert len(r["runs"]) == 2 and r["fd_samples_runs_std"] > 0 and "seed 1" in capsys.readouterr().out


def test_audio_eval_user_errors(fsdd_dir, tmp_path, capsys):
    def err(*args):
        assert main([str(a) for a in args]) == 2
        return capsys.readouterr().err.strip()
    data = ["--data", "fsdd", "--data-dir", fsdd_dir]
    assert "needs --classifier" in err("eval", tmp_path / "x.npz", *data)
    np.savez(tmp_path / "img.npz", samples=np.zeros((12, 1, 8, 8), np.uint8))
    torch.manual_seed(0)
    from difflab.metrics import SmallCNN
    from difflab.metrics.audio import CLASSIFIER_FRONTEND, MelCNN
    save_classifier(AudioCNN(MelEncoder(**CLASSIFIER_FRONTEND), MelCNN()), tmp_path / "clf")
    assert "does not hold audio samples" in err("eval", tmp_path / "img.npz", *data, "--classifier", tmp_path / "clf")
    save_classifier(SmallCNN(1, 10), tmp_path / "img_clf")
    assert "is not an audio classifier" in err("eval", tmp_path / "img.npz", *data, "--classifier",
                                               tmp_path / "img_clf")
    assert "held out for evaluation" in err("train", *data, "--speakers", "theo,george", "--steps", "1", "--out",
                                            tmp_path / "r")


@pytest.fixture(scope="module")
def small_fsdd(fsdd_dir):
    return load_dataset("fsdd", fsdd_dir, "0:200"), load_dataset("fsdd", fsdd_dir, "0:60", split="heldout")


def test_classifier_saves_loads_and_scores(small_fsdd, tmp_path):
    train, held = small_fsdd
    net = train_audio_classifier(train.x, train.labels, steps=150, batch_size=32, progress=False)
    save_classifier(net, tmp_path / "c", {"data": "fsdd"})
    again = load_classifier(tmp_path / "c")
    assert isinstance(again, AudioCNN) and again.frontend.config() == net.frontend.config()
    torch.testing.assert_close(again.probabilities(held.x), net.probabilities(held.x))
    # the samples are a same-size subset of the training recordings drawn with the floor's seed: every
    # score of the samples equals the real-vs-real floor's
    n = 20
    pick = torch.randperm(200, generator=torch.Generator().manual_seed(3))[:n]
    x, said = train.x[pick], train.labels[pick]
    with pytest.warns(UserWarning):
        r = evaluate_audio(x, net, train.x, train.labels, held.x, held.labels, labels=said, seed=3)
    for k in ("fd", "kid", "precision", "recall", "accuracy"):
        assert r[f"{k}_samples"] == pytest.approx(r[f"{k}_floor"], abs=1e-9), k
    assert "vocoder" not in format_audio_table(r)
    heard = net.probabilities(x).argmax(1)          # the requested-digit accuracy, recomputed
    assert r["accuracy_samples"] == pytest.approx(float((heard == said).double().mean()))
    assert r["class_accuracy"] == r["accuracy_samples"]   # the key image evaluation uses too
    assert r["accuracy_heldout"] == pytest.approx(float((net.probabilities(held.x).argmax(1) == held.labels)
                                                        .double().mean()))
    wrong = (said + 1) % 10                         # asking for other digits than were said
    with pytest.warns(UserWarning):
        r2 = evaluate_audio(x, net, train.x, train.labels, held.x, labels=wrong, seed=3)
    assert r2["accuracy_samples"] == pytest.approx(float((heard == wrong).double().mean()))
    assert r2["accuracy_samples"] < r["accuracy_samples"] and r2["fd_samples"] == pytest.approx(r["fd_samples"])
    with pytest.raises(DifflabError, match="too few"):
        evaluate_audio(train.x[:5], net, train.x, train.labels, held.x)


class _CondDenoiser(torch.nn.Module):
    """A stand-in class-conditional denoiser on the mel space: x0_hat is the mean code of the requested digit."""

    def __init__(self, means, schedule):
        super().__init__()
        self.means, self.schedule, self.num_classes, self.seen = means, schedule, 10, []
        self.data_shape, self.data_kind = tuple(means.shape[1:]), "mel"

    def forward(self, x, t, label=None):
        self.seen.append(label.clone())
        return self.means[label].to(x.dtype)


def test_conditional_samples_carry_their_requested_digits(small_fsdd):
    """The conditional path is the dataset's labels as ``cond={"label": ...}``: the sampler hands them to the
    denoiser, the set records them, and the vocoder floor uses the run's own encoder."""
    import difflab as dl
    train, _ = small_fsdd
    enc = MelEncoder(griffin_lim_iters=4)
    z = enc.encode(train.x)
    means = torch.stack([z[train.labels == k].mean(0) for k in range(10)])
    den = _CondDenoiser(means, dl.get_schedule("cosine", T=1000))
    den.encoder = enc
    (name, x, labels, vocoder, seed), = sample_audio_sets(den, [0], n=12, sampler="ddim", steps=2, progress=False)
    assert labels.tolist() == [i % 10 for i in range(12)] and vocoder is enc and x.shape == (12, 1, 8192)
    assert all(torch.equal(s, labels) for s in den.seen)


def test_class_conditional_mel_model_end_to_end(fsdd_dir, tmp_path, capsys):
    """``difflab train --conditional`` on FSDD log-mels feeds the digits; ``difflab sample --class 7`` writes
    that digit's WAVs with their labels in the .npz; ``--class all`` one per digit; eval scores the request."""
    run, out = tmp_path / "run", tmp_path / "s"
    data = ["--data", "fsdd", "--data-dir", str(fsdd_dir)]
    assert main(["train", *data, "--conditional", "--index-range", "0:40", "--steps", "2", "--batch-size", "4",
                 "--channels", "8,16", "--attention-levels", "", "--sample-every", "0", "--out", str(run),
                 "--no-progress"]) == 0
    assert main(["train", *data, "--index-range", "0:40", "--steps", "3", "--resume", "--sample-every", "0",
                 "--out", str(run), "--no-progress"]) == 0            # resumed on the log-mels of its own encoder
    den = load_checkpoint(run).denoiser()
    assert load_checkpoint(run).step == 3 and load_checkpoint(run).config["data_kind"] == "mel"
    assert den.num_classes == 10 and den.classes[7] == "seven" and den.encoder is not None
    assert main(["sample", str(run), "--class", "seven", "--n", "3", "--steps", "2", "--out", str(out),
                 "--no-progress"]) == 0
    npz = np.load(out / "ddim_2_seed0_classseven.npz")
    assert npz["labels"].tolist() == [7, 7, 7] and npz["samples"].shape == (3, 1, 8192)
    assert len(list((out / "ddim_2_seed0_classseven_audio").glob("*.wav"))) == 3
    assert main(["sample", str(run), "--class", "all", "--n", "1", "--steps", "2", "--out", str(out),
                 "--no-progress"]) == 0
    assert np.load(out / "ddim_2_seed0_classall.npz")["labels"].tolist() == list(range(10))
    assert "real-time factor" in capsys.readouterr().out
