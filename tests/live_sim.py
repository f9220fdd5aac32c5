"""Drive :class:`LiveEngine` in-process exactly as PortAudio would, callback by callback.

Shared by the engine and timing tests: a fake time info, a processor whose output differs from
its input everywhere, duplex and bursty callback timelines (with a simulated clock), and the
checks of what the output played against the input.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

from rtdenoise.live_engine import LiveConfig, LiveEngine
from rtdenoise.live_timing import TRIM, TimingControl
from rtdenoise.streamer import Streamer


class Time:
    """PortAudio's time info: 10 ms input (at least the callbacks' 64 samples at 8 kHz: 8 ms),
    5 ms output device latency."""

    currentTime = 10.0
    inputBufferAdcTime = 9.990
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
            assert (lat_in, lat_out) == pytest.approx((0.010, 0.005))
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
        engine.jump(engine.plan_trim(), TRIM)

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


# --------------------------------------------------------------------------- device clocks


class Stamp:
    """PortAudio's time info and status flags of one simulated callback."""

    def __init__(self, now: float, adc: float = 0.0, dac: float = 0.0) -> None:
        self.currentTime = now
        self.inputBufferAdcTime = adc
        self.outputBufferDacTime = dac


class Flags:
    """A callback's status: one xrun flag set."""

    def __init__(self, name: str) -> None:
        for flag in ("input_underflow", "input_overflow", "output_underflow", "output_overflow"):
            setattr(self, flag, flag == name)

    def __bool__(self) -> bool:
        return True


@dataclass
class Devices:
    """Two device timelines on simulated clocks, as a sound server would run them.

    Input sample ``k`` is captured at ``k / sr`` (+ the input lost to earlier overflows) and
    comes in callbacks of ``block`` samples ``lat_in`` after its capture; output sample ``o``
    is played at ``lat_out + o / (sr * (1 + out_ppm * 1e-6))`` (+ the silence that earlier
    output underruns inserted), asked for by a callback ``lat_out`` before. Callbacks come in
    bursts of ``burst`` and each up to ``jitter`` s late (seeded); the worker runs
    ``worker_s`` after each input burst except during ``stalls`` (t0, t1). ``xruns``:
    (time, "in" | "out", seconds): an input overflow drops that much input, an output
    underrun delays the output timeline by it. ``stamp_bias``: the DAC times the callbacks
    are told are that much late at the start, decaying with ``stamp_tau`` (PulseAudio's
    timing converging), while the samples are played on time. ``stamp_in_now``: the input
    callbacks are told their first sample was captured at the callback's time (PulseAudio's ALSA
    plugin reports ~0 capture delay).
    """

    sr: int = 8000
    block: int = 64
    burst: int = 2
    lat_in: float = 0.004
    lat_out: float = 0.010
    out_ppm: float = 0.0
    jitter: float = 0.0
    worker_s: float = 0.001
    stalls: list[tuple[float, float]] = field(default_factory=list)
    xruns: list[tuple[float, str, float]] = field(default_factory=list)
    seed: int = 0
    stamp_bias: float = 0.0
    stamp_tau: float = 3.0
    stamp_in_now: bool = False

    def adc(self, k: np.ndarray) -> np.ndarray:
        t = k / self.sr
        for at, side, gap in self.xruns:
            if side == "in":
                t = t + gap * (t >= at)
        return t

    def dac(self, o: np.ndarray) -> np.ndarray:
        t = self.lat_out + o / (self.sr * (1 + self.out_ppm * 1e-6))
        for at, side, gap in self.xruns:
            if side == "out":
                t = t + gap * (t >= at)
        return t


@dataclass
class Played:
    """What a simulated run played: per output callback its time, first output sample, the
    engine's map then (``armed``: whether it had one); and the output samples."""

    t: np.ndarray
    o: np.ndarray
    out_map: np.ndarray
    armed: np.ndarray
    y: np.ndarray
    ticks: list = field(default_factory=list)  # (time, decision) of each control tick


