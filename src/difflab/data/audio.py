r"""Audio: 16-bit WAV files <-> waveforms in [-1, 1], and the Free Spoken Digit Dataset (FSDD).

* :func:`read_wav` / :func:`write_wav` (scipy): 16-bit PCM only; :func:`to_int16` / :func:`from_int16`
  map sample values :math:`v \in \{-32768, \dots, 32767\}` to :math:`x = v / 32768` and back by rounding,
  so a WAV read and written again is the same to the bit.
* :func:`load_fsdd`: FSDD recordings (Z. Jackson et al., github.com/Jakobovski/free-spoken-digit-dataset),
  named ``{digit}_{speaker}_{take}.wav``, mono 8 kHz.  Each recording is centred in ``length`` = 8192
  samples (1.024 s) of silence, then scaled to a peak of 0.9 (``normalize``; FSDD's speakers were
  recorded at levels 30x apart, which would otherwise dominate every feature).  8192 is a power of
  two, so with a hop of 128 it gives the 64 spectrogram frames a 3-level UNet divides evenly, and it
  holds all but 17 of the 3,000 recordings (0.14-2.28 s, median 0.42 s); those are cropped to their
  central 8192 samples and named in ``info["cropped"]``.  Labels are the spoken digits, ``classes``
  their names.  Speakers split training from evaluation: by default the speaker ``theo`` is held
  out (``split="heldout"`` loads only that speaker, ``"train"`` the others).
  :func:`difflab.encoders.mel.mel_dataset` turns them into the log-mel images spectrogram diffusion
  trains on.
"""
from __future__ import annotations

import io
import os
import re
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from ..errors import DifflabError
from ..io import atomic_write_bytes
from .images import parse_range
from .kinds import AudioData

__all__ = ["read_wav", "write_wav", "to_int16", "from_int16", "fit_length", "load_fsdd", "real_time_factor",
           "FSDD_CLASSES", "FSDD_SPEAKERS", "FSDD_HOLDOUT"]

FSDD_CLASSES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
FSDD_SPEAKERS = ("george", "jackson", "lucas", "nicolas", "theo", "yweweler")
FSDD_HOLDOUT = "theo"
_NAME = re.compile(r"^(\d)_([A-Za-z]+)_(\d+)\.wav$")


def to_int16(x: Tensor | np.ndarray) -> np.ndarray:
    """Waveforms in [-1, 1] -> int16 (``round(32768 x)``, clipped to the 16-bit range)."""
    x = torch.as_tensor(x).detach().double().cpu()
    return (x * 32768.0).round().clamp(-32768, 32767).to(torch.int16).numpy()


def from_int16(a: np.ndarray | Tensor) -> Tensor:
    """int16 samples -> float32 in [-1, 1) (exact: v / 32768 is a float32)."""
    return torch.as_tensor(np.asarray(a, dtype=np.int16)).float() / 32768.0


def _wavfile():
    try:
        from scipy.io import wavfile
    except ImportError:
        raise DifflabError("WAV files need scipy: pip install 'difflab[audio]'") from None
    return wavfile


def read_wav(path: str | os.PathLike) -> tuple[int, np.ndarray]:
    """(sample rate, int16 samples ``(L,)`` or ``(L, channels)``) of a 16-bit PCM WAV file."""
    wavfile = _wavfile()
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # scipy warns on chunks it skips; only the samples matter here
            rate, a = wavfile.read(path)
    except FileNotFoundError:
        raise DifflabError(f"WAV file not found: {path}") from None
    except Exception as e:   # scipy raises ValueError, EOFError, struct.error, even UnboundLocalError on junk
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DifflabError(f"cannot read WAV {path}: {why}") from None
    if a.dtype != np.int16:
        raise DifflabError(f"{path} holds {a.dtype} samples; difflab reads 16-bit PCM WAV files")
    return int(rate), a


def write_wav(path: str | os.PathLike, x: Tensor | np.ndarray, sample_rate: int) -> Path:
    """Write mono audio ``(L,)`` or ``(1, L)`` (float in [-1, 1], or int16) as 16-bit PCM, atomically."""
    wavfile = _wavfile()
    a = np.asarray(x) if isinstance(x, np.ndarray) and x.dtype == np.int16 else to_int16(x)
    a = a.reshape(-1) if a.ndim == 2 and a.shape[0] == 1 else a
    if a.ndim != 1:
        raise DifflabError(f"write_wav takes mono audio (L,) or (1, L), got shape {a.shape}")
    buf = io.BytesIO()
    wavfile.write(buf, int(sample_rate), a)
    return atomic_write_bytes(path, buf.getvalue())


def fit_length(a: np.ndarray, length: int) -> tuple[np.ndarray, bool]:
    """Centre ``a`` ``(L,)`` in ``length`` samples: zero-padded on both sides (the extra sample on the
    right), or its central ``length`` samples if longer.  Returns (samples, whether it was cropped)."""
    n = len(a)
    if n > length:
        start = (n - length) // 2
        return a[start:start + length], True
    left = (length - n) // 2
    return np.pad(a, (left, length - n - left)), False


