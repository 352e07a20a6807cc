r"""Evaluating generated audio: a spoken-digit classifier and the scores of ``difflab eval`` for audio.

* :class:`AudioCNN`: a log-mel front end (:class:`~difflab.encoders.mel.MelEncoder` at its own
  resolution, 40 mels of a 32 ms window every 8 ms, so that it does not see exactly what spectrogram
  diffusion generates) and a time-delay network (:class:`MelCNN`) on top.  Its penultimate layer gives the
  features of FD, KID and precision/recall, its softmax the digit probabilities; it is trained on
  the training speakers only (:func:`train_audio_classifier`).
* :func:`evaluate_audio`: for a set of generated waveforms (and the digits they were asked to say),
  the accuracy of the requested digit, FD/KID/precision/recall against the held-out speaker, and
  two floors scored the same way: real recordings of the training speakers (real vs real), and the
  same recordings sent through the mel encoder and Griffin-Lim (the vocoder floor), so that
  samples - vocoder floor is the model's loss and vocoder floor - real floor the vocoder's.

Frechet distance of classifier features as in FID (Heusel et al., arXiv:1706.08500); KID (Binkowski
et al., arXiv:1801.01401); precision/recall (Kynkaanniemi et al., arXiv:1904.06991).
"""
from __future__ import annotations

import os
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.audio import from_int16, to_int16
from ..encoders.mel import MelEncoder
from ..errors import DifflabError
from .classifier import CLASSIFIERS, ModuleExtractor, train_classifier
from .evaluate import set_scores
from .distances import gaussian_stats
from .scores import class_entropy, memorisation

__all__ = ["AudioCNN", "MelCNN", "CLASSIFIER_FRONTEND", "train_audio_classifier", "quantise_audio", "vocode", "evaluate_audio",
           "format_audio_table", "read_audio_samples", "sample_audio_sets"]

# the classifier's front end: a 32 ms window every 8 ms, 40 mel bands (a classic speech-recognition choice)
CLASSIFIER_FRONTEND: dict[str, Any] = {"n_fft": 256, "hop_length": 64, "n_mels": 40}


