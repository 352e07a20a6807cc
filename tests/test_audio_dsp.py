"""The log-mel encoder's maths: Slaney's mel scale and filterbank (against librosa and in closed form), the
STFT round trip, the mel -> linear least squares, Griffin-Lim on real recordings, the encoder's config."""
import math

import numpy as np
import pytest
import torch

from difflab.data.audio import FSDD_SPEAKERS, fit_length, from_int16, read_wav
from difflab.encoders import MelEncoder, load_encoder
from difflab.encoders.mel import (griffin_lim, hz_to_mel, istft, mel_filterbank, mel_to_hz, mel_to_linear,
                                  spectral_convergence, stft)
from difflab.errors import DifflabError


@pytest.fixture
def clips(fsdd_dir):
    """Eight real recordings (digits 0-7, every speaker), peak 0.9, centred in 8192 samples: (8, 1, 8192)."""
    xs = []
    for d in range(8):
        _, a = read_wav(fsdd_dir / f"{d}_{FSDD_SPEAKERS[d % 6]}_3.wav")
        x = from_int16(a).numpy()
        xs.append(fit_length(0.9 * x / np.abs(x).max(), 8192)[0])
    return torch.tensor(np.stack(xs))[:, None]


@pytest.mark.parametrize("sr,n_fft,n_mels,fmin,fmax", [(8000, 512, 64, 0.0, None), (8000, 256, 40, 0.0, None),
                                                       (16000, 1024, 80, 50.0, 7000.0)])
def test_mel_filterbank_matches_librosa(sr, n_fft, n_mels, fmin, fmax):
    librosa = pytest.importorskip("librosa", reason="librosa (test extra) is the reference filterbank")
    ref = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax, htk=False, norm="slaney",
                              dtype=np.float64)
    # same formula in float64 on both sides: equal to rounding
    np.testing.assert_allclose(mel_filterbank(sr, n_fft, n_mels, fmin, fmax).numpy(), ref, rtol=1e-10, atol=1e-14)


def test_slaney_scale_in_closed_form():
    f = torch.tensor([0.0, 200 / 3, 500.0, 1000.0, 6400.0, 1000 * 6.4**2])
    # linear below 1 kHz (200/3 Hz per mel), 27 mels per factor 6.4 above, continuous at 1 kHz = 15 mels
    torch.testing.assert_close(hz_to_mel(f), torch.tensor([0.0, 1.0, 7.5, 15.0, 42.0, 69.0], dtype=torch.float64))
    g = torch.linspace(0, 8000, 101, dtype=torch.float64)
    torch.testing.assert_close(mel_to_hz(hz_to_mel(g)), g)


