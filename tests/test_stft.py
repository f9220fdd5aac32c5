"""STFT pair: offline == scipy, streaming == offline, exact reconstruction, exact OLA norm."""

import numpy as np
import pytest
import scipy.signal
from hypothesis import given, settings
from hypothesis import strategies as st

from rtdenoise.stft import StftAnalyzer, StftConfig, StftSynthesizer, istft, ola_norm, stft

CFG = StftConfig()
SCIPY_ARGS = dict(fs=8000, window="hann", nperseg=519, noverlap=488)
CHUNKS = [1, 30, 31, 32, 519, 4000]


def _rng(seed=0):
    return np.random.default_rng(seed)


def test_framing_numbers():
    assert (CFG.hop, CFG.n_freqs, CFG.pad) == (31, 260, 259)
    assert CFG.latency_samples == 518
    assert CFG.latency(4, 2) == 518 + 5 * 31
    # one second at 8 kHz is a square 260 x 260 spectrogram
    assert stft(np.zeros(8000), CFG).shape == (260, 260)
    with pytest.raises(ValueError):
        StftConfig(nperseg=64, noverlap=64)


@pytest.mark.parametrize("n", [519, 520, 549, 550, 1234, 8001])
def test_offline_matches_scipy(n):
    x = _rng(n).standard_normal((2, n))
    z = stft(x, CFG)
    _, _, zs = scipy.signal.stft(x, **SCIPY_ARGS)
    assert z.shape == (2, zs.shape[-1], 260)
    np.testing.assert_allclose(z, np.swapaxes(zs, -1, -2), rtol=0, atol=1e-6)
    # inverse on a modified spectrum (not just a round trip)
    zm = z * (1.0 + 0.5 * _rng(1).standard_normal(z.shape))
    y = istft(zm, CFG)
    _, ys = scipy.signal.istft(np.swapaxes(zm, -1, -2), **SCIPY_ARGS)
    assert y.shape == ys.shape
    np.testing.assert_allclose(y, ys, rtol=0, atol=1e-6)


def test_offline_round_trip_and_dtypes():
    x = _rng().standard_normal(3000).astype(np.float32)
    z = stft(x, CFG)
    assert z.dtype == np.complex64
    y = istft(z, CFG, length=len(x))
    assert y.dtype == np.float32 and y.shape == x.shape
    np.testing.assert_allclose(y, x, rtol=0, atol=1e-5)
    longer = istft(z, CFG, length=len(x) + 5000)
    assert longer.shape == (len(x) + 5000,) and np.all(longer[-4000:] == 0.0)
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(istft(stft(x64, CFG), CFG, length=3000), x64, rtol=0, atol=1e-12)


def test_ola_norm_exact_for_hop_not_dividing_nperseg():
    startup, steady = ola_norm(CFG)
    w2 = CFG.window_array**2
    n = 100 * CFG.hop + CFG.nperseg
    brute = np.zeros(n)
    for i in range(100):
        brute[i * CFG.hop : i * CFG.hop + CFG.nperseg] += w2
    np.testing.assert_allclose(brute[: len(startup)], startup, rtol=1e-12)
    s = len(startup)
    k = np.arange(s, 100 * CFG.hop)
    np.testing.assert_allclose(brute[k], steady[k % CFG.hop], rtol=1e-12)
    assert len(startup) % CFG.hop == 0 and len(startup) >= CFG.nperseg - 1
    # not constant: the exact normalisation matters for this hop
    assert steady.max() / steady.min() - 1.0 > 1e-6


def _stream(x, chunks, channels=1, max_frames=64, batch=64, cfg=CFG):
    """Run analyzer + synthesizer over x [C, n] in the given chunk sizes."""
    an = StftAnalyzer(cfg, channels, max_frames)
    sy = StftSynthesizer(cfg, channels, max_frames)
    frames, outs = [], []
    pos = 0
    for c in chunks:
        piece = x[:, pos : pos + c]
        pos += c
        for k in range(0, piece.shape[1], an.max_push):
            an.push(piece[:, k : k + an.max_push])
            while an.available:
                f = an.pop(min(an.available, batch))  # a view, valid until the next pop
                frames.append(f.copy())
                outs.append(sy.push(f).copy())
    return np.concatenate(frames, axis=1), np.concatenate(outs, axis=1)