def real_time_factor(seconds: float, waveforms: Tensor, sample_rate: int = AudioData.sample_rate) -> float:
    """Seconds of compute per second of audio for ``waveforms`` ``(N, 1, L)``: below 1 is faster than real time."""
    return seconds / (waveforms.shape[0] * waveforms.shape[-1] / sample_rate)


def _speaker_list(speakers: str | Sequence[str] | None) -> list[str] | None:
    if speakers is None:
        return None
    names = [s.strip() for s in (speakers.split(",") if isinstance(speakers, str) else speakers) if s.strip()]
    if not names:
        raise DifflabError("--speakers is empty")
    return names


def load_fsdd(data_dir: str | os.PathLike, split: str = "train", speakers: str | Sequence[str] | None = None,
              holdout_speaker: str | None = FSDD_HOLDOUT, index_range: str | tuple[int, int] | None = None,
              length: int = 8192, normalize: bool = True) -> AudioData:
    """FSDD recordings of ``data_dir`` (the ``recordings`` folder, or the folder holding it).

    Args:
        split: ``train`` (``speakers``, default every speaker but ``holdout_speaker``) or ``heldout``
            (only ``holdout_speaker``).
        index_range: ``START:STOP`` of the chosen recordings, ordered by take, then digit, then speaker,
            so that every prefix is balanced over digits and speakers.
        length, normalize: see the module docstring.

    Returns :class:`AudioData` ``(N, 1, length)``.

    Unreadable or misnamed WAV files are skipped and named in one warning (an error if none is left).
    """
    root = Path(data_dir)
    if (root / "recordings").is_dir():
        root = root / "recordings"
    if not root.is_dir():
        raise DifflabError(f"FSDD folder not found: {root}")
    if split not in ("train", "heldout"):
        raise DifflabError(f"FSDD split must be train or heldout, got {split!r}")
    if length < 1:
        raise DifflabError(f"audio length must be >= 1 sample, got {length}")
    entries, bad = [], []
    for p in sorted(root.glob("*.wav")):
        m = _NAME.match(p.name)
        if m is None:
            bad.append(f"{p.name} (not named digit_speaker_take.wav)")
            continue
        entries.append((int(m.group(3)), int(m.group(1)), m.group(2), p))
    present = sorted({e[2] for e in entries})
    chosen = _speaker_list(speakers)
    if split == "heldout":
        if not holdout_speaker:
            raise DifflabError("the held-out split needs a held-out speaker (--holdout-speaker NAME)")
        chosen = [holdout_speaker]
    elif chosen is None:
        chosen = [s for s in present if s != holdout_speaker]
    elif holdout_speaker in chosen:
        raise DifflabError(f"speaker {holdout_speaker!r} is held out for evaluation; leave it out of --speakers "
                           f"or choose another --holdout-speaker")
    unknown = [s for s in chosen if s not in present]
    if unknown:
        raise DifflabError(f"no recordings of speaker(s) {', '.join(unknown)} in {root} "
                           f"(present: {', '.join(present) or 'none'})")
    entries = sorted(e for e in entries if e[2] in chosen)
    entries = entries[parse_range(index_range, len(entries))]
    waves, labels, cropped, names = [], [], [], []
    for take, digit, speaker, p in entries:
        try:
            rate, a = read_wav(p)
        except DifflabError as e:
            bad.append(f"{p.name} ({str(e).rsplit(': ', 1)[-1]})")
            continue
        if a.ndim != 1 or rate != AudioData.sample_rate or len(a) == 0:
            what = f"{a.shape[1]} channels" if a.ndim == 2 else f"{rate} Hz" if len(a) else "no samples"
            bad.append(f"{p.name} ({what}; FSDD is mono {AudioData.sample_rate} Hz)")
            continue
        x, was_cropped = fit_length(from_int16(a).numpy(), length)
        if normalize and np.abs(x).max() > 0:
            x = 0.9 * x / np.abs(x).max()
        if was_cropped:
            cropped.append(p.name)
        waves.append(x)
        labels.append(digit)
        names.append(p.stem)
    if bad:
        warnings.warn(f"FSDD: skipped {len(bad)} unreadable WAV file(s) in {root}: {'; '.join(bad)}", stacklevel=2)
    if not waves:
        raise DifflabError(f"no readable FSDD recordings of {', '.join(chosen)} in {root}")
    x = torch.from_numpy(np.stack(waves).astype(np.float32))[:, None]
    info: dict[str, Any] = {"path": str(root), "split": split, "speakers": chosen, "holdout_speaker": holdout_speaker,
                            "length": length, "normalize": normalize, "cropped": cropped, "skipped": len(bad)}
    y = torch.tensor(labels, dtype=torch.int64)
    return AudioData(x, y, name="fsdd", info=info, classes=list(FSDD_CLASSES), names=names)