def test_filters_are_unit_area_triangles_peaking_at_mel_spaced_centres():
    """On a fine frequency grid (1 Hz bins), each filter is a triangle on [f_m, f_m+2] with its peak
    2/(f_m+2 - f_m) at f_m+1, the edges equally spaced in mel; its area is 1 (Slaney normalisation)."""
    sr, n_fft, n_mels = 8000, 8000, 20
    fb = mel_filterbank(sr, n_fft, n_mels)
    freqs = torch.arange(n_fft // 2 + 1, dtype=torch.float64)   # 1 Hz per bin
    edges = mel_to_hz(torch.linspace(0, float(hz_to_mel(4000.0)), n_mels + 2, dtype=torch.float64))
    assert torch.allclose(hz_to_mel(edges).diff(), hz_to_mel(edges).diff()[0].expand(n_mels + 1))
    for m in range(n_mels):
        lo, c, hi = edges[m:m + 3].tolist()
        row = fb[m]
        assert (row >= 0).all() and (row[(freqs <= lo) | (freqs >= hi)] == 0).all()
        height = 2 / (hi - lo)
        tri = height * torch.minimum((freqs - lo) / (c - lo), (hi - freqs) / (hi - c)).clamp_min(0)
        torch.testing.assert_close(row, tri)
        assert abs(float(freqs[row.argmax()]) - c) <= 1.0 and float(row.max()) <= height
        assert math.isclose(float(row.sum()), 1.0, rel_tol=2e-3)   # Riemann sum of the area, 1 Hz bins


def test_stft_round_trip_and_librosa_frames(clips):
    x = torch.cat([clips, 0.5 * torch.randn(2, 1, 8192, generator=torch.Generator().manual_seed(0)).clamp(-1, 1)])
    X = stft(x, 512, 128)
    assert X.shape == (10, 1, 257, 64)
    assert (istft(X, 512, 128) - x).abs().max() < 1e-5     # float32 overlap-add
    librosa = pytest.importorskip("librosa")
    ref = librosa.stft(x[0, 0].numpy(), n_fft=512, hop_length=128, pad_mode="constant")[:, :64]
    np.testing.assert_allclose(X[0, 0].numpy(), ref, atol=1e-4 * np.abs(ref).max())


def test_pseudo_inverse_recovers_a_spectrum_in_the_filters_span():
    W = mel_filterbank(8000, 512, 64)
    c = torch.rand(3, 64, 10, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    S = W.T @ c                         # non-negative and in the row space of W
    M = W @ S
    torch.testing.assert_close(mel_to_linear(M, W, n_iter=0), S, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(mel_to_linear(M, W, n_iter=50), S, rtol=1e-8, atol=1e-10)  # stays at the optimum


def test_nonnegative_least_squares_reaches_the_exact_optimum_on_real_spectra(clips):
    from scipy.optimize import nnls
    W = mel_filterbank(8000, 512, 64)
    M = (W.float() @ stft(clips, 512, 128).abs()).double()
    S0, S = mel_to_linear(M, W, n_iter=0), mel_to_linear(M, W, n_iter=100)
    rel = lambda S: ((W @ S - M).flatten(-2).norm(dim=-1) / M.flatten(-2).norm(dim=-1))  # noqa: E731
    assert (S >= 0).all()
    assert rel(S0).max() > 0.02            # the clamped pseudo-inverse alone misses (measured 0.077)
    assert rel(S).max() < 1e-4             # FISTA: measured 5e-6 after 100 steps
    for k, t in [(0, 30), (3, 32), (6, 40)]:   # scipy's active-set NNLS: the same (zero) residual
        m = M[k, 0, :, t].numpy()
        _, r = nnls(W.numpy(), m, maxiter=5000)
        assert np.linalg.norm(W.numpy() @ S[k, 0, :, t].numpy() - m) <= r + 1e-4 * np.linalg.norm(m)


def test_griffin_lim_spectral_convergence_on_real_recordings(clips):
    """Measured on these eight recordings: mean SC 0.26 / 0.090 / 0.037 after 4 / 16 / 64 fast iterations
    (max 0.082); plain Griffin-Lim 0.17 / 0.076 after 16 / 64."""
    mag = stft(clips, 512, 128).abs()
    sc = {it: spectral_convergence(mag, griffin_lim(mag, 512, 128, it), 512, 128) for it in (4, 16, 64)}
    assert sc[4].mean() > sc[16].mean() > sc[64].mean()
    assert sc[64].mean() < 0.05 and sc[64].max() < 0.12
    plain = spectral_convergence(mag, griffin_lim(mag, 512, 128, 16, momentum=0.0), 512, 128)
    assert sc[16].mean() < 0.8 * plain.mean()      # the momentum of the fast algorithm pays
    assert spectral_convergence(mag, clips, 512, 128).max() < 1e-5   # the true signal: 0
    y = griffin_lim(mag[:2], 512, 128, 4)
    assert torch.equal(y[1], griffin_lim(mag[1:2], 512, 128, 4)[0])   # each output depends on its own input only


def test_mel_encoder_codes_decode_and_config(clips):
    enc = MelEncoder()
    z = enc.encode(clips)
    assert z.shape == (8, 1, 64, 64) and enc.latent_shape((1, 8192)) == (1, 64, 64)
    assert z.min() >= -1 and z.max() <= 1 and (z == -1).any()      # silence at -1, no clipping above
    torch.testing.assert_close(enc.mel_from_code(z), enc.mel(clips).clamp_min(math.exp(-10.0)))
    x = enc.decode(z)
    assert x.shape == clips.shape and x.abs().max() <= 1
    # the decoded audio has (nearly) the mel spectrogram it was decoded from
    mel_sc = (enc.mel(x) - enc.mel(clips)).flatten(1).norm(dim=1) / enc.mel(clips).flatten(1).norm(dim=1)
    assert mel_sc.max() < 0.15
    again = MelEncoder.from_config(enc.config())
    assert again.digest() == enc.digest() != MelEncoder(n_mels=32).digest()
    torch.testing.assert_close(again.encode(clips), z)
    # what a checkpoint records (encoders.attached): the config alone rebuilds it, a changed one is refused
    record = {"name": "mel", "config": enc.config(), "digest": enc.digest()}
    assert load_encoder(record).digest() == enc.digest()
    with pytest.raises(DifflabError, match="is not the one this model was trained with"):
        load_encoder({**record, "config": {**enc.config(), "griffin_lim_iters": 8}})
    with pytest.raises(DifflabError, match="bad mel encoder config"):
        MelEncoder.from_config({"name": "mel", "colour": "red"})
    with pytest.raises(DifflabError, match=r"takes waveforms \(N, 1, 8192\)"):
        enc.encode(torch.zeros(2, 1, 4096))
    with pytest.raises(DifflabError, match="windows would not overlap"):
        MelEncoder(n_fft=256, hop_length=128 + 8, length=136 * 8)
    with pytest.raises(DifflabError, match="must be a multiple of the hop"):
        MelEncoder(length=8000)
