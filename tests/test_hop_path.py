"""The compiled one-hop path (live mode's calls) is the general path, sample for sample.

Both paths run the same kernels on the same buffers; a call of exactly one hop takes the
compiled one in the steady state, any other call the general one. Asserted: the output of a
stream of one-hop calls, and of one-hop calls interleaved with other sizes, resets included,
is the general path's (to float32 rounding of a BLAS product, in practice bit for bit), the
engine's counters stay clean, and a call allocates nothing.
"""

import tracemalloc

import numpy as np
import pytest

from rtdenoise.backends import load_backend
from rtdenoise.hop_path import HopPath
from rtdenoise.processor import IdentityProcessor, MaskProcessor
from rtdenoise.streamer import Streamer


def _noisy(n: int, sr: int, seed: int = 0) -> np.ndarray:
    """Voiced-like harmonics with an envelope, plus noise: frames the mask does not pass whole."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / sr
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 3.0 * t)
    x = sum(np.sin(2 * np.pi * f0 * t * (1 + 0.01 * np.sin(t))) / (k + 1) for k, f0 in
            enumerate((180, 360, 540, 900, 2200)))  # fmt: skip
    return (0.2 * env * x + 0.03 * rng.standard_normal(n)).astype(np.float32)


def _engine(sr: int, compiled: bool, full_band: bool = True, pf: float = 0.0, **kw) -> Streamer:
    proc = MaskProcessor(
        load_backend("onnx", block_frames=1), atten_lim_db=20.0, pitch_postfilter=pf
    )
    return Streamer(proc, sr, 1, full_band=full_band, compiled_hops=compiled, **kw)


def _feed(s: Streamer, x: np.ndarray, sizes) -> np.ndarray:
    y = np.zeros_like(x)
    a = 0
    for n in sizes:
        if a + n > len(x):
            break
        s.feed(x[a : a + n], out=y[a : a + n])
        a += n
    return y[:a]


@pytest.mark.parametrize(
    ("sr", "full_band", "pf"),
    [(48000, True, 0.0), (48000, False, 0.0), (16000, True, 0.0), (48000, True, 0.5)],
)
def test_one_hop_calls_equal_the_general_path(sr, full_band, pf):
    fast, slow = _engine(sr, True, full_band, pf), _engine(sr, False, full_band, pf)
    hop = fast._hops.n
    assert hop == 31 * sr // 8000 and slow._hops is None
    x = _noisy(2 * sr, sr)
    sizes = [hop] * (len(x) // hop)
    y_fast, y_slow = _feed(fast, x, sizes), _feed(slow, x, sizes)
    assert fast._hops.calls >= len(sizes) - 20  # all but the stream's start
    assert np.abs(y_slow).max() > 0.05
    np.testing.assert_allclose(y_fast, y_slow, rtol=0, atol=1e-6)
    assert fast.underflows == slow.underflows == 0


@pytest.mark.parametrize("pf", [0.0, 0.5])
def test_interleaved_with_other_sizes_and_resets(pf):
    """Compiled and general calls interleave (both leave the engine in the same state), the
    pitch post-filter's included."""
    sr = 48000
    fast, slow = _engine(sr, True, pf=pf), _engine(sr, False, pf=pf)
    rng = np.random.default_rng(1)
    x = _noisy(3 * sr, sr, seed=2)
    sizes = [int(rng.choice([186, 186, 186, 1, 185, 187, 480, 4096])) for _ in range(900)]
    for s in (fast, slow):
        s.reset()
    y_fast = _feed(fast, x, sizes)
    y_slow = _feed(slow, x, sizes)
    assert fast._hops.calls > 50  # (a call off the hop grid moves the frames off it too)
    np.testing.assert_allclose(y_fast, y_slow, rtol=0, atol=1e-6)
    fast.reset()
    slow.reset()
    hop = [186] * 200
    np.testing.assert_allclose(_feed(fast, x, hop), _feed(slow, x, hop), rtol=0, atol=1e-6)


