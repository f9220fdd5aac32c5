"""Latency planning in-process: prefill, trim, drift, realigns, the adaptive buffer.

Simulated callback timelines (:mod:`tests.live_sim`): callbacks in bursts with a phase between
the two streams and random scheduling delays, a worker that runs after each input burst (or
stalls), xruns that move a device timeline, output clocks that run fast or slow. The
simulator knows when each sample was really captured and played, so the tests check the
latency the devices give, not the engine's idea of it. Each fails if the plan leaves a read
without data, keeps buffering the timeline shows unneeded, reads xruns or jitter as drift,
answers an xrun with more than one jump, or lets the latency move.
"""

from __future__ import annotations

import numpy as np
import pytest

from rtdenoise import live
from rtdenoise.live_timing import (
    CONVERGE_S,
    GROW,
    JUMP_KINDS,
    REALIGN,
    SHRINK,
    SLIP,
    TRIM,
    DriftEstimator,
    LoopLog,
)
from tests.live_sim import (
    Devices,
    bursty,
    check_jumps,
    make_engine,
    run_devices,
    start_schedule,
    tone,
    trim_schedule,
    true_latency,
)

HOLD_S = 3.0  # start_schedule holds the latency here
LOCKED_S = HOLD_S + CONVERGE_S  # ...and it is locked here (drift estimated from then on)


@pytest.mark.parametrize("phase", [0.0, 0.3, 0.7])
@pytest.mark.parametrize("block", [31, 64])  # one chunk (the default) and not
def test_prefill_covers_callback_bursts(block: int, phase: float) -> None:
    """Input and output callbacks each in bursts of 4, the output ``phase`` of a period behind;
    the worker runs only after an input burst. Never an underrun, output = delayed input."""
    engine = make_engine(block=block)
    x = tone(8000 * 2, seed=3)

    def arm() -> None:
        prefill = engine.plan_prefill()[0]
        assert prefill >= 2 * 4 * block + engine.fade
        engine.arm(prefill)

    y, maps = bursty(engine, x, phase, {40: arm}, block=block, worker_s=1e-6)
    assert engine.stats.underruns == 0
    d, start, m = engine.delay, engine._arm_start, engine.out_map
    assert m is not None and np.all(maps[maps != 0] == m)
    yq = y[start + d - m :]  # output sample o plays input o + m - d
    np.testing.assert_allclose(yq, x[start : start + len(yq)], atol=1e-5)


@pytest.mark.parametrize("phase", [0.05, 0.3, 0.7])
def test_trim_keeps_the_margin_and_drops_the_rest(phase: float) -> None:
    """After the start-up trim every read finds its data made >= margin before it asks, with
    less than one burst period to spare beyond that (no cheaper plan exists); never an
    underrun; the output is the input delayed, and the one jump is a crossfade."""
    engine = make_engine(block=64)
    x = tone(8000 * 4, seed=5)
    y, maps = bursty(engine, x, phase, trim_schedule(engine))
    engine.timeline.stop()
    st, margin, period = engine.stats, engine.cfg.margin_ms / 1000, 4 * 64 / 8000
    assert st.underruns == 0
    assert 0 < engine.stats.jumped[TRIM] < engine.prefill
    assert margin <= engine.timeline.spare(0) < margin + period
    assert engine.timeline.spare(1) < margin  # one sample more and a read would be too early
    assert check_jumps(engine, x, y, maps) == 1


def _run(dev: Devices, seconds: float) -> tuple:
    """-> (engine, played, control, true latency per output callback (s), input)."""
    engine = make_engine(block=dev.block, sr=dev.sr)
    x = tone(dev.sr * int(seconds), seed=dev.seed)
    hold: list = []
    played = run_devices(engine, x, dev, start_schedule(engine, hold))
    return engine, played, hold[0], true_latency(engine, dev, played), x


def _decisions(played, kinds: tuple[int, ...]) -> list[tuple[float, int]]:
    """(time, samples) of the control's decisions of these kinds."""
    return [(t, d[0]) for t, d in played.ticks if d is not None and d[1] in kinds]


def _at(played, latency: np.ndarray, t0: float, t1: float) -> np.ndarray:
    return latency[(played.t >= t0) & (played.t < t1)]


def _less_growth(played, latency: np.ndarray, sr: int) -> np.ndarray:
    """The latency less what the buffer had grown by then (NaN just after a change)."""
    out = latency.copy()
    for t, n in _decisions(played, (GROW, SHRINK)):
        out[played.t >= t] += n / sr
        out[(played.t >= t) & (played.t < t + 0.1)] = np.nan
    return out