def run_devices(
    engine: LiveEngine, x: np.ndarray, dev: Devices, at: dict[float, object], tick_s: float = 0.05
) -> Played:
    """Run ``x`` through the engine on ``dev``'s clocks; ``at[t]()`` runs on the main thread
    at time ``t`` (arming, trimming...); a callable returned by it is ticked every
    ``tick_s`` from then on (the main thread's control loop)."""
    rng = np.random.default_rng(dev.seed)
    b, sr = dev.block, dev.sr
    n_in = len(x) // b
    k = np.arange(n_in) * b
    # an input burst is delivered when its last sample has been captured
    last = (np.arange(n_in) // dev.burst + 1) * dev.burst * b - 1
    t_in = dev.adc(np.minimum(last, len(x) - 1)) + 1 / sr + dev.lat_in
    t_in = np.maximum.accumulate(t_in + rng.uniform(0, dev.jitter, n_in))
    first = (np.arange(n_in) // dev.burst) * dev.burst * b  # asked for with its burst
    t_out = dev.dac(first) - dev.lat_out
    t_out = np.maximum.accumulate(t_out + rng.uniform(0, dev.jitter, n_in))
    n_out = int(np.searchsorted(t_out, t_in[-1] - 0.2))  # while there is input
    t_out = t_out[:n_out]
    o = np.arange(n_out) * b
    events = [(t, 0, i) for i, t in enumerate(t_in)] + [(t, 1, j) for j, t in enumerate(t_out)]
    for i in range(dev.burst - 1, n_in, dev.burst):
        t = t_in[i] + dev.worker_s
        for t0, t1 in dev.stalls:
            if t0 <= t < t1:
                t = t1
        events.append((t, 2, i))
    events += [(t, 3, 0) for t in at]
    flags = {}
    for t, side, _ in dev.xruns:
        times = t_in if side == "in" else t_out
        j = min(int(np.searchsorted(times, t)), len(times) - 1)
        name = "input_overflow" if side == "in" else "output_underflow"
        flags[(0 if side == "in" else 1, j)] = Flags(name)
    events.sort(key=lambda e: (e[0], e[1]))
    y = np.zeros(n_out * b, np.float32)
    maps = np.zeros(n_out, np.int64)
    outdata = np.empty((b, 1), np.float32)
    played = Played(t_out, o, maps, np.zeros(n_out, bool), y)
    adc = dev.adc(k)
    dac = dev.dac(o)
    tick, next_tick = None, np.inf
    for t, side, i in events:
        while tick is not None and next_tick <= t:
            engine._clock = lambda now=next_tick: now
            played.ticks.append((next_tick, tick()))
            next_tick += tick_s
        engine._clock = lambda now=t: now
        if side == 0:
            stamp = Stamp(t, adc=t if dev.stamp_in_now else adc[i])
            engine.input_callback(x[k[i] : k[i] + b, None], b, stamp, flags.get((0, i), 0))
        elif side == 1:
            stamp = Stamp(t, dac=dac[i] + dev.stamp_bias * np.exp(-t / dev.stamp_tau))
            engine.output_callback(outdata, b, stamp, flags.get((1, i), 0))
            y[i * b : (i + 1) * b] = outdata[:, 0]
            played.armed[i] = engine.out_map is not None
            maps[i] = engine.out_map if engine.out_map is not None else 0
        elif side == 2:
            if engine._armed:
                engine.process_available()
        else:
            ret = at[t]()
            if callable(ret):
                tick, next_tick = ret, t + tick_s
    return played


def true_latency(engine: LiveEngine, dev: Devices, played: Played) -> np.ndarray:
    """Per output callback, the latency the devices really gave its first sample: its DAC
    time minus the ADC time of the input sample it plays (NaN before the pipeline ran)."""
    src = played.o + played.out_map - engine.delay
    lat = dev.dac(played.o) - dev.adc(src)
    lat[~played.armed | (src < engine._arm_start)] = np.nan
    return lat


def start_schedule(engine: LiveEngine, hold: list) -> dict[float, object]:
    """What ``live.run`` does on the main thread, at simulated times: arm after a 0.5 s
    pre-roll, record the timeline for 2 s, trim, hold the latency 0.4 s later and steer from
    then on. ``hold`` gets the :class:`TimingControl` and the held latency (s)."""

    def settle() -> object:
        sr = engine.cfg.samplerate
        control = TimingControl(
            sr, engine.margin, engine.loop_log, engine.timeline, engine.phase_log
        )
        expected = sum(engine.plan_prefill()[1:])  # the device latencies, as live.run does
        hold.extend([control, control.hold(engine.now(), engine.stats.underruns, expected)])
        return lambda: engine.steer(control)

    return {
        0.5: lambda: engine.arm(engine.plan_prefill()[0]),
        0.6: engine.timeline.start,
        2.6: lambda: engine.jump(engine.plan_trim(), TRIM),
        3.0: settle,
    }
