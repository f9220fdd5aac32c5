"""Drive :class:`LiveEngine` in-process exactly as PortAudio would, callback by callback.

Shared by the engine and timing tests: a fake time info, a processor whose output differs from
its input everywhere, duplex and bursty callback timelines (with a simulated clock), and the
checks of what the output played against the input.
"""

from __future__ import annotations

import numpy as np
import pytest

from rtdenoise.live_engine import LiveConfig, LiveEngine
from rtdenoise.streamer import Streamer


class Time:
    """PortAudio's time info: 2 ms input, 5 ms output device latency."""

    currentTime = 10.0
    inputBufferAdcTime = 9.998
    outputBufferDacTime = 10.005


class Halve:
    """Frame processor: wet = half the input, so wet and dry differ everywhere."""

    block_frames = 1
    lookahead_frames = 0

    def reset(self, channels: int) -> None:
        pass

    def process(self, frames: np.ndarray, out: np.ndarray) -> None:
        np.multiply(frames, 0.5, out=out)


def duplex(engine: LiveEngine, indata: np.ndarray, outdata: np.ndarray, frames: int) -> None:
    """Both callbacks back to back, as a duplex device would call them."""
    engine.input_callback(indata, frames, Time, 0)
    engine.output_callback(outdata, frames, Time, 0)


def make_engine(processor: object = None, sr: int = 8000, block: int = 64) -> LiveEngine:
    return LiveEngine(Streamer(processor, sample_rate=sr), LiveConfig(sr, block, 0.02))


def drive(
    engine: LiveEngine, x: np.ndarray, block: int, stall: range = range(0), arm_after: int = 10
) -> tuple[np.ndarray, int, int]:
    """Feed x [n] callback by callback; the worker keeps up except during callbacks ``stall``.

    Returns (output in input indices ``q = o + out_map`` [n], arm start index, end index).
    """
    y = np.full(len(x), np.nan, np.float32)
    outdata = np.empty((block, 1), np.float32)
    start = None
    for i, a in enumerate(range(0, len(x) - block + 1, block)):
        duplex(engine, x[a : a + block, None], outdata, block)
        y[a : a + block] = outdata[:, 0]
        if i == arm_after:
            prefill, lat_in, lat_out = engine.plan_prefill()
            assert (lat_in, lat_out) == pytest.approx((0.002, 0.005))
            engine.arm(prefill)
        elif engine.armed and start is None:
            start = engine._arm_start
        if engine.armed and i not in stall:
            engine.process_available()
    assert start is not None
    m = engine.out_map
    assert m is not None and 0 <= m <= 2 * block
    n = len(x) // block * block
    yq = np.full(len(x), np.nan, np.float32)
    yq[m:n] = y[: n - m]
    return yq, start, n


def tone(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 8000
    return (0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(n)).astype(np.float32)


def bursty(
    engine: LiveEngine,
    x: np.ndarray,
    phase: float,
    at: dict[int, object],
    skip_worker: range = range(0),
    block: int = 64,
    burst: int = 4,
    worker_s: float = 0.002,
) -> tuple[np.ndarray, np.ndarray]:
    """Callbacks in bursts of ``burst`` both ways, the output ``phase`` of a period behind, the
    worker ``worker_s`` after each input burst (not after input callbacks ``skip_worker``);
    ``at[i]()`` runs after input callback i. -> (output [n], out_map per output callback)."""
    period = block * burst / 8000
    nb = len(x) // block
    events = []
    for i in range(nb):
        t_in = (i // burst) * period + (i % burst) * 1e-4
        events += [(t_in, 0, i), (t_in + phase * period, 1, i)]
        if i % burst == burst - 1 and i not in skip_worker:
            events.append((t_in + worker_s, 2, i))
    events.sort()
    outdata = np.empty((block, 1), np.float32)
    y = np.full(nb * block, np.nan, np.float32)
    maps = np.zeros(nb, np.int64)
    for t, side, i in events:
        engine._clock = lambda t=t: t
        if side == 0:
            engine.input_callback(x[i * block : (i + 1) * block, None], block, Time, 0)
            if i in at:
                at[i]()  # type: ignore[operator]
        elif side == 1:
            engine.output_callback(outdata, block, Time, 0)
            y[i * block : (i + 1) * block] = outdata[:, 0]
            maps[i] = engine.out_map or 0
        elif engine._armed:
            engine.process_available()
    return y, maps


def trim_schedule(engine: LiveEngine) -> dict[int, object]:
    """Arm, record 35 bursts (every remainder of 4 x 64 samples in chunks of 31), trim,
    record again."""

    def stop_and_trim() -> None:
        engine.timeline.stop()
        engine.trim(engine.plan_trim())

    return {
        40: lambda: engine.arm(engine.plan_prefill()[0]),
        60: lambda: engine.timeline.start(),
        200: stop_and_trim,
        220: lambda: engine.timeline.start(),
    }


def check_jumps(engine: LiveEngine, x: np.ndarray, y: np.ndarray, maps: np.ndarray) -> int:
    """Output block i plays input ``o + map - delay``; where the map jumped, the block starts
    on the old timeline and crossfades into the new one. -> number of jumps after arming."""
    block = len(y) // len(maps)
    d, start, f = engine.delay, engine._arm_start, engine.fade
    jumps = 0
    for i in range(1, len(maps)):
        src = np.arange(i * block, (i + 1) * block) + maps[i] - d
        if src[0] < start:
            continue
        yi = y[i * block : (i + 1) * block]
        if maps[i] == maps[i - 1]:
            np.testing.assert_allclose(yi, x[src], atol=1e-5)
            continue
        jumps += 1
        old, new = x[src - maps[i] + maps[i - 1]], x[src]
        assert np.all(yi >= np.minimum(old, new) - 1e-5)
        assert np.all(yi <= np.maximum(old, new) + 1e-5)
        np.testing.assert_allclose(yi[f:], new[f:], atol=1e-5)
        assert abs(yi[0] - old[0]) <= abs(new[0] - old[0]) / 2 + 1e-5  # starts on the old one
    return jumps
