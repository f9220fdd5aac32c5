"""Latency planning in-process: prefill, trim, stepping back, drift slips.

Simulated callback timelines (:mod:`tests.live_sim`): callbacks in bursts with a phase between
the two streams, a worker that runs after each input burst, output clocks that run fast or
slow. Each test fails if the plan leaves a read without data, keeps more buffering than the
timeline needs, or lets the latency move.
"""

from __future__ import annotations

import numpy as np
import pytest

from rtdenoise.live_timing import DRIFT_LIMIT_S
from tests.live_sim import Time, bursty, check_jumps, make_engine, tone, trim_schedule


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
    assert 0 < engine.trimmed < engine.prefill
    assert margin <= engine.timeline.spare(0) < margin + period
    assert engine.timeline.spare(1) < margin  # one sample more and a read would be too early
    assert check_jumps(engine, x, y, maps) == 1


def test_a_late_read_after_the_trim_gives_the_buffering_back() -> None:
    """The worker misses one burst after the trim: instead of going dry, the output steps
    back (crossfaded) by what was missing + the margin, each step counted as an underrun, and
    runs on with part of the trim kept."""
    x = tone(8000 * 4, seed=6)
    calm = make_engine(block=64)
    bursty(calm, x, 0.3, trim_schedule(calm))
    engine = make_engine(block=64)
    y, maps = bursty(engine, x, 0.3, trim_schedule(engine), skip_worker=range(300, 304))
    st = engine.stats
    assert st.untrims >= 1 and st.underruns == st.untrims and st.dry_samples == 0
    assert 0 <= engine.trimmed < calm.trimmed
    assert check_jumps(engine, x, y, maps) == 1 + st.untrims  # the trim, then the steps back
    # after the steps the worker keeps up again: nothing more is given back
    assert np.count_nonzero(np.diff(maps[320:])) == 0


@pytest.mark.parametrize("extra", [+1, -1])
def test_clock_drift_is_absorbed_by_sample_slips(extra: int) -> None:
    """Output clock 0.5% fast (an extra output callback) or slow (a skipped one) every 200
    callbacks: the output slips single samples, the latency stays put, no underrun, no gap."""
    block = 64
    engine = make_engine(block=block)
    x = tone(8000 * 40, seed=4)  # 40 s
    indata = x[:, None]
    outdata = np.empty((block, 1), np.float32)
    played = []
    nb = len(x) // block
    for i in range(nb):
        engine.input_callback(indata[i * block : (i + 1) * block], block, Time, 0)
        if i == 10:
            engine.arm(engine.plan_prefill()[0])
        if engine._armed:
            engine.process_available()
        n_out = 1 + (extra if i % 200 == 199 and i > 20 else 0)
        for _ in range(n_out):
            engine.output_callback(outdata, block, Time, 0)
            played.append(outdata[:, 0].copy())
        if i == 10 + int(3 * 8000 / block):
            engine.loop.hold(engine.loop.ema)
    y = np.concatenate(played)
    st = engine.stats
    assert st.underruns == 0
    drift = 1000 * engine.loop.drift_seconds()
    expected = -extra * (nb - 400) // 200 * block / 8  # ms of output clock drift
    assert abs(drift - expected) < 10, (drift, expected)
    limit_ms = 1000 * DRIFT_LIMIT_S
    assert abs(engine.loop.slips) >= (abs(expected) - 2 * limit_ms) * 8  # 8 samples per ms at 8 kHz
    assert abs(engine.loop.ema - engine.loop.ref) <= DRIFT_LIMIT_S + 1 / 8000  # latency held
    assert np.isfinite(y).all() and np.count_nonzero(y[len(y) // 2 :] == 0) == 0  # no gap
