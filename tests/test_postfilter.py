"""The pitch post-filter (:mod:`rtdenoise.postfilter`): what it passes, what it removes, and
that it keeps the engine's invariants (causal, no added latency, any block size gives the
whole signal's output, off means bit-exact off)."""

import numpy as np
import pytest

from rtdenoise.backends import load_backend
from rtdenoise.postfilter import LAG_MAX, PitchPostfilter
from rtdenoise.processor import MaskProcessor
from rtdenoise.streamer import Streamer

HOP = 31


def _pulses(n: int, period: int) -> np.ndarray:
    x = np.zeros(n, np.float32)
    x[::period] = 1.0
    return x


def _voiced(n: int, sr: int = 8000, seed: int = 0) -> np.ndarray:
    """A 150 Hz harmonic tone with a slow envelope, plus white noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / sr
    tone = sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 12))
    env = 0.6 + 0.4 * np.sin(2 * np.pi * 2 * t)
    return (0.1 * env * tone + 0.05 * rng.standard_normal(n)).astype(np.float32)


def _filtered(
    x: np.ndarray, strength: float = 0.4, sizes=None, inp: np.ndarray | None = None
) -> np.ndarray:
    """x through the comb, as the output of a mask that kept 1/16 of ``inp``'s energy (default:
    ``4 x``), in blocks of ``sizes`` (default: 64 hops, as the engine's batches)."""
    pf = PitchPostfilter(1, HOP, strength)
    inp = 4 * x if inp is None else inp
    y = x[None].copy()
    a = 0
    for n in [HOP * 64] * (len(x) // (HOP * 64) + 1) if sizes is None else sizes:
        pf.push_input(inp[a : a + n, None])
        pf.process(y[:, a : a + n])
        a += n
    return y[0]


def test_periodic_passes_at_unity_noise_alone_is_untouched() -> None:
    for period in (20, 50, 100):  # 400 Hz .. 80 Hz
        x = _pulses(HOP * 200, period)
        s = slice(2 * period, None)  # once a period precedes each pulse
        np.testing.assert_allclose(_filtered(x)[s], x[s], rtol=0, atol=1e-6)
    noise = np.random.default_rng(1).standard_normal(HOP * 300).astype(np.float32)
    s = slice(512, None)  # once the 256-sample window and the lags are full
    np.testing.assert_array_equal(_filtered(noise)[s], noise[s])  # no lag correlates >= 0.3


def test_removes_what_is_not_periodic() -> None:
    n = HOP * 600
    rng = np.random.default_rng(2)
    t = np.arange(n)
    # exactly periodic at an odd lag (the search's coarse grid is even), band-limited as voice
    periodic = sum(np.cos(2 * np.pi * k * t / 53 + k) for k in range(1, 14)).astype(np.float32)
    periodic *= np.float32(0.1)
    noise = (0.1 * rng.standard_normal(n)).astype(np.float32)
    s = slice(LAG_MAX + 512, None)  # past the stream's start

    def noise_gain_db(y: np.ndarray) -> float:
        residual = y[s] - periodic[s]  # the comb passes the periodic part whole
        return 10 * np.log10((residual**2).mean() / (noise[s] ** 2).mean())

    x = periodic + noise
    # a = 0.5 c (1 - 1/16) with c ~ 0.85: the noise keeps (1 + a^2) / (1 + a)^2, about -2.4 dB
    assert -3.5 < noise_gain_db(_filtered(x, strength=0.5)) < -1.5
    # where the mask removed little (the output is 95 % of the input's energy), little is left
    # to remove and the comb all but stays off
    assert -0.3 < noise_gain_db(_filtered(x, strength=0.5, inp=x / np.sqrt(0.95))) < 0.0


def test_strength_zero_is_the_identity_and_range_is_checked() -> None:
    x = _voiced(HOP * 100)
    np.testing.assert_array_equal(_filtered(x, 0.0), x)
    with pytest.raises(ValueError, match="strength"):
        PitchPostfilter(1, HOP, 1.5)


def test_any_block_size_gives_the_whole_signal_output() -> None:
    """Blocks of whole hops, after a first one of any length (the synthesis's first batch
    after its boundary samples), give exactly the output of one call."""
    rng = np.random.default_rng(3)
    for first in (HOP, 7, HOP * 3 + 12):
        x = _voiced(first + HOP * 400)
        sizes = [first] + [HOP * int(rng.integers(1, 9)) for _ in range(80)]
        sizes = [n for n in np.diff(np.minimum(np.cumsum([0, *sizes]), len(x))) if n]
        sizes.append(len(x) - sum(sizes))
        batches = [first] + [HOP * 64] * 7  # 400 hops in batches of 64, as the engine's
        np.testing.assert_array_equal(_filtered(x, sizes=sizes), _filtered(x, sizes=batches))
    x = _voiced(HOP * 200)
    pf = PitchPostfilter(1, HOP)
    out = []
    for _ in range(2):
        y = x[None].copy()
        pf.push_input(2 * x[:, None])
        pf.process(y)
        out.append(y)
        pf.reset()
    np.testing.assert_array_equal(*out)  # reset forgets the stream
    with pytest.raises(ValueError, match="out of step"):
        pf.process(x[None].copy())  # output the input has not reached


def test_causal() -> None:
    """Output hops depend on no later hop (a hop is released whole, as the synthesis makes it:
    in the engine no sample of it exists before its last one)."""
    x = _voiced(HOP * 300)
    x2 = x.copy()
    cut = HOP * 150
    x2[cut:] = np.random.default_rng(4).standard_normal(len(x) - cut)
    np.testing.assert_array_equal(_filtered(x)[:cut], _filtered(x2)[:cut])


def _engine(pf: float | None, wet: float = 1.0, sr: int = 8000, **kw) -> Streamer:
    proc = MaskProcessor(load_backend("onnx"), wet=wet, pitch_postfilter=pf)
    return Streamer(proc, sr, **kw)


def test_in_the_engine_streaming_equals_whole_signal_and_off_is_off() -> None:
    x = _voiced(8000 * 2, seed=5)
    on, off = _engine(0.5), _engine(0.0)
    assert off._core.postfilter is None and on._core.postfilter is not None
    y_on = on.process(x)
    y_off = off.process(x)
    assert np.abs(y_on - y_off).max() > 1e-3  # it acts on the model's output
    assert on.latency_samples == off.latency_samples  # and adds no latency
    rng = np.random.default_rng(6)
    on.reset()
    parts, a = [], 0
    while a < len(x):
        n = int(rng.integers(1, 700))
        parts.append(on.feed(x[a : a + n]).copy())
        a += n
    parts.append(on.flush())
    streamed = np.concatenate(parts)[on.latency_samples :]
    np.testing.assert_allclose(streamed, y_on, rtol=0, atol=1e-6)
    # large batches: the input runs far ahead of the synthesis, the comb's ring keeps up
    big = _engine(0.5, max_frames=400)
    np.testing.assert_allclose(big.process(x, block=len(x)), y_on, rtol=0, atol=1e-6)


def test_strength_comes_from_the_model_and_wet_scales_it(tmp_path) -> None:
    backend = load_backend("onnx")
    backend.meta = {**backend.meta, "pitch_postfilter": 0.3}
    assert MaskProcessor(backend).pitch_postfilter == pytest.approx(0.3)
    assert MaskProcessor(backend, pitch_postfilter=0.0).pitch_postfilter == 0.0
    assert MaskProcessor(backend, wet=0.5).pitch_postfilter == pytest.approx(0.15)
    with pytest.raises(ValueError, match="pitch_postfilter"):
        MaskProcessor(backend, pitch_postfilter=-1.0)
    # fully dry is the engine's identity, post-filter or not: perfect reconstruction
    x = _voiced(8000, seed=7)
    dry = Streamer(MaskProcessor(backend, wet=0.0)).process(x)
    np.testing.assert_allclose(dry, x, atol=1e-5)