def test_same_clock_xruns_are_one_realign_each_and_read_as_no_drift() -> None:
    """Both streams on one clock with 3 ms of scheduling jitter; xruns move the output (an
    underrun) or the input (an overflow) timeline by 10-300 ms. Each is answered by exactly one
    crossfaded realign, soon after, that takes the latency back to where it was held (+ the
    buffer growth, counted): exactly after a realign back (more latency); after one ahead,
    as far as the reads since show spare (the xrun moved the phase between the streams'
    bursts: up to one burst period short), within 1.5 ms (the phase is read from callback
    times, each up to 3 ms late here). No slips; the drift reads < 1 ms per minute."""
    xruns = [(10.0, "out", 0.020), (20.0, "in", 0.015), (30.0, "out", 0.010), (40.0, "in", 0.012),
             (48.0, "out", 0.3)]  # fmt: skip
    dev = Devices(jitter=0.003, xruns=xruns)
    engine, played, control, lat, x = _run(dev, 80)  # calm after the last: a drift estimate
    st = engine.stats
    period = dev.burst * dev.block
    realigns = _decisions(played, (REALIGN,))
    assert st.jumps[REALIGN] == len(xruns) == len(realigns)
    held = np.nanmedian(_at(played, lat, HOLD_S, 10.0))
    lat = _less_growth(played, lat, dev.sr) - held
    for k, ((t_x, side, _), (t_r, n)) in enumerate(zip(xruns, realigns, strict=True)):
        assert t_x < t_r < t_x + 1.0 and (n > 0) == (side == "out")
        t_next = xruns[k + 1][0] if k + 1 < len(xruns) else 78.0
        seg = _at(played, lat, t_x + 2, t_next - 0.1)
        seg = seg[np.isfinite(seg)]
        np.testing.assert_allclose(seg, seg[0], atol=1.5 / dev.sr)  # held still...
        short = 0 if side == "in" else period / dev.sr
        assert -1.5e-3 <= seg[0] <= short + 1.5e-3  # ...where it was
    assert st.jumps[SLIP] == 0
    assert abs(60 * control.drift.rate) < 0.001  # < 1 ms per minute
    assert control.drift.steps >= sum(t > LOCKED_S for t, _, _ in xruns)
    # every jump is a crossfade from the old timeline into the new one, nothing else moves
    assert check_jumps(engine, x, played.y, played.out_map) == sum(st.jumps)


def test_converging_timestamps_are_followed_not_realigned() -> None:
    """The DAC timestamps start 30 ms late and converge (time constant 3 s) while the samples
    play on time: no jump at all, the latency does not move, and what the status line shows
    converges to the real latency."""
    dev = Devices(jitter=0.003, stamp_bias=0.030)
    engine = make_engine(block=dev.block)
    x = tone(dev.sr * 30, seed=5)
    hold: list = []
    shown: list[tuple[float, float]] = []
    schedule = start_schedule(engine, hold)
    schedule[25.0] = lambda: shown.append((25.0, live._latency_ms(engine, hold[0])))
    played = run_devices(engine, x, dev, schedule)
    lat = true_latency(engine, dev, played)
    assert sum(engine.stats.jumps) == engine.stats.jumps[TRIM] == 1
    seg = _at(played, lat, HOLD_S, 29.5)
    np.testing.assert_allclose(seg, seg[0], atol=1e-9)
    assert abs(shown[0][1] - 1000 * seg[0]) < 0.5


def test_time_lost_before_the_latency_is_held_is_realigned_too() -> None:
    """An output underrun of 200 ms during start-up (before the hold): the latency held and
    printed is the one the device latencies give (not 200 ms more), and one realign brings
    it there."""
    dev = Devices(jitter=0.003, xruns=[(2.0, "out", 0.2)])
    engine, played, control, lat, x = _run(dev, 12)
    calm_engine, calm, calm_control, calm_lat, _ = _run(Devices(jitter=0.003), 12)
    period = dev.burst * dev.block / dev.sr  # the device latencies count the wait for a burst
    assert calm_control.ref <= control.ref <= calm_control.ref + period
    assert engine.stats.jumps[REALIGN] == 1
    settled = np.nanmedian(_at(played, lat, 6, 11.5))
    assert abs(settled - np.nanmedian(_at(calm, calm_lat, 6, 11.5))) <= 2 * dev.block / dev.sr


