"""benchmarks/audio.py end to end at toy sizes: every phase runs and the summary holds what BENCHMARKS.md reports."""
import json

from bench_support import load_script


def test_audio_benchmark_quick(fsdd_dir, tmp_path, capsys):
    bench = load_script("benchmarks/audio.py")
    assert bench.main(["--quick", "--representations", "mel,wave", "--data-dir", str(fsdd_dir),
                       "--work", str(tmp_path), "--no-progress"]) == 0
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["mel"]["train"]["steps"] == 2 and s["mel"]["train"]["conditional"]
    assert s["mel"]["sample"]["n"] == 10 and s["mel"]["sample"]["rtf"] > 0
    assert 0 <= s["mel"]["eval"]["accuracy_samples"] <= 1        # class-conditional: the requested digits are known
    assert {"fd_samples", "fd_vocoder", "fd_floor", "accuracy_vocoder"} <= set(s["mel"]["eval"])
    assert len(list((tmp_path / "mel_wavs").glob("*.wav"))) == 10
    assert (tmp_path / "mel_wavs" / "spectrograms.png").exists()
    assert len(list((tmp_path / "vocoder_wavs").glob("*.wav"))) == 10
    assert s["wave"]["sample"]["n"] == 10 and "fd_vocoder" in s["wave"]["eval"]
    out = capsys.readouterr().out
    assert "| mel | 2 (" in out and "| wave | 2 (" in out
    assert bench.main(["--quick", "--representations", "mel,wave", "--data-dir", str(fsdd_dir), "--work",
                       str(tmp_path), "--no-progress"]) == 0     # a rerun skips the finished phases
