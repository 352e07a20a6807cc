r"""Log-mel spectrograms of audio and their inverse, in torch: the encoder of spectrogram diffusion.

Forward (:meth:`MelEncoder.encode`), for a waveform :math:`x` ``(N, 1, L)`` at ``sample_rate``:

1. short-time Fourier transform with a periodic Hann window of ``n_fft`` samples, hop ``hop_length``,
   centred frames with zero padding, keeping ``L / hop_length`` frames: :math:`X` ``(N, F, T)``,
   :math:`F = n_{fft}/2 + 1`;
2. mel magnitudes :math:`M = W|X|` with the filterbank :math:`W` ``(n_mels, F)`` of :func:`mel_filterbank`
   (Slaney's mel scale, triangles of unit area);
3. :math:`z = (\ln\max(M, a_{min}) - c)/d` with :math:`c, d` the centre and half-width of
   :math:`[\ln a_{min}, \ln a_{max}]`, so the data lie in [-1, 1] (silence at -1): an image
   ``(N, 1, n_mels, T)`` that the 2-D UNet, the trainer and the samplers take as they are.

Inverse (:meth:`MelEncoder.decode`): :math:`M = \exp(c + d z)`, the linear magnitude by non-negative
least squares :math:`\min_{S \ge 0}\|WS - M\|^2` (:func:`mel_to_linear`), then the phase by the fast
Griffin-Lim algorithm (:func:`griffin_lim`).  Mel filterbanks lose detail above ~1 kHz, and Griffin-Lim
finds a phase only up to a local optimum; ``difflab eval`` scores real audio sent through this round
trip as the vocoder floor.

References: S. Davis & P. Mermelstein, "Comparison of parametric representations for monosyllabic word
recognition", 1980 (mel filterbanks); M. Slaney, "Auditory Toolbox", Tech. Rep. 1998-010 (the scale
and normalisation used here, librosa's default); D. Griffin & J. Lim, "Signal estimation from modified
short-time Fourier transform", 1984; N. Perraudin, P. Balazs & P. Sondergaard, "A fast Griffin-Lim
algorithm", WASPAA 2013; A. Beck & M. Teboulle, "A fast iterative shrinkage-thresholding algorithm",
2009 (FISTA, the projected-gradient solver of the least squares).
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from ..data.kinds import AudioData, MelData
from ..errors import DifflabError
from .base import Encoder

__all__ = ["hz_to_mel", "mel_to_hz", "mel_filterbank", "stft", "istft", "mel_to_linear", "griffin_lim",
           "spectral_convergence", "MelEncoder", "mel_dataset"]

# Slaney's scale: linear below 1 kHz (3 mels per 200 Hz), logarithmic above (27 mels per factor 6.4)
_F_SP = 200.0 / 3.0
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = math.log(6.4) / 27.0


def hz_to_mel(f: Tensor) -> Tensor:
    r"""Slaney's mel scale: :math:`m = f/f_{sp}` below 1 kHz, :math:`15 + \ln(f/1000)/(\ln 6.4/27)` above."""
    f = torch.as_tensor(f, dtype=torch.float64)
    log_part = _MIN_LOG_MEL + torch.log(f.clamp_min(_MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOGSTEP
    return torch.where(f >= _MIN_LOG_HZ, log_part, f / _F_SP)


def mel_to_hz(m: Tensor) -> Tensor:
    """The inverse of :func:`hz_to_mel`."""
    m = torch.as_tensor(m, dtype=torch.float64)
    log_part = _MIN_LOG_HZ * torch.exp(_LOGSTEP * (m.clamp_min(_MIN_LOG_MEL) - _MIN_LOG_MEL))
    return torch.where(m >= _MIN_LOG_MEL, log_part, m * _F_SP)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0,
                   fmax: float | None = None) -> Tensor:
    r"""Triangular mel filters ``(n_mels, n_fft // 2 + 1)``, float64.

    The edges :math:`f_0 < \dots < f_{n+1}` are ``n_mels + 2`` points equally spaced on Slaney's mel
    scale from ``fmin`` to ``fmax`` (default: Nyquist); filter :math:`m` rises linearly from
    :math:`f_m` to its peak at :math:`f_{m+1}` and falls to :math:`f_{m+2}`, scaled by
    :math:`2/(f_{m+2} - f_m)` so that its area in Hz is 1 (Slaney's normalisation; its peak height is
    that factor).  Evaluated at the FFT bin frequencies :math:`k\,f_s/n_{fft}`."""
    fmax = sample_rate / 2 if fmax is None else fmax
    if not 0 <= fmin < fmax <= sample_rate / 2:
        raise DifflabError(f"mel filterbank needs 0 <= fmin < fmax <= {sample_rate / 2} Hz, got {fmin}, {fmax}")
    freqs = torch.arange(n_fft // 2 + 1, dtype=torch.float64) * sample_rate / n_fft
    edges = mel_to_hz(torch.linspace(float(hz_to_mel(fmin)), float(hz_to_mel(fmax)), n_mels + 2,
                                     dtype=torch.float64))
    lo, centre, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (freqs - lo) / (centre - lo)
    falling = (hi - freqs) / (hi - centre)
    return torch.minimum(rising, falling).clamp_min(0.0) * (2.0 / (hi - lo))


def _window(n_fft: int, device: torch.device | None = None) -> Tensor:
    return torch.hann_window(n_fft, periodic=True, dtype=torch.float32, device=device)


def stft(x: Tensor, n_fft: int, hop_length: int) -> Tensor:
    r"""STFT of ``x`` ``(..., L)`` with a periodic Hann window, frames centred at :math:`t \cdot hop`
    (zero padding at the ends): complex ``(..., n_fft/2 + 1, L // hop_length)`` (the frame centred at
    L itself is dropped: the inverse still covers every sample, see :func:`istft`)."""
    shape = x.shape
    X = torch.stft(x.reshape(-1, shape[-1]).float(), n_fft, hop_length, window=_window(n_fft, x.device),
                   center=True, pad_mode="constant", return_complex=True)
    X = X[..., : shape[-1] // hop_length]
    return X.reshape(*shape[:-1], *X.shape[-2:])


def istft(X: Tensor, n_fft: int, hop_length: int, length: int | None = None) -> Tensor:
    r"""Least-squares inverse of :func:`stft` (weighted overlap-add, Griffin & Lim 1984, eq. 6):
    ``(..., F, T)`` -> ``(..., length)``, ``length`` = T * hop by default.  The Hann window of hop
    :math:`\le n_{fft}/2` overlaps everywhere, so ``istft(stft(x)) == x``."""
    shape = X.shape
    length = shape[-1] * hop_length if length is None else length
    x = torch.istft(X.reshape(-1, *shape[-2:]), n_fft, hop_length, window=_window(n_fft, X.device),
                    center=True, length=length)
    return x.reshape(*shape[:-2], length)


def mel_to_linear(mel: Tensor, fb: Tensor, n_iter: int = 100) -> Tensor:
    r"""Non-negative least squares :math:`\hat S = \arg\min_{S \ge 0}\|W S - M\|_F^2` per frame:
    ``mel`` ``(..., n_mels, T)``, ``fb`` :math:`W` ``(n_mels, F)`` -> ``(..., F, T)``.

    Started from the pseudo-inverse :math:`\max(W^+ M, 0)` (exact when :math:`M = W S` for an
    :math:`S \ge 0` in the row space of :math:`W`), then ``n_iter`` accelerated projected-gradient
    steps (FISTA, step :math:`1/\|W\|_2^2`)."""
    W = fb.to(mel.dtype)
    s = (torch.linalg.pinv(fb).to(mel.dtype) @ mel).clamp_min(0.0)
    if n_iter <= 0:
        return s
    step = 1.0 / float(torch.linalg.matrix_norm(fb, ord=2)) ** 2
    WtM, WtW = W.T @ mel, W.T @ W
    y, k_prev = s, 1.0
    for _ in range(n_iter):
        s_next = (y - step * (WtW @ y - WtM)).clamp_min(0.0)
        k = (1.0 + math.sqrt(1.0 + 4.0 * k_prev**2)) / 2.0
        y = s_next + ((k_prev - 1.0) / k) * (s_next - s)
        s, k_prev = s_next, k
    return s


def griffin_lim(magnitude: Tensor, n_fft: int, hop_length: int, n_iter: int = 64, momentum: float = 0.99,
                length: int | None = None, seed: int = 0) -> Tensor:
    r"""A waveform whose STFT magnitude approximates ``magnitude`` ``(..., F, T)`` -> ``(..., length)``.

    Fast Griffin-Lim (Perraudin et al. 2013, Algorithm 2): with :math:`P_1(c) = S\,c/|c|` (the given
    magnitude) and :math:`P_2(c) = \mathrm{STFT}(\mathrm{iSTFT}(c))` (the nearest consistent
    spectrogram), :math:`t_n = P_1(P_2(c_{n-1}))`, :math:`c_n = t_n + \alpha(t_n - t_{n-1})`; the result
    is :math:`\mathrm{iSTFT}(t_N)`.  ``momentum`` :math:`\alpha = 0` is the original algorithm of
    Griffin & Lim (1984).  The initial phase is one random pattern drawn from ``seed`` and shared by
    every item, so each output depends only on its own magnitude."""
    F_, T = magnitude.shape[-2:]
    length = T * hop_length if length is None else length
    g = torch.Generator().manual_seed(seed)
    phase = torch.rand(F_, T, generator=g, dtype=torch.float64).mul(2 * math.pi).to(magnitude.device)
    S = magnitude.float()
    c = S * torch.polar(torch.ones_like(phase), phase).to(torch.complex64)

    def project(c: Tensor) -> Tensor:
        c = stft(istft(c, n_fft, hop_length, length), n_fft, hop_length)[..., :T]
        return S * c / c.abs().clamp_min(1e-12)

    t_prev = c
    for _ in range(n_iter):
        t = project(c)
        c = t + momentum * (t - t_prev)
        t_prev = t
    return istft(t_prev, n_fft, hop_length, length)


def spectral_convergence(magnitude: Tensor, x: Tensor, n_fft: int, hop_length: int) -> Tensor:
    r""":math:`\|S - |\mathrm{STFT}(x)|\|_F / \|S\|_F` per item (Sturmel & Daudet 2011): how far the
    waveform ``x`` ``(..., L)`` is from having the magnitude ``S`` ``(..., F, T)`` (0: exactly)."""
    est = stft(x, n_fft, hop_length)[..., : magnitude.shape[-1]].abs()
    return (magnitude - est).flatten(-2).norm(dim=-1) / magnitude.flatten(-2).norm(dim=-1).clamp_min(1e-12)


class MelEncoder(Encoder):
    r"""Waveforms ``(N, 1, L)`` in [-1, 1] <-> normalised log-mel images ``(N, 1, n_mels, L / hop)``.

    ``length``: the waveforms' samples (a multiple of ``hop_length``).  ``log_min``/``log_max``: the mel
    magnitudes mapped to -1 and +1 (natural log); below ``log_min`` everything is silence.
    ``griffin_lim_iters``, ``momentum`` and ``nnls_iters`` set the inverse.  The filterbank is rebuilt from
    the config (no weights), so ``config()`` alone restores the encoder (:meth:`from_config`).
    """

    name = "mel"
    data_kind = "audio"       # what decode() returns

    def __init__(self, sample_rate: int = 8000, n_fft: int = 512, hop_length: int = 128, n_mels: int = 64,
                 fmin: float = 0.0, fmax: float | None = None, log_min: float = -10.0, log_max: float = 1.5,
                 griffin_lim_iters: int = 64, momentum: float = 0.99, nnls_iters: int = 100, length: int = 8192,
                 scale: float = 1.0):
        super().__init__(scale)
        if length < hop_length or length % hop_length:
            raise DifflabError(f"mel: the audio length {length} must be a multiple of the hop {hop_length}")
        if hop_length > n_fft // 2:
            raise DifflabError(f"mel: hop {hop_length} > n_fft/2 = {n_fft // 2}: the windows would not overlap "
                               f"enough to invert the STFT")
        if not log_min < log_max:
            raise DifflabError(f"mel: log_min {log_min} must be below log_max {log_max}")
        self.params: dict[str, Any] = dict(
            sample_rate=int(sample_rate), n_fft=int(n_fft), hop_length=int(hop_length), n_mels=int(n_mels),
            fmin=float(fmin), fmax=None if fmax is None else float(fmax), log_min=float(log_min),
            log_max=float(log_max), griffin_lim_iters=int(griffin_lim_iters), momentum=float(momentum),
            nnls_iters=int(nnls_iters), length=int(length))
        self.register_buffer("fb", mel_filterbank(sample_rate, n_fft, n_mels, fmin, fmax), persistent=False)

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> "MelEncoder":
        """The encoder of a ``config()`` (as a checkpoint or a classifier records it)."""
        cfg = {k: v for k, v in cfg.items() if k != "name"}
        try:
            return cls(**cfg)
        except TypeError as e:
            raise DifflabError(f"bad mel encoder config: {e}") from None

    def config(self) -> dict[str, Any]:
        return {**super().config(), **self.params}

    @property
    def data_shape(self) -> tuple[int, ...]:
        """The waveforms' shape ``(1, length)``, what :meth:`decode` returns."""
        return (1, self.params["length"])

    def latent_shape(self, data_shape: tuple[int, ...] | None = None) -> tuple[int, ...]:
        """``(1, n_mels, length / hop)``; ``data_shape`` (default: this encoder's) is checked."""
        if data_shape is not None and tuple(data_shape) != self.data_shape:
            raise DifflabError(f"this mel encoder takes mono audio of shape {self.data_shape}, got {tuple(data_shape)}")
        return (1, self.params["n_mels"], self.params["length"] // self.params["hop_length"])

    def magnitude(self, x: Tensor) -> Tensor:
        """:math:`|\\mathrm{STFT}(x)|`: ``(N, 1, L)`` -> ``(N, 1, F, T)``."""
        return stft(x, self.params["n_fft"], self.params["hop_length"]).abs()

    def mel(self, x: Tensor) -> Tensor:
        """Mel magnitudes :math:`W|X|`: ``(N, 1, L)`` -> ``(N, 1, n_mels, T)``."""
        return self.fb.float() @ self.magnitude(x)

    def _centre_width(self) -> tuple[float, float]:
        lo, hi = self.params["log_min"], self.params["log_max"]
        return (hi + lo) / 2, (hi - lo) / 2

    def _encode(self, x: Tensor) -> Tensor:
        if x.ndim != 3 or tuple(x.shape[1:]) != self.data_shape:
            raise DifflabError(f"mel encoder takes waveforms (N, {', '.join(map(str, self.data_shape))}), "
                               f"got shape {tuple(x.shape)}")
        c, d = self._centre_width()
        return (self.mel(x).clamp_min(math.exp(self.params["log_min"])).log() - c) / d

    def mel_from_code(self, z: Tensor) -> Tensor:
        """The mel magnitudes of a code (the inverse of the log and the normalisation; codes below -1
        are silence)."""
        c, d = self._centre_width()
        return torch.exp(c + d * z.float().clamp(max=(self.params["log_max"] + 1.0 - c) / d))

    def linear_from_code(self, z: Tensor) -> Tensor:
        """The linear STFT magnitude ``(N, 1, F, T)`` of codes ``(N, 1, n_mels, T)`` (:func:`mel_to_linear`)."""
        return mel_to_linear(self.mel_from_code(z), self.fb.float(), self.params["nnls_iters"])

    def vocode(self, magnitude: Tensor) -> Tensor:
        """Griffin-Lim of a linear magnitude ``(N, 1, F, T)`` -> waveforms ``(N, 1, length)`` in [-1, 1]."""
        p = self.params
        return griffin_lim(magnitude, p["n_fft"], p["hop_length"], p["griffin_lim_iters"], p["momentum"],
                           p["length"]).clamp(-1, 1)

    def _decode(self, z: Tensor) -> Tensor:
        if z.ndim != 4 or tuple(z.shape[1:]) != self.latent_shape():
            raise DifflabError(f"mel decoder takes codes (N, {', '.join(map(str, self.latent_shape()))}), "
                               f"got shape {tuple(z.shape)}")
        return self.vocode(self.linear_from_code(z))


@torch.no_grad()
def mel_dataset(data: AudioData, encoder: Encoder | None = None, batch_size: int = 256, **options: Any) -> MelData:
    """Waveforms -> :class:`~difflab.data.kinds.MelData`: their log-mel images, encoded once by ``encoder``
    (default: a :class:`MelEncoder` at the data's rate and length, ``options`` overriding its others), with
    the labels, class names and the encoder, which a model trained on them records (:mod:`.attached`).
    Encoding FSDD's 2,500 training recordings takes ~3 s, so the images are not cached on disk."""
    if data.kind != AudioData.kind:
        raise DifflabError(f"log-mel spectrograms are made of audio, not of {data.kind}")
    if encoder is not None and not isinstance(encoder, MelEncoder):
        raise DifflabError(f"audio is diffused as log-mels or waveforms; a {encoder.name} encoder does not apply")
    enc = encoder or MelEncoder(sample_rate=data.sample_rate, length=data.shape[-1], **options)
    z = torch.cat([enc.encode(data.x[i:i + batch_size]) for i in range(0, len(data), batch_size)])
    return MelData(z, data.labels, name=f"{data.name}-mel", info=dict(data.info), classes=data.classes,
                   names=getattr(data, "names", None), waveforms=data.x, encoder=enc)