@pytest.mark.parametrize("ppm", [-150.0, 150.0])
def test_clock_drift_is_followed_by_slips_that_hold_the_latency(ppm: float) -> None:
    """The output clock 150 ppm fast or slow: once the drift line is significant (~10 s
    after the hold), the output slips one sample at a time along it and the latency goes
    back to where it was held and stays there (plus what the buffer grew: drift walks the
    phase between the streams through values the trim did not see); no realign, and the
    estimate is the real drift."""
    dev = Devices(jitter=0.003, out_ppm=ppm)
    engine, played, control, lat, x = _run(dev, 60)
    st = engine.stats
    assert control.drift.rate == pytest.approx(-ppm * 1e-6, rel=0.05)
    assert st.jumps[REALIGN] == 0
    lat = _less_growth(played, lat, dev.sr)
    held = np.nanmedian(_at(played, lat, HOLD_S, HOLD_S + 0.5))
    assert len(_decisions(played, (GROW, SHRINK))) <= 2
    seg = _at(played, lat, HOLD_S + 20, 58)
    seg = seg[np.isfinite(seg)]
    np.testing.assert_allclose(seg, np.median(seg), atol=0.25e-3)  # held still...
    assert abs(np.median(seg) - held) < 0.5e-3  # ...where it was held
    expected = ppm * 1e-6 * (58 - HOLD_S) * dev.sr  # samples drifted since the hold
    assert abs(st.jumped[SLIP] + expected) <= 4  # slips took them back (0.5 ms)...
    assert st.jumps[SLIP] == abs(st.jumped[SLIP])  # ...each one sample, all in one direction
    assert check_jumps(engine, x, played.y, played.out_map) == sum(st.jumps)


def test_repeated_underruns_grow_the_buffer_and_it_shrinks_back_when_calm() -> None:
    """The worker stalls for 30 ms three times: the first late read plays the dry input
    (crossfaded, no jump); the second within 10 s grows the buffer by the worst lateness +
    the margin, in one jump; the third stall is absorbed. After 30 s on time the buffer
    shrinks back to what the timeline shows it needs."""
    dev = Devices(jitter=0.002, stalls=[(8.0, 8.03), (11.0, 11.03), (14.0, 14.03)])
    engine, played, control, lat, x = _run(dev, 80)
    st = engine.stats
    grows = _decisions(played, (GROW,))
    assert st.underruns == 2 and st.jumps[GROW] == len(grows) == 1
    assert _decisions(played, (GROW, SHRINK, REALIGN, SLIP))[0][0] > 11.0  # none at the 1st
    grow = -grows[0][1]
    assert grow <= 0.030 * dev.sr + engine.margin + engine.fade  # what was late + the margin
    assert st.jumps[SHRINK] >= 1 and _decisions(played, (SHRINK,))[0][0] > 11 + 30
    trimmed = engine.prefill - st.jumped[TRIM]
    assert trimmed <= engine.buffer_samples <= trimmed + engine.margin
    held = np.nanmedian(_at(played, lat, HOLD_S, 8.0))
    np.testing.assert_allclose(_at(played, lat, 12, 14), held + grow / dev.sr, atol=1e-6)
    assert abs(np.nanmedian(_at(played, lat, 75, 78)) - held) <= engine.margin / dev.sr
    assert check_jumps(engine, x, played.y, played.out_map) == sum(st.jumps)


def test_status_and_start_line_print_the_latency_the_devices_give() -> None:
    """What ``rtdenoise live`` prints as the latency (at start and in the status line) is the
    simulator's real capture-to-playback latency, also after a realign and a grown buffer."""
    dev = Devices(jitter=0.003, xruns=[(6.0, "out", 0.012)], stalls=[(9.0, 9.03), (10.0, 10.03)])
    engine = make_engine(block=dev.block)
    x = tone(dev.sr * 14, seed=4)
    hold: list = []
    printed: list[tuple[float, float]] = []
    schedule = start_schedule(engine, hold)
    schedule[3.05] = lambda: printed.append((3.05, live._latency_text(engine, hold[1], 0, 0)[0]))
    for t in (5.0, 8.0, 12.0, 13.0):
        schedule[t] = lambda t=t: printed.append((t, live._latency_ms(engine, hold[0])))
    played = run_devices(engine, x, dev, schedule)
    lat = true_latency(engine, dev, played)
    assert engine.stats.jumps[REALIGN] == 1 and engine.stats.jumps[GROW] == 1
    for t, ms in printed:
        real = 1000 * np.nanmedian(_at(played, lat, t - 0.5, t))
        assert abs(ms - real) < 0.5, (t, ms, real)
    assert "latency" in live._status(engine, hold[0])


