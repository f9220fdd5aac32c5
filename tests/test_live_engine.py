"""The live engine in-process: sample-exact invariants of the callbacks and the worker.

Driven by :mod:`tests.live_sim` exactly as PortAudio would (callback by callback) with the
real :class:`Streamer`: output = input delayed by ``engine.delay``; when the worker falls
behind, the output is the equally delayed dry input, crossfaded (every sample a convex mix of
wet and dry); a worker exception stops the engine; the soft clip.
"""

from __future__ import annotations

import os
import threading

import numpy as np

from rtdenoise.live_engine import SOFT_KNEE, _soft_clip, raise_priority
from tests.live_sim import Halve, drive, duplex, make_engine, tone


def test_output_is_input_delayed_by_the_reported_delay() -> None:
    block = 64
    engine = make_engine(block=block)
    x = tone(8000 * 2)
    y, start, n = drive(engine, x, block)
    d = engine.delay
    assert d == engine.prefill + engine.streamer.latency_samples
    assert engine.prefill >= engine.chunk + 2 * block + engine.fade  # never waits on the worker
    np.testing.assert_array_equal(y[start : start + engine.prefill], 0.0)  # silence first
    np.testing.assert_allclose(y[start + d : n], x[start : n - d], atol=1e-5)
    assert engine.stats.underruns == 0 and engine.stats.xruns == 0


def test_worker_behind_plays_the_delayed_dry_input_without_a_gap() -> None:
    block = 64
    engine = make_engine(block=block)
    x = tone(8000 * 2, seed=1)
    stall = range(100, 140)  # 40 callbacks (320 ms) without the worker
    y, start, n = drive(engine, x, block, stall=stall)
    d = engine.delay
    # identity processing: wet == dry, so the fallback must be seamless and exact
    np.testing.assert_allclose(y[start + d : n], x[start : n - d], atol=1e-5)
    assert engine.stats.underruns == 1
    assert engine.stats.dry_samples >= (len(stall) - 2) * block - engine.prefill


def test_fallback_crossfades_between_wet_and_dry() -> None:
    block = 64
    engine = make_engine(Halve(), block=block)
    x = np.abs(tone(8000 * 2, seed=2)) + 0.1  # positive: wet (x/2) < dry (x) everywhere
    stall = range(100, 140)
    y, start, n = drive(engine, x, block, stall=stall)
    d, f = engine.delay, engine.fade
    dry = x[start : n - d]
    out = y[start + d : n]
    wet = 0.5 * dry
    # every sample is a convex mix of wet and dry at its own time index: no click, no gap
    assert np.all(out >= wet - 1e-5) and np.all(out <= dry + 1e-5)
    is_dry = np.isclose(out, dry, atol=1e-5)
    is_wet = np.isclose(out, wet, atol=1e-5)
    mixed = ~(is_dry | is_wet)
    # the stall (minus what the prefill bridged) was bridged with the dry signal
    assert is_dry.sum() >= len(stall) * block - engine.prefill - 2 * block - 2 * f
    assert 0 < mixed.sum() <= 2 * f  # exactly two short crossfades
    # wet, fade out, dry, fade in, wet: nothing else
    label = np.where(is_wet, 0, np.where(is_dry, 2, 1))
    runs = label[np.r_[0, np.flatnonzero(np.diff(label)) + 1]]
    assert runs.tolist() == [0, 1, 2, 1, 0]


def test_worker_exception_stops_the_engine() -> None:
    engine = make_engine(block=64)

    def broken(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        raise ValueError("model exploded")

    engine.streamer.feed = broken  # type: ignore[method-assign]
    worker = threading.Thread(target=engine.worker, daemon=True)
    worker.start()
    x = tone(8000)
    outdata = np.empty((64, 1), np.float32)
    for i, a in enumerate(range(0, len(x) - 64, 64)):
        duplex(engine, x[a : a + 64, None], outdata, 64)
        if i == 2:
            engine.arm(engine.plan_prefill()[0])
        if engine.stop_event.wait(0.002):
            break
    assert engine.stop_event.wait(5.0)
    worker.join(5.0)
    assert not worker.is_alive()
    assert isinstance(engine.error, ValueError)


def test_soft_clip_is_identity_below_the_knee_and_bounded_above() -> None:
    y = np.linspace(-3, 3, 6001, dtype=np.float32)
    ref = y.copy()
    tmp, tmp2 = np.empty_like(y), np.empty_like(y)
    _soft_clip(y, tmp, tmp2)
    low = np.abs(ref) <= SOFT_KNEE
    np.testing.assert_array_equal(y[low], ref[low])
    assert np.all(np.abs(y) <= 1.0)
    assert np.all(np.diff(y) >= -1e-6)  # monotonic (to float32 rounding): no fold-over
    assert np.all(np.abs(y[np.abs(ref) <= 1.1]) < 0.999)  # soft: not a hard clip at 1
    np.testing.assert_allclose(y, -y[::-1], atol=1e-6)


def test_raised_priority_is_inherited_by_threads_started_afterwards() -> None:
    """live.run raises the main thread's priority before the streams exist, so that the
    threads PortAudio and the sound server's client library start later get it too; it never
    lowers a priority. Runs in its own thread (nice values are per thread on Linux)."""
    seen: dict[str, object] = {}

    def body() -> None:
        before = os.getpriority(os.PRIO_PROCESS, 0)
        seen["same"] = raise_priority(before + 5)  # already higher: nothing to do
        seen["unchanged"] = os.getpriority(os.PRIO_PROCESS, 0) == before
        seen["granted"] = raise_priority(before - 1)  # only where permitted (root, rlimit)
        child = threading.Thread(
            target=lambda: seen.__setitem__("child", os.getpriority(os.PRIO_PROCESS, 0))
        )
        child.start()
        child.join()
        seen["expected"] = before - 1 if seen["granted"] else before

    t = threading.Thread(target=body)
    t.start()
    t.join()
    assert seen["same"] and seen["unchanged"]
    assert seen["child"] == seen["expected"]