def test_set_ups_it_does_not_take():
    """44.1 kHz (no integer ratio), 8 kHz, two channels, the identity processor and the
    symmetric framing's standard model keep the general path."""
    assert _engine(44100, True)._hops is None
    assert _engine(8000, True)._hops is None
    proc = MaskProcessor(load_backend("onnx", block_frames=1), atten_lim_db=20.0)
    assert Streamer(proc, 48000, 2)._hops is None
    assert Streamer(IdentityProcessor(1), 48000)._hops is None
    from rtdenoise.backends import DEFAULT_PATHS

    std = DEFAULT_PATHS["onnx"].with_name("default.onnx")
    assert Streamer(MaskProcessor(load_backend("onnx", std, block_frames=1)), 48000)._hops is None
    assert HopPath.build(Streamer(proc, 48000, compiled_hops=False)) is not None


def test_one_hop_calls_allocate_nothing():
    s = _engine(48000, True, pf=0.2)
    x = _noisy(48000, 48000)
    y = np.zeros_like(x)
    for a in range(0, 186 * 100, 186):  # warm-up: compiled, past the stream's start
        s.feed(x[a : a + 186], out=y[a : a + 186])
    calls = s._hops.calls
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for a in range(186 * 100, 186 * 250, 186):
        s.feed(x[a : a + 186], out=y[a : a + 186])
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    assert s._hops.calls >= calls + 148  # (the analyzer compacts its buffer every ~200 hops)
    grown = sum(d.size_diff for d in after.compare_to(before, "filename") if d.size_diff > 0)
    assert grown < 4096, grown


def test_live_warm_up_runs_the_compiled_path():
    """Live mode's warm-up reaches the steady state, so no kernel compiles mid-stream."""
    from rtdenoise.live import _warm_up

    s = _engine(48000, True)
    _warm_up(s, 186)
    assert s.compiled_hop_calls >= 2
    assert _engine(44100, True).compiled_hop_calls is None


def test_cost_breakdown_times_the_compiled_hops():
    """benchmarks/cost48k.py's stage breakdown of live mode sees the two compiled calls and the
    model's step between them, and restores what it wrapped."""
    import rtdenoise.hop_path as hp
    from benchmarks.cost48k import Engine, stage_breakdown

    engine = Engine("live", ["live"])
    x = _noisy(24000, 48000)
    kernels = (hp._hop_in, hp._hop_out)
    stages = stage_breakdown(engine, x)
    assert stages["compiled hop: meter, resampler, analysis"] > 0
    assert stages["compiled hop: mask, synthesis, resamplers, band split"] > 0
    assert stages["model (onnx step)"] > 0
    assert (hp._hop_in, hp._hop_out) == kernels
    assert engine.streamer.compiled_hop_calls > 100


def test_a_grown_resampler_moves_the_table_with_it():
    """A general-path call larger than the resamplers' buffers replaces them; the next one-hop
    call rebuilds its table of buffer addresses (a stale one would write into freed memory)."""
    from rtdenoise.hop_path import R_ACC

    fast, slow = _engine(48000, True), _engine(48000, False)
    x = _noisy(2 * 48000, 48000)
    sizes = [186] * 60 + [20000] + [186] * 60
    old = fast._rs_in._acc
    y_fast, y_slow = _feed(fast, x, sizes), _feed(slow, x, sizes)
    assert fast._rs_in._acc is not old  # the large call grew the down-resampler
    assert fast._hops._table[R_ACC, 0] == fast._rs_in._acc.ctypes.data
    np.testing.assert_allclose(y_fast, y_slow, rtol=0, atol=1e-6)


def test_buffer_table_refuses_what_its_kernels_cannot_read():
    """A slot takes only a C-contiguous array of its dtype and rank."""
    from rtdenoise.buffer_table import BufferTable

    table = BufferTable([("a", np.float32, 2)])
    ok = np.zeros((3, 4), np.float32)
    assert table.build({"a": ok})[0].tolist() == [ok.ctypes.data, 3, 4, 1]
    for bad in (ok[:, ::2], ok.astype(np.float64), ok[0], None):
        with pytest.raises(ValueError):
            table.build({"a": bad})
