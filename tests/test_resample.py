"""Streaming resampler: the figures of the spec and streaming == one-shot."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose, assert_array_equal
from scipy import signal

from rtdenoise.resample import StreamingResampler

DEVICE_RATES = [16000, 22050, 44100, 48000]
PAIRS = [(sr, 8000) for sr in DEVICE_RATES] + [(8000, sr) for sr in DEVICE_RATES]
IDS = [f"{a}-{b}" for a, b in PAIRS]


def prototype(r: StreamingResampler) -> np.ndarray:
    """The full lowpass at the intermediate rate, rebuilt from the polyphase table (gain L)."""
    return r.taps[:, ::-1].T.reshape(-1).astype(np.float64)


def tone(f: float, sr: int, n: int, amp: float = 0.5) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * f * np.arange(n) / sr)).astype(np.float32)[:, None]


def fit_tone(y: np.ndarray, f: float, sr: int) -> tuple[float, np.ndarray]:
    """Least-squares sinusoid at f: (amplitude, residual)."""
    t = np.arange(len(y)) / sr
    basis = np.stack([np.sin(2 * np.pi * f * t), np.cos(2 * np.pi * f * t)], axis=1)
    coef, *_ = np.linalg.lstsq(basis, y.astype(np.float64), rcond=None)
    return float(np.hypot(*coef)), y - basis @ coef


@pytest.mark.parametrize("prior", [0, 545, 7])
@pytest.mark.parametrize(("sr_in", "sr_out"), PAIRS, ids=IDS)
def test_filter_spec(sr_in: int, sr_out: int, prior: int) -> None:
    """Latency, flatness and rejection; integer delay (own, or the chain's with prior_delay)."""
    r = StreamingResampler(sr_in, sr_out, prior_delay=prior)
    assert isinstance(r.total_delay, int)
    if prior == 0:
        assert isinstance(r.delay, int)
    assert r.latency_s <= 0.002  # 1.7 ms: the stopband starts at 4.6 kHz
    h = np.trim_zeros(prototype(r), "b")
    assert_allclose(h, h[::-1], atol=1e-7)  # linear phase ...
    assert (len(h) - 1) / 2 == r.delay * r.down  # ... with a delay of `delay` output samples
    fs_mid = sr_in * r.up
    f = np.concatenate([np.linspace(0, 3400, 800), np.linspace(4600, fs_mid / 2, 1 << 15)])
    _, resp = signal.freqz(h / r.up, worN=f, fs=fs_mid)
    db = 20 * np.log10(np.abs(resp) + 1e-15)
    passband = db[f <= 3400]
    assert passband.max() - passband.min() <= 0.1
    assert np.abs(passband).max() <= 0.05
    assert db[f >= 4600].max() <= -60.0


@pytest.mark.parametrize("sr_in", DEVICE_RATES)
def test_down_tones(sr_in: int) -> None:
    """Into 8 kHz: passband tones keep their level; tones above 4.6 kHz are >= 60 dB down, and
    4.0-4.6 kHz tones alias only to 3.4-4.0 kHz, above the passband."""
    r = StreamingResampler(sr_in, 8000)
    skip = 2 * r.delay + 10  # filter start-up transient, in output samples
    for f in (300.0, 1000.0, 3400.0):
        r.reset()
        y = r.process(tone(f, sr_in, sr_in // 4))[skip:, 0]
        amp, _ = fit_tone(y, f, 8000)
        assert abs(20 * np.log10(amp / 0.5)) <= 0.1, f
    for f in (4600.0, 6000.0, 7900.0, 0.45 * sr_in):
        r.reset()
        y = r.process(tone(f, sr_in, sr_in // 4))[skip:, 0]
        assert 20 * np.log10(np.sqrt(2) * y.std() / 0.5) <= -60.0, f
    for f in (4000.0, 4300.0, 4590.0):  # transition band: the alias sits at 8000 - f >= 3.4 kHz
        r.reset()
        y = r.process(tone(f, sr_in, sr_in // 4))[skip:, 0]
        w = signal.windows.blackmanharris(len(y))
        power = np.abs(np.fft.rfft(y * w)) ** 2
        ref = np.abs(np.fft.rfft(tone(1000.0, 8000, len(y))[:, 0] * w)) ** 2  # a 0.5 tone
        in_band = power[np.fft.rfftfreq(len(y), 1 / 8000) < 3300].sum() / ref.sum()
        assert 10 * np.log10(in_band + 1e-30) <= -60.0, f


@pytest.mark.parametrize("sr_out", DEVICE_RATES)
def test_up_tones(sr_out: int) -> None:
    """From 8 kHz: the tone keeps its level and its images (>= 4.6 kHz) are >= 60 dB down."""
    r = StreamingResampler(8000, sr_out)
    for f in (300.0, 1000.0, 2500.0, 3400.0):
        r.reset()
        y = r.process(tone(f, 8000, 2000))[2 * r.delay + 10 :, 0]
        amp, residual = fit_tone(y, f, sr_out)
        assert abs(20 * np.log10(amp / 0.5)) <= 0.1, f
        assert 20 * np.log10(np.sqrt(2) * residual.std() / 0.5) <= -60.0, f


@pytest.mark.parametrize("prior", [0, 545])
@pytest.mark.parametrize(("sr_in", "sr_out"), PAIRS, ids=IDS)
def test_delay_is_the_group_delay(sr_in: int, sr_out: int, prior: int) -> None:
    """A 3 kHz tone comes out as the same tone `delay` (maybe fractional) output samples later."""
    r = StreamingResampler(sr_in, sr_out, prior_delay=prior)
    x = tone(3000.0, sr_in, sr_in // 8)
    y = r.process(x)[:, 0]
    k = np.arange(len(y))
    expect = 0.5 * np.sin(2 * np.pi * 3000.0 * (k - float(r.delay)) / sr_out)
    settle = int(2 * r.delay) + 10
    assert np.abs(y[settle:] - expect[settle:]).max() < 2e-3


@pytest.mark.parametrize(("sr_in", "sr_out"), PAIRS, ids=IDS)
def test_matches_scipy_upfirdn(sr_in: int, sr_out: int) -> None:
    r = StreamingResampler(sr_in, sr_out, channels=2)
    x = np.random.default_rng(1).standard_normal((sr_in // 20 + 3, 2)).astype(np.float32)
    y = r.process(x)
    assert len(y) == r.total_output(len(x)) == int(np.ceil(len(x) * sr_out / sr_in))
    ref = signal.upfirdn(prototype(r), x.astype(np.float64), r.up, r.down, axis=0)[: len(y)]
    assert_allclose(y, ref, atol=1e-5)


@pytest.mark.parametrize("sr", [8000, 16000, 48000])
def test_identity_when_rates_are_equal(sr: int) -> None:
    r = StreamingResampler(sr, sr, channels=2)
    x = np.random.default_rng(2).standard_normal((333, 2)).astype(np.float32)
    assert r.delay == 0 and r.identity
    assert_array_equal(r.process(x), x)


@pytest.mark.parametrize(("sr_in", "sr_out"), PAIRS, ids=IDS)
def test_causal(sr_in: int, sr_out: int) -> None:
    """Changing the future input leaves every output already produced unchanged."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2000, 1)).astype(np.float32)
    x2 = x.copy()
    x2[1200:] = rng.standard_normal((800, 1))
    a, b = StreamingResampler(sr_in, sr_out), StreamingResampler(sr_in, sr_out)
    ya, yb = a.process(x), b.process(x2)
    n_past = a.total_output(1200)
    assert_array_equal(ya[:n_past], yb[:n_past])
    assert not np.allclose(ya[n_past:], yb[n_past:])


def test_small_chunks_reset_and_out_buffer() -> None:
    r = StreamingResampler(44100, 8000, channels=2)
    assert r.process(np.zeros((0, 2), np.float32)).shape == (0, 2)
    x = np.random.default_rng(4).standard_normal((1000, 2)).astype(np.float32)
    one_by_one = np.concatenate([r.process(x[i : i + 1]) for i in range(len(x))])
    r.reset()
    out = np.full((500, 2), np.nan, np.float32)
    y = r.process(x, out=out)
    assert np.shares_memory(y, out) and len(y) == r.total_output(1000)
    assert_allclose(one_by_one, y, atol=1e-6)
    mono = StreamingResampler(8000, 48000)
    assert mono.process(np.ones(5, np.float32)).shape == (30,)
    with pytest.raises(ValueError):
        r.process(np.zeros((4, 3), np.float32))


@settings(max_examples=25, deadline=None)
@given(
    pair=st.sampled_from(PAIRS),
    channels=st.integers(1, 2),
    n=st.integers(0, 3000),
    cuts=st.lists(st.integers(0, 3000), max_size=12),
    seed=st.integers(0, 2**16),
)
def test_chunked_equals_one_shot(
    pair: tuple[int, int], channels: int, n: int, cuts: list[int], seed: int
) -> None:
    sr_in, sr_out = pair
    x = np.random.default_rng(seed).standard_normal((n, channels)).astype(np.float32)
    r = StreamingResampler(sr_in, sr_out, channels)
    whole = r.process(x)
    r.reset()
    bounds = [0, *sorted(c for c in cuts if c <= n), n]
    parts = []
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        expected = r.output_length(b - a)
        parts.append(r.process(x[a:b]))
        assert len(parts[-1]) == expected
    chunked = np.concatenate(parts)
    assert len(whole) == len(chunked) == r.total_output(n)
    assert_allclose(chunked, whole, atol=1e-6, rtol=0)