def _chunks_of(size, n):
    return [size] * (-(-n // size))


@pytest.mark.parametrize("chunk", CHUNKS)
def test_streaming_equals_offline_and_reconstructs(chunk):
    n = 5000
    x = _rng(chunk).standard_normal((2, n)).astype(np.float32)
    f, y = _stream(x, _chunks_of(chunk, n), channels=2, batch=7)
    z = stft(x, CFG)
    # every frame whose samples have all arrived, identical to offline
    assert f.shape[1] == (n + CFG.pad - CFG.nperseg) // CFG.hop + 1
    np.testing.assert_allclose(f, z[:, : f.shape[1]], rtol=0, atol=1e-6)
    # identity synthesis gives back the input, time aligned, up to the last finalised hop
    assert y.shape[1] == f.shape[1] * CFG.hop - CFG.pad
    np.testing.assert_allclose(y, x[:, : y.shape[1]], rtol=0, atol=1e-5)


@settings(max_examples=15, deadline=None)
@given(st.lists(st.integers(1, 700), min_size=1, max_size=25), st.integers(1, 9))
def test_streaming_random_chunkings(chunks, batch):
    n = sum(chunks)
    x = _rng(n).standard_normal((1, n)).astype(np.float32)
    an_frames = (n + CFG.pad - CFG.nperseg) // CFG.hop + 1
    if an_frames <= 0:
        return
    f, y = _stream(x, chunks, batch=batch)
    np.testing.assert_allclose(f, stft(x, CFG)[:, :an_frames], rtol=0, atol=1e-6)
    np.testing.assert_allclose(y, x[:, : y.shape[1]], rtol=0, atol=1e-5)


def test_streaming_synthesis_equals_offline_istft_for_any_frames():
    """Non-identity spectra: streaming OLA (any batch sizes) == offline istft, sample for sample."""
    rng = _rng(3)
    z = (rng.standard_normal((2, 90, 260)) + 1j * rng.standard_normal((2, 90, 260))).astype(
        np.complex64
    )
    sy = StftSynthesizer(CFG, 2, max_frames=16)
    outs, i = [], 0
    for m in [1, 2, 16, 5, 16, 16, 3, 16, 15]:
        outs.append(sy.push(z[:, i : i + m]).copy())
        i += m
    y = np.concatenate(outs, axis=1)
    ref = istft(z.astype(np.complex128), CFG)
    assert y.shape[1] == 90 * CFG.hop - CFG.pad
    np.testing.assert_allclose(y, ref[:, : y.shape[1]], rtol=0, atol=1e-5)


def test_reset_restarts_stream():
    x = _rng(5).standard_normal((1, 2000)).astype(np.float32)
    an = StftAnalyzer(CFG, 1)
    an.push(_rng(6).standard_normal((1, 1000)).astype(np.float32))
    an.reset()
    an.push(x[:, :1000])
    an.push(x[:, 1000:])
    got = an.pop(an.available)
    np.testing.assert_allclose(got, stft(x, CFG)[:, : got.shape[1]], atol=1e-6)


def test_public_fft_fallback_matches(monkeypatch):
    """The private pocketfft fast path and the public scipy.fft fallback agree."""
    from rtdenoise import stft as mod

    x = _rng(9).standard_normal((1, 3000)).astype(np.float32)
    fast, _ = _stream(x, [700] * 5)
    monkeypatch.setattr(mod, "_rfft_into", mod._public_rfft_into)
    monkeypatch.setattr(mod, "_irfft_into", mod._public_irfft_into)
    slow, y = _stream(x, [700] * 5)
    np.testing.assert_allclose(fast, slow, rtol=0, atol=1e-6)
    np.testing.assert_allclose(y, x[:, : y.shape[1]], rtol=0, atol=1e-5)


def test_push_limits():
    an = StftAnalyzer(CFG, 1, max_frames=4)
    with pytest.raises(ValueError):
        an.push(np.zeros((1, an.max_push + 1), np.float32))
    an.push(np.zeros((1, an.max_push), np.float32))
    with pytest.raises(ValueError):
        an.pop(an.available + 1)


def test_one_frame_pops_equal_batched_pops():
    """Streaming's one-frame pops (one transform, not a SIMD batch of 4) give the batch's
    frames."""
    x = _rng(9).standard_normal((2, 3000)).astype(np.float32)
    one, _ = _stream(x, _chunks_of(31, 3000), channels=2, batch=1)
    many, _ = _stream(x, [3000], channels=2, batch=64)
    np.testing.assert_allclose(one, many[:, : one.shape[1]], rtol=0, atol=1e-7)
