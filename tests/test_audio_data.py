"""Audio data: 16-bit WAV round trips, FSDD on the real files, speaker splits, and broken files reported by name."""
import warnings

import numpy as np
import pytest
import torch

from difflab.data import AudioData, MelData, load_dataset
from difflab.data.audio import (FSDD_CLASSES, fit_length, from_int16, load_fsdd, read_wav, real_time_factor, to_int16,
                                write_wav)
from difflab.errors import DifflabError


def test_int16_round_trips_are_exact(tmp_path):
    a = np.concatenate([np.array([-32768, -32767, -1, 0, 1, 32766, 32767], np.int16),
                        np.random.default_rng(0).integers(-32768, 32768, 5000).astype(np.int16)])
    assert np.array_equal(to_int16(from_int16(a)), a)          # int16 -> float -> int16
    write_wav(tmp_path / "a.wav", a, 8000)
    rate, b = read_wav(tmp_path / "a.wav")
    assert rate == 8000 and b.dtype == np.int16 and np.array_equal(b, a)
    write_wav(tmp_path / "f.wav", from_int16(a)[None], 8000)   # float (1, L) in [-1, 1)
    assert np.array_equal(read_wav(tmp_path / "f.wav")[1], a)
    assert to_int16(torch.tensor([1.0, -1.0, 2.0, 0.5 / 32768, 1.5 / 32768])).tolist() == [32767, -32768, 32767, 0, 2]


def test_fit_length_centres_and_crops():
    a = np.arange(1, 6, dtype=np.float32)
    x, cropped = fit_length(a, 10)
    assert not cropped and x.tolist() == [0, 0, 1, 2, 3, 4, 5, 0, 0, 0]
    x, cropped = fit_length(np.arange(10, dtype=np.float32), 4)
    assert cropped and x.tolist() == [3, 4, 5, 6]


def test_fsdd_real_recordings(fsdd_dir):
    d = load_fsdd(fsdd_dir.parent)   # the folder holding recordings/ works too
    assert isinstance(d, AudioData) and d.kind == "audio" and d.x.shape == (2500, 1, 8192)
    assert d.classes == FSDD_CLASSES and torch.bincount(d.labels).tolist() == [250] * 10
    assert d.info["speakers"] == ["george", "jackson", "lucas", "nicolas", "yweweler"]
    assert not any("theo" in n for n in d.names)
    peaks = d.x.abs().amax(dim=(1, 2))
    torch.testing.assert_close(peaks, torch.full_like(peaks, 0.9))    # peak-normalised
    assert len(d.info["cropped"]) == 13 and d.info["skipped"] == 0   # 13 of the 2,500 are over 1.024 s
    # the first recording, 0_george_0 (the take-first order), is centred in its silence
    _, a = read_wav(fsdd_dir / "0_george_0.wav")
    assert d.names[0] == "0_george_0" and d.labels[:5].tolist() == [0] * 5
    left = (8192 - len(a)) // 2
    ref = from_int16(a)
    torch.testing.assert_close(d.x[0, 0, left:left + len(a)], 0.9 * ref / ref.abs().max())
    assert d.x[0, 0, :left].abs().max() == 0 and d.x[0, 0, left + len(a):].abs().max() == 0
    held = load_dataset("fsdd", str(fsdd_dir), split="heldout")
    assert len(held) == 500 and {n.split("_")[1] for n in held.names} == {"theo"}
    assert sorted(held.info["cropped"]) == ["5_theo_36.wav", "7_theo_36.wav", "9_theo_16.wav", "9_theo_28.wav"]
    sub = load_dataset("fsdd", str(fsdd_dir), "0:40", speakers="george,lucas")
    assert torch.bincount(sub.labels).tolist() == [4] * 10
    assert {n.split("_")[1] for n in sub.names} == {"george", "lucas"}


def test_fsdd_mel_representation_carries_labels_and_its_encoder(fsdd_dir):
    from difflab.encoders.mel import mel_dataset
    m = mel_dataset(load_dataset("fsdd", str(fsdd_dir), "0:20"))
    assert isinstance(m, MelData) and m.kind == "mel" and m.x.shape == (20, 1, 64, 64)
    assert m.labels.tolist() == [0] * 5 + [1] * 5 + [2] * 5 + [3] * 5 and m.classes == FSDD_CLASSES
    assert m.encoder.name == "mel" and m.encoder.data_shape == (1, 8192) and m.waveforms.shape == (20, 1, 8192)
    torch.testing.assert_close(m.x, m.encoder.encode(m.waveforms))
    assert -1 <= m.x.min() and m.x.max() <= 1
    with pytest.raises(DifflabError, match="made of audio, not of images"):
        mel_dataset(load_dataset("digits", index_range="0:4"))


def _fake_fsdd(folder, n=3):
    rng = np.random.default_rng(0)
    for d in range(n):
        write_wav(folder / f"{d}_alice_0.wav", rng.integers(-3000, 3000, 400 + 100 * d).astype(np.int16), 8000)
        write_wav(folder / f"{d}_bob_0.wav", rng.integers(-3000, 3000, 500).astype(np.int16), 8000)


def test_broken_and_foreign_wavs_are_reported_by_name(tmp_path):
    _fake_fsdd(tmp_path)
    (tmp_path / "7_alice_1.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")     # corrupt
    write_wav(tmp_path / "8_alice_1.wav", np.zeros(100, np.int16), 16000)        # wrong rate
    write_wav(tmp_path / "notes.wav", np.zeros(100, np.int16), 8000)             # not digit_speaker_take
    with pytest.warns(UserWarning) as rec:
        d = load_fsdd(tmp_path, holdout_speaker="bob", length=1024)
    msg = str(rec[0].message)
    assert "\n" not in msg and "skipped 3 unreadable WAV file(s)" in msg
    assert "7_alice_1.wav (" in msg and "8_alice_1.wav (16000 Hz" in msg and "notes.wav (not named" in msg
    assert d.x.shape == (3, 1, 1024) and d.labels.tolist() == [0, 1, 2]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DifflabError, match="cannot read WAV .*7_alice_1.wav"):
            read_wav(tmp_path / "7_alice_1.wav")
        with pytest.raises(DifflabError, match="is held out for evaluation"):
            load_fsdd(tmp_path, speakers="alice,bob", holdout_speaker="bob")
        with pytest.raises(DifflabError, match=r"no recordings of speaker\(s\) carol .*present: alice, bob"):
            load_fsdd(tmp_path, speakers="carol")
        with pytest.raises(DifflabError, match="no readable FSDD recordings of alice"):
            load_fsdd(tmp_path, split="heldout", holdout_speaker="alice", index_range="3:5")
    with pytest.raises(DifflabError, match="FSDD folder not found"):
        load_fsdd(tmp_path / "missing")
    with pytest.raises(DifflabError, match="--data fsdd needs --data-dir"):
        load_dataset("fsdd")
    with pytest.raises(DifflabError, match="has no option colour"):
        load_dataset("fsdd", tmp_path, colour="red")


def test_real_time_factor():
    assert real_time_factor(2.048, torch.zeros(4, 1, 8192)) == pytest.approx(0.5)