def test_input_stamps_of_a_sample_captured_on_delivery_are_taken_as_captured_before() -> None:
    """The input callbacks are told that their first sample was captured when they run (as
    through PulseAudio's ALSA plugin, measured: ~0.1 ms): the printed latency is then short by
    at most the device's own input latency (unknowable), not also by the callback's frames (a
    sample is captured before it is delivered); it never reads more than the real latency."""
    dev = Devices(jitter=0.001, stamp_in_now=True)
    engine = make_engine(block=dev.block)
    x = tone(dev.sr * 8, seed=2)
    hold: list = []
    printed: list[tuple[float, float]] = []
    schedule = start_schedule(engine, hold)
    for t in (5.0, 7.0):
        schedule[t] = lambda t=t: printed.append((t, live._latency_ms(engine, hold[0])))
    played = run_devices(engine, x, dev, schedule)
    lat = true_latency(engine, dev, played)
    for t, ms in printed:
        real = 1000 * np.nanmedian(_at(played, lat, t - 0.5, t))
        assert 0 <= real - ms <= 1000 * (dev.lat_in + dev.jitter) + 0.5, (t, ms, real)


def _steps(t: np.ndarray, times: np.ndarray, rng: np.random.Generator, size: tuple) -> np.ndarray:
    """Steps of the loop latency at ``times`` (sizes uniform in ``size`` s, either sign), each
    followed by the timestamps converging back by 4 ms with a time constant of 3 s, as
    PulseAudio's do after an xrun (measured)."""
    out = np.zeros(len(t))
    for at in times:
        after = t >= at
        out += rng.choice([-1, 1]) * rng.uniform(*size) * after
        out[after] += 0.004 * np.exp(-(t[after] - at) / 3.0)
    return out


def _estimate(t: np.ndarray, loop: np.ndarray) -> DriftEstimator:
    loop_log, est = LoopLog(), DriftEstimator()
    est.start(loop_log)
    for i, (ti, d) in enumerate(zip(t, loop, strict=True)):
        loop_log.record(ti, d)
        if i % 100 == 99:
            est.update(loop_log)
    est.update(loop_log)
    return est


def test_drift_estimator_ignores_steps_and_jitter() -> None:
    """Loop latencies of 5 minutes of callbacks with up to +-2 ms of jitter, a callback in
    twenty displaced by 30 ms, and 8 steps of 2-40 ms (each with its settling): on one clock
    the drift reads < 1 ms per minute; with 100 ppm of drift added it reads 100 ppm."""
    rng = np.random.default_rng(7)
    t = np.arange(0, 300, 0.004)
    jitter = rng.uniform(-0.002, 0.002, len(t)) + 0.03 * (rng.random(len(t)) < 0.05)
    steps = _steps(t, np.sort(rng.uniform(5, 290, 8)), rng, (0.002, 0.04))
    for drift in (0.0, 100e-6):
        est = _estimate(t, 0.03 + jitter + steps + drift * t)
        assert abs(est.rate - drift) < (1e-3 / 60 if drift == 0 else 10e-6), est.rate
        assert est.steps >= 8
        assert est.significant == (drift != 0)


@pytest.mark.parametrize("seed", [0, 1])
def test_xruns_every_few_seconds_are_not_read_as_drift(seed: int) -> None:
    """Under a CPU hog: a step every 3-12 s for 5 minutes, each with its settling, on one
    clock. The settling must not read as drift (without leaving it out: -15 ms per minute,
    significant, thousands of slips); the realigns take care of the steps."""
    rng = np.random.default_rng(seed)
    t = np.arange(0, 300, 0.004)
    jitter = rng.uniform(-0.002, 0.002, len(t))
    times = np.cumsum(rng.uniform(3, 12, 60))
    est = _estimate(t, 0.03 + jitter + _steps(t, times[times < 295], rng, (0.01, 0.05)))
    assert not est.significant
    assert est.rate is None or abs(60 * est.rate) < 0.001


def test_jump_kinds_are_named_in_the_summary_order() -> None:
    assert JUMP_KINDS[TRIM] == "trim" and JUMP_KINDS[REALIGN] == "realign"
