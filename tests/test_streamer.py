"""Streamer invariants: streaming == offline, exact reconstruction, blocks, channels, causality."""

import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtdenoise.processor import IdentityProcessor, MaskProcessor
from rtdenoise.stft import StftConfig, istft, stft
from rtdenoise.streamer import Streamer

CFG = StftConfig()
CHUNKS = [1, 30, 31, 32, 519, 4000]


class SmoothProcessor:
    """Stateful test processor with lookahead L: P[t] = g*(0.5 Z[t] + 0.3 Z[t+L]) + 0.2 P[t-1].

    Follows the FrameProcessor contract: given input frames [j, j+K) it writes frames
    [j-L, j-L+K); the L frames before the stream start are zeros and do not touch the state.
    """

    def __init__(self, block_frames=1, lookahead_frames=0):
        self.block_frames = block_frames
        self.lookahead_frames = lookahead_frames
        self.gain = np.linspace(0.2, 1.0, CFG.n_freqs)

    def reset(self, channels):
        self.hist = np.zeros((channels, self.lookahead_frames + 1, CFG.n_freqs), np.complex128)
        self.prev = np.zeros((channels, CFG.n_freqs), np.complex128)
        self.seen = 0

    def process(self, frames, out):
        assert frames.shape == out.shape and frames.shape[1] == self.block_frames
        for k in range(frames.shape[1]):
            self.hist[:, :-1] = self.hist[:, 1:].copy()
            self.hist[:, -1] = frames[:, k]
            self.seen += 1
            if self.seen <= self.lookahead_frames:
                out[:, k] = 0
                continue
            p = self.gain * (0.5 * self.hist[:, 0] + 0.3 * self.hist[:, -1]) + 0.2 * self.prev
            self.prev = p
            out[:, k] = p


def offline_reference(x, lookahead=0):
    """istft(process(stft(x))) for x [n] or [n, C], offline in float64, same length as x."""
    x = np.asarray(x, np.float64)
    xt = x.T if x.ndim == 2 else x
    latency = CFG.latency(1, lookahead) + 4 * CFG.hop
    pad = np.zeros(xt.shape[:-1] + (latency,))
    z = stft(np.concatenate([xt, pad], axis=-1), CFG)
    z = z if z.ndim == 3 else z[None]
    g = np.linspace(0.2, 1.0, CFG.n_freqs)
    p = np.zeros_like(z)
    prev = 0
    n_frames = z.shape[1]
    for t in range(n_frames):
        ahead = z[:, t + lookahead] if t + lookahead < n_frames else 0
        prev = g * (0.5 * z[:, t] + 0.3 * ahead) + 0.2 * prev
        p[:, t] = prev
    y = istft(p, CFG, length=xt.shape[-1])
    return y.T if x.ndim == 2 else y[0]


def _signal(n, channels=None, seed=0):
    rng = np.random.default_rng(seed)
    shape = (n,) if channels is None else (n, channels)
    return (0.5 * rng.standard_normal(shape)).astype(np.float32)


def _feed_chunks(streamer, x, chunks):
    outs, pos = [], 0
    for c in chunks:
        piece = x[pos : pos + c]
        pos += c
        y = streamer.feed(piece)
        assert y.shape == piece.shape and y.dtype == np.float32
        outs.append(y)
    return np.concatenate(outs)


def test_latency_numbers():
    assert Streamer().latency_samples == 518
    assert Streamer(IdentityProcessor(4)).latency_samples == 518 + 3 * 31
    assert Streamer(SmoothProcessor(3, 2)).latency_samples == 518 + 4 * 31
    assert Streamer().latency_samples == CFG.latency_samples