class MelCNN(nn.Module):
    """A time-delay network on log-mel images ``(N, 1, n_mels, T)``: the mel bands are the channels of 1-D
    convolutions over time (Waibel et al. 1989, "Phoneme recognition using time-delay neural networks"):
    conv5(w)-conv5(w)-pool-conv3(2w)-conv3(2w)-pool, then the mean and the maximum over time, fc(feature_dim),
    fc(classes).  Measured on FSDD (40 mels, 1,500 steps of 64): 94.8 % on the held-out speaker, where
    :class:`~.classifier.SmallCNN` on 32-band log-mels, whose 2-D kernels treat the bands as positions of
    one image, reached 61 % (800 steps), at about 13 times the multiply-adds per clip."""

    def __init__(self, n_mels: int = 40, num_classes: int = 10, width: int = 64, feature_dim: int = 128):
        super().__init__()
        self.config = {"n_mels": n_mels, "num_classes": num_classes, "width": width, "feature_dim": feature_dim}
        c = [n_mels, width, width, 2 * width, 2 * width]
        self.convs = nn.ModuleList(nn.Conv1d(c[i], c[i + 1], k, padding=k // 2) for i, k in enumerate((5, 5, 3, 3)))
        self.fc = nn.Linear(4 * width, feature_dim)
        self.out = nn.Linear(feature_dim, num_classes)

    def features(self, x: Tensor) -> Tensor:
        h = x.flatten(1, 2)                      # (N, n_mels, T)
        for i, conv in enumerate(self.convs):
            h = F.silu(conv(h))
            if i % 2 == 1:
                h = F.max_pool1d(h, 2)
        return F.silu(self.fc(torch.cat([h.mean(2), h.amax(2)], 1)))

    def forward(self, x: Tensor, t: Tensor | None = None) -> Tensor:
        if t is not None:
            raise DifflabError("the spoken-digit classifier is not noise-aware; it takes no time t")
        return self.out(self.features(x))


class AudioCNN(nn.Module):
    """Waveforms ``(N, 1, L)`` in [-1, 1] -> log-mel ``(N, 1, n_mels, L / hop)`` -> :class:`MelCNN`."""

    network_type = "audio_cnn"

    def __init__(self, frontend: MelEncoder, cnn: MelCNN):
        super().__init__()
        self.frontend, self.cnn = frontend, cnn
        self.config = {"type": "audio_cnn", **cnn.config, "frontend": frontend.config()}

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> "AudioCNN":
        fe = MelEncoder.from_config(cfg["frontend"])
        return cls(fe, MelCNN(cfg["n_mels"], cfg["num_classes"], cfg["width"], cfg["feature_dim"]))

    def features(self, x: Tensor) -> Tensor:
        return self.cnn.features(self.frontend.encode(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.cnn.out(self.features(x))

    def extractor(self, batch_size: int = 256, progress: bool = False) -> ModuleExtractor:
        return ModuleExtractor(self.features, self.config["feature_dim"], batch_size, progress, name="audio classifier",
                               ndim=3)

    @torch.no_grad()
    def probabilities(self, x: Tensor, batch_size: int = 256) -> Tensor:
        self.eval()
        return torch.cat([F.softmax(self(x[i:i + batch_size]), -1).double() for i in range(0, x.shape[0], batch_size)])

    @torch.no_grad()
    def probabilities_of_features(self, f: Tensor) -> Tensor:
        """The class probabilities of features ``(N, feature_dim)`` from :meth:`extractor` (no second pass)."""
        return F.softmax(self.cnn.out(f.float()), -1).double()


CLASSIFIERS[AudioCNN.network_type] = AudioCNN.from_config


def train_audio_classifier(x: Tensor, labels: Tensor, steps: int = 1500, batch_size: int = 64, lr: float = 2e-3,
                           seed: int = 0, progress: bool = True) -> AudioCNN:
    """Train :class:`AudioCNN` on waveforms ``(N, 1, L)``: the front end is fixed, so the log-mels are
    computed once and :func:`~.classifier.train_classifier` trains the :class:`MelCNN` on them (with its
    random shifts of +-2 mel bands and frames)."""
    if x.ndim != 3 or x.shape[1] != 1:
        raise DifflabError(f"an audio classifier trains on waveforms (N, 1, L), got shape {tuple(x.shape)}")
    fe = MelEncoder(**CLASSIFIER_FRONTEND, length=x.shape[-1])
    mels = torch.cat([fe.encode(x[i:i + 256]) for i in range(0, len(x), 256)])
    torch.manual_seed(seed)
    cnn = MelCNN(fe.params["n_mels"], int(labels.max()) + 1)
    cnn = train_classifier(mels, labels, steps=steps, batch_size=batch_size, lr=lr, seed=seed, progress=progress,
                           net=cnn)
    return AudioCNN(fe, cnn).eval()


def quantise_audio(x: Tensor) -> Tensor:
    """Waveforms as a 16-bit WAV holds them (int16 input is converted): what is scored is what is heard."""
    return from_int16(x.numpy() if x.dtype == torch.int16 else to_int16(x))


def _accuracy(probs: Tensor, labels: Tensor | None) -> float | None:
    return None if labels is None else float((probs.argmax(1) == labels).double().mean())


@torch.no_grad()
def vocode(vocoder, waves: Tensor, batch_size: int = 64) -> Tensor:
    """``waves`` through the vocoder's round trip (encode, then decode: for the mel encoder, log-mel then
    Griffin-Lim), in batches: what the representation itself costs, without any model."""
    return torch.cat([vocoder.decode(vocoder.encode(waves[i:i + batch_size]))
                      for i in range(0, len(waves), batch_size)])


def evaluate_audio(samples: Tensor, classifier: AudioCNN, train: Tensor, train_labels: Tensor, heldout: Tensor,
                   heldout_labels: Tensor | None = None, labels: Tensor | None = None,
                   vocoder: MelEncoder | None = None, seed: int = 0, min_samples: int = 500, kid_subset: int = 1000,
                   progress: bool = False) -> dict[str, Any]:
    """Scores of generated waveforms ``samples`` ``(n, 1, L)`` (float in [-1, 1] or int16); every set is
    scored as a 16-bit WAV holds it (:func:`quantise_audio`).

    Args:
        classifier: the features and digit probabilities (trained on ``train``'s speakers only).
        train, train_labels: recordings of the training speakers; a random same-size subset (drawn with
            ``seed``) is the real-vs-real floor, and, through ``vocoder``, the vocoder floor.
        heldout: the held-out speaker's recordings, the reference of FD/KID/precision/recall.
        labels: the digit each sample was asked to say (None: unconditional, no accuracy).
        vocoder: the mel encoder of the model (None: no vocoder floor).

    Returns a dict: ``fd_/kid_/kid_std_/precision_/recall_`` of ``samples``, ``floor``, ``vocoder``;
    ``accuracy_samples`` (requested digit; also as ``class_accuracy``, the key image evaluation uses), ``accuracy_floor``, ``accuracy_vocoder`` (true digits of the
    floor sets), ``accuracy_heldout`` and ``accuracy_heldout_vocoder`` (the classifier on the held-out
    speaker's recordings, as recorded, and the first n of them through the vocoder); the class histogram
    and its entropy;
    the nearest-training ratio in the classifier's log-mel space.

    The vocoder floor is the real-vs-real subset sent through the vocoder, not the held-out recordings:
    those are the reference itself, and their vocoded copies would sit closer to it than any model of
    other speakers can; the held-out speaker through the vocoder gives the accuracy row."""
    samples = quantise_audio(samples)
    n = samples.shape[0]
    if tuple(samples.shape[1:]) != tuple(train.shape[1:]):
        raise DifflabError(f"samples have shape {tuple(samples.shape[1:])}, the data {tuple(train.shape[1:])}")
    if n < 10:
        raise DifflabError(f"{n} samples are too few to evaluate (at least 10; {min_samples} or more for FD/KID)")
    if n > train.shape[0]:
        raise DifflabError(f"{n} samples but only {train.shape[0]} training recordings for the same-size floors")
    if labels is not None and labels.shape != (n,):
        raise DifflabError(f"{labels.shape[0]} labels for {n} samples")
    if n < min_samples:
        warnings.warn(f"{n} samples: FD and KID are biased upward at this count; compare only scores at the same "
                      f"count (the floors below are at {n})", stacklevel=3)   # past torch.no_grad's wrapper
    ext = classifier.extractor(progress=progress)
    f_ref = ext(heldout)
    ref_stats = gaussian_stats(f_ref)
    g = torch.Generator().manual_seed(seed)
    pick = torch.randperm(train.shape[0], generator=g)[:n]
    real = quantise_audio(train[pick])
    sets: dict[str, tuple[Tensor, Tensor | None]] = {"samples": (samples, labels), "floor": (real, train_labels[pick])}
    if vocoder is not None:
        sets["vocoder"] = (quantise_audio(vocode(vocoder, real)), train_labels[pick])
    out: dict[str, Any] = {"n": n, "n_reference": int(heldout.shape[0]), "extractor": ext.name}
    for tag, (x, y) in sets.items():
        f = ext(x)
        out.update(set_scores(f, f_ref, ref_stats, tag, kid_subset, seed))
        probs = classifier.probabilities_of_features(f)
        out[f"accuracy_{tag}"] = _accuracy(probs, y)
        if tag == "samples":
            out["class_entropy"], hist = class_entropy(probs)
            out["class_histogram"] = hist.tolist()
    out["class_accuracy"] = out["accuracy_samples"]
    out["accuracy_heldout"] = _accuracy(classifier.probabilities_of_features(f_ref), heldout_labels)
    if vocoder is not None and heldout_labels is not None:    # the first n (balanced over digits, as loaded)
        out["accuracy_heldout_vocoder"] = _accuracy(classifier.probabilities(quantise_audio(vocode(vocoder, heldout[:n]))),
                                                    heldout_labels[:n])
    mel = lambda v: torch.cat([classifier.frontend.encode(v[i:i + 256]) for i in range(0, len(v), 256)])  # noqa: E731
    out["memorisation"] = memorisation(mel(samples[:2000]), mel(train), mel(heldout[:2000]))
    return out


def format_audio_table(res: dict[str, Any]) -> str:
    """The terminal table of :func:`evaluate_audio`."""
    cols = [c for c in ("samples", "floor", "vocoder") if f"fd_{c}" in res]
    head = {"samples": "samples", "floor": "real vs real", "vocoder": "vocoder floor"}
    lines = [f"{'metric':<26}" + "".join(f"{head[c]:>15}" for c in cols), "-" * (26 + 15 * len(cols))]

    def row(label: str, key: str, digits: int, pct: bool = False) -> None:
        cells = []
        for c in cols:
            v = res.get(f"{key}_{c}")
            cells.append(f"{'-':>15}" if v is None else f"{100 * v:>14.1f}%" if pct else f"{v:>15.{digits}f}")
        lines.append(f"{label:<26}" + "".join(cells))

    row("requested-digit accuracy", "accuracy", 1, pct=True)
    row("FD", "fd", 3)
    row("KID", "kid", 5)
    row("precision (k=3)", "precision", 3)
    row("recall (k=3)", "recall", 3)
    if res.get("accuracy_heldout") is not None:
        voc = res.get("accuracy_heldout_vocoder")
        lines.append(f"{'classifier, held-out real':<26}{100 * res['accuracy_heldout']:>14.1f}%"
                     + ("" if voc is None else f"   (through the vocoder: {100 * voc:.1f}%)"))
    lines.append(f"{'class entropy (nats)':<26}{res['class_entropy'] + 0.0:>15.3f}   (log 10 = 2.303: balanced)")
    lines.append(f"{'nearest-train ratio':<26}{res['memorisation']['ratio']:>15.3f}   "
                 f"(samples / held-out, 1 = no copying)")
    lines.append(f"features: {res['extractor']}; n = {res['n']} samples, {res['n_reference']} reference recordings "
                 f"(held-out speaker)")
    return "\n".join(lines)


def read_audio_samples(path: str | os.PathLike) -> tuple[Tensor, Tensor | None, MelEncoder]:
    """(waveforms, requested digits or None, the vocoder of the floor) of an ``.npz`` written by ``difflab
    sample`` for audio (int16 ``samples`` ``(n, 1, L)``, optional ``labels``).  The file does not name its
    encoder: the vocoder floor uses the default :class:`MelEncoder`, the one ``difflab train --data fsdd``
    uses."""
    from .evaluate import read_samples
    x, y = read_samples(path)
    if x.dtype != torch.int16 or x.ndim != 3 or x.shape[1] != 1:
        raise DifflabError(f"{path} does not hold audio samples (int16, (n, 1, L)): {x.dtype} {tuple(x.shape)}")
    return from_int16(x.numpy()), None if y is None else y.long(), MelEncoder(length=x.shape[-1])


def sample_audio_sets(denoiser: Any, seeds: list[int], n: int = 500, **sample_kw: Any
                      ) -> list[tuple[str, Tensor, Tensor | None, MelEncoder, int]]:
    """One set of ``n`` samples per seed, decoded to audio, as ``(name, waveforms, requested digits, vocoder,
    seed)`` for :func:`evaluate_audio`.  A class-conditional denoiser (``num_classes`` > 0) is asked for digit
    ``i mod num_classes`` in sample i; the vocoder floor uses the model's own mel encoder (a waveform model:
    the default :class:`MelEncoder`)."""
    from ..encoders.attached import data_space, decode_samples
    from ..sampling import sample
    k = int(getattr(denoiser, "num_classes", 0) or 0)
    labels = torch.arange(n) % k if k else None
    enc = getattr(denoiser, "encoder", None)
    vocoder = enc if isinstance(enc, MelEncoder) else MelEncoder(length=data_space(denoiser)[1][-1])
    out = []
    for seed in seeds:
        res = sample(denoiser, n=n, seed=seed, cond=None if labels is None else {"label": labels}, **sample_kw)
        name = f"{sample_kw.get('sampler', 'ddim')}-{sample_kw.get('steps', 50)} seed {seed}"
        out.append((name, decode_samples(denoiser, res.x).clamp(-1, 1), labels, vocoder, seed))
    return out