@pytest.mark.parametrize("chunk", CHUNKS)
def test_identity_reconstructs_exactly_delayed(chunk):
    x = _signal(4500, seed=chunk)
    s = Streamer()
    y = _feed_chunks(s, x, [chunk] * (-(-len(x) // chunk)))
    lat = s.latency_samples
    np.testing.assert_array_equal(y[:lat], 0.0)
    np.testing.assert_allclose(y[lat:], x[: len(x) - lat], rtol=0, atol=1e-5)
    assert s.underflows == 0
    tail = s.flush()
    assert tail.shape == (lat,)
    np.testing.assert_allclose(tail, x[len(x) - lat :], rtol=0, atol=1e-5)


@pytest.mark.parametrize("chunk", CHUNKS)
@pytest.mark.parametrize("k,la", [(1, 0), (3, 2)])
def test_streaming_equals_offline(chunk, k, la):
    x = _signal(3000, seed=7)
    ref = offline_reference(x, la)
    s = Streamer(SmoothProcessor(k, la), max_frames=8)
    y = _feed_chunks(s, x, [chunk] * (-(-len(x) // chunk)))
    lat = s.latency_samples
    y = np.concatenate([y, s.flush()])
    np.testing.assert_array_equal(y[:lat], 0.0)
    np.testing.assert_allclose(y[lat:], ref, rtol=0, atol=2e-5)
    np.testing.assert_allclose(Streamer(SmoothProcessor(k, la)).process(x), ref, atol=2e-5)


@settings(max_examples=12, deadline=None)
@given(st.lists(st.integers(0, 1500), min_size=1, max_size=12), st.integers(1, 4))
def test_random_chunkings(chunks, k):
    n = sum(chunks)
    x = _signal(n, seed=n)
    s = Streamer(SmoothProcessor(k, 1), max_frames=5)
    y = np.concatenate([_feed_chunks(s, x, chunks), s.flush()])
    np.testing.assert_allclose(y[s.latency_samples :], offline_reference(x, 1), atol=2e-5)


def test_block_size_changes_only_latency():
    x = _signal(5000, seed=3)
    y1 = Streamer(IdentityProcessor(1)).process(x)
    y4 = Streamer(IdentityProcessor(4)).process(x)
    np.testing.assert_allclose(y1, x, atol=1e-5)
    np.testing.assert_allclose(y4, y1, atol=1e-6)
    s1, s4 = Streamer(IdentityProcessor(1)), Streamer(IdentityProcessor(4))
    d = s4.latency_samples - s1.latency_samples
    assert d == 3 * CFG.hop
    np.testing.assert_allclose(s4.feed(x)[d:], s1.feed(x)[: len(x) - d], atol=1e-6)


def test_multichannel_equals_per_channel():
    x = _signal(3000, channels=3, seed=11)
    chunks = [100, 1, 517, 31, 2351]
    multi = _feed_chunks(Streamer(SmoothProcessor(2, 1), channels=3), x, chunks)
    for c in range(3):
        mono = _feed_chunks(Streamer(SmoothProcessor(2, 1)), np.ascontiguousarray(x[:, c]), chunks)
        np.testing.assert_allclose(multi[:, c], mono, rtol=0, atol=1e-6)
    y = Streamer(channels=3).process(x)
    assert y.shape == x.shape
    np.testing.assert_allclose(y, x, atol=1e-5)


def test_reset_equals_fresh_streamer():
    x = _signal(2500, seed=5)
    s = Streamer(SmoothProcessor(2, 1))
    s.feed(_signal(1234, seed=6))
    s.reset()
    fresh = Streamer(SmoothProcessor(2, 1))
    np.testing.assert_array_equal(s.feed(x), fresh.feed(x))


def test_causality():
    """Changing the future input leaves every output already returned unchanged."""
    t0 = 1700
    x1 = _signal(4000, seed=8)
    x2 = x1.copy()
    x2[t0:] = _signal(4000 - t0, seed=9)
    y1 = Streamer(SmoothProcessor(3, 2)).feed(x1)
    y2 = Streamer(SmoothProcessor(3, 2)).feed(x2)
    # output t is returned with input t: it may depend on x[:t+1] only
    np.testing.assert_array_equal(y1[:t0], y2[:t0])
    assert not np.allclose(y1, y2)


def test_process_shapes_and_flush():
    s = Streamer()
    assert s.process(np.zeros(0, np.float32)).shape == (0,)
    x = _signal(700, channels=1, seed=2)
    y = s.process(x)
    assert y.shape == (700, 1)
    np.testing.assert_allclose(y, x, atol=1e-5)
    assert Streamer(channels=2).flush().shape == (518, 2)
    # in place: out may be the input buffer itself
    buf = x.copy()
    s.reset()
    s.feed(buf, out=buf)
    np.testing.assert_array_equal(buf[:518], 0.0)
    np.testing.assert_allclose(buf[518:], x[: 700 - 518], atol=1e-5)
    with pytest.raises(ValueError):
        Streamer(channels=2).feed(np.zeros(10, np.float32))
    with pytest.raises(ValueError):
        Streamer().feed(np.zeros((10, 2), np.float32))


# -- device rates: resampling around the 8 kHz core ------------------------------------------

RATES = [16000, 22050, 44100, 48000]


def _tones(sr, seconds=0.5):
    """Band-limited test signal (below 3.4 kHz) with 50 ms fades."""
    t = np.arange(int(sr * seconds)) / sr
    x = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 2900 * t + 1)
    fade = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.05)
    return (x * fade).astype(np.float32)


@pytest.mark.parametrize("sr", RATES)
def test_resampled_identity_is_input_delayed_by_exact_latency(sr):
    s = Streamer(sample_rate=sr)
    assert s.residual_delay == 0.0
    # the 8 kHz core's 518 samples plus ~1.7 ms per resampler, whole at the device rate
    assert 518 * sr / 8000 < s.latency_samples < (518 * sr / 8000) + 0.004 * sr
    x = _tones(sr)
    y = s.process(x)
    assert y.shape == x.shape and s.underflows == 0
    mid = slice(sr // 10, -sr // 10)
    np.testing.assert_allclose(y[mid], x[mid], rtol=0, atol=1e-3)
    # a band-limited pulse comes out exactly latency_samples later
    k = np.arange(-200, 201)
    pulse = np.zeros(sr // 2, np.float32)
    pulse[sr // 4 + k] = np.sinc(k * 6000 / sr) * np.hanning(len(k))
    out = Streamer(sample_rate=sr).feed(pulse)
    assert np.argmax(out) == sr // 4 + s.latency_samples


@pytest.mark.parametrize("sr", [11025, 22050, 44100, 48000])
def test_align_block_frames_gives_the_other_block_size_output_exactly(sr):
    """At 16 frames per call aligned as 4 the whole-signal output is bit for bit the one at 4
    (file mode's cheap path); unaligned it differs where 8 kHz samples are not whole device
    samples (the up-resampler's filter length follows the latency), and only the latency moves.
    """
    x = _tones(sr, 0.4) + 0.05 * _signal(int(sr * 0.4), seed=1)
    ref = Streamer(SmoothProcessor(4, 1), sample_rate=sr)
    fast = Streamer(SmoothProcessor(16, 1), sample_rate=sr, align_block_frames=4)
    np.testing.assert_array_equal(fast.process(x), ref.process(x))
    pad = fast._core.latency - CFG.latency(16, 1)
    assert 0 <= pad < 8000 // np.gcd(8000, sr) and fast.residual_delay == ref.residual_delay
    plain = Streamer(SmoothProcessor(16, 1), sample_rate=sr)
    if pad:  # 11.025, 22.05, 44.1 kHz
        assert np.abs(plain.process(x) - ref.process(x)).max() > 1e-6
    else:
        np.testing.assert_array_equal(plain.process(x), ref.process(x))
    assert Streamer(IdentityProcessor(4), sample_rate=sr, align_block_frames=4)._core.latency == (
        CFG.latency(4)
    )


@pytest.mark.parametrize("sr", [22050, 48000])
def test_resampled_chunking_invariance_and_causality(sr):
    x = _signal(sr // 2, seed=sr)
    s = Streamer(SmoothProcessor(2, 1), sample_rate=sr)
    whole = s.feed(x)
    s.reset()
    rng = np.random.default_rng(1)
    chunks = [1] * 300 + list(rng.integers(0, 3000, 40))
    chunks.append(len(x) - sum(chunks))
    pieces = _feed_chunks(s, x, chunks)
    np.testing.assert_allclose(pieces, whole, rtol=0, atol=1e-6)
    assert s.underflows == 0
    x2 = x.copy()
    x2[5000:] = 0.0
    np.testing.assert_array_equal(
        Streamer(SmoothProcessor(2, 1), sample_rate=sr).feed(x2)[:5000], whole[:5000]
    )


def test_resampled_multichannel_and_reset():
    sr = 44100
    x = np.stack([_tones(sr, 0.3), _signal(int(sr * 0.3), seed=4)], axis=1)
    s = Streamer(sample_rate=sr, channels=2)
    s.feed(_signal(3000, channels=2, seed=1))
    y = s.process(x)  # process() resets first
    for c in range(2):
        mono = Streamer(sample_rate=sr).process(np.ascontiguousarray(x[:, c]))
        np.testing.assert_allclose(y[:, c], mono, rtol=0, atol=1e-6)
    assert s.flush().shape == (s.latency_samples, 2)


@settings(max_examples=10, deadline=None)
@given(
    sr=st.sampled_from([8000, 16000, 22050, 44100, 48000]),
    channels=st.integers(1, 2),
    chunks=st.lists(st.integers(0, 2500), min_size=1, max_size=8),
)
def test_any_rate_channels_chunking(sr, channels, chunks):
    """n samples in -> n out; chunked == one call; the FIFOs never run dry."""
    x = _signal(sum(chunks), channels=channels, seed=len(chunks))
    s = Streamer(sample_rate=sr, channels=channels)
    pieces = _feed_chunks(s, x, chunks)
    tail = s.flush()
    assert pieces.shape == x.shape
    assert tail.shape == ((s.latency_samples,) if channels == 1 else (s.latency_samples, 2))
    assert s.underflows == 0
    whole = Streamer(sample_rate=sr, channels=channels).feed(x)
    np.testing.assert_allclose(pieces, whole, rtol=0, atol=1e-6)


# --------------------------------------------------------------------------- allocation


def held_memory(call, calls: int = 200, warmup: int = 150) -> tuple[int, int]:
    """(bytes kept, peak bytes) that ``calls`` calls of ``call()`` allocate after ``warmup``
    calls, as tracemalloc sees them (numpy buffers, Python objects; numba compiles lazily,
    hence the warm-up)."""
    for _ in range(warmup):
        call()
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        for _ in range(calls):
            call()
        now, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return now - base, peak - base


class ConstantMask:
    """A backend stand-in: mask 0.5 everywhere, from a buffer made in reset (like the ONNX
    backend's bound output: contiguous ``[C, K, F]``)."""

    block_frames, lookahead_frames, meta = 4, 0, {}

    def reset(self, channels):
        self.mask = np.full((channels, self.block_frames, CFG.n_freqs), 0.5, np.float32)

    def step(self, spec_ri):
        return self.mask


@pytest.mark.parametrize(("sr", "channels"), [(8000, 1), (48000, 2), (16000, 3)])
def test_feed_with_out_allocates_nothing(sr, channels):
    """Nothing on the hot path makes a temporary: 200 feeds of 1024 samples with ``out=`` keep
    nothing and never hold a chunk's worth (4-12 KB) or a block of frames at once."""
    streamer = Streamer(MaskProcessor(ConstantMask()), sr, channels)
    x = (0.1 * np.random.default_rng(0).standard_normal((1024, channels))).astype(np.float32)
    out = np.empty_like(x)
    kept, peak = held_memory(lambda: streamer.feed(x, out=out))
    assert kept < 2048 and peak < 3072, (kept, peak)
