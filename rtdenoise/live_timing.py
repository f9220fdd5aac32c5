"""Keeping live mode's latency put: the loop latency, drift, realigns, the adaptive buffer.

The output callback records the device loop latency ``D`` of each callback (:class:`LoopLog`):
the DAC time of an output sample minus the ADC time of the input sample the mapping made at
arming gives it, so that our own jumps do not move it. ``D`` moves only when a device
timeline moves: an xrun (a step) or clock drift (a slope), and while PulseAudio's timing
converges after start (measured: tens of ms in ~12 s, the real latency not moving).
:class:`TimingControl`, ticked by the main thread, holds the latency where it was printed and
decides; the output callback carries each decision out as one crossfaded jump of its
timeline (:meth:`.live_engine.LiveEngine.jump`), of one of :data:`JUMP_KINDS`:

* a step of ``D`` (an xrun) -> one *realign* by the whole step (ahead only as far as the
  reads show spare, :meth:`.live_buffer.Timeline.plan_trim`);
* drift -> one-sample *slips* along the line :class:`DriftEstimator` fits over long windows
  of 1 s medians with the steps taken out (none while it is within the dead band or the
  wander of the medians);
* repeated underruns of the worker -> the output buffer *grows* by the worst lateness + the
  margin (a jitter buffer); a grown buffer the timeline shows unneeded for a while *shrinks*.
"""

from __future__ import annotations

import logging
import math
from collections import deque

import numpy as np

from .live_buffer import Records, Timeline

log = logging.getLogger(__name__)

#: what a jump of the output timeline is for; the engine counts jumps and samples per kind
JUMP_KINDS = ("trim", "grow", "shrink", "realign", "slip")
TRIM, GROW, SHRINK, REALIGN, SLIP = range(len(JUMP_KINDS))

#: seconds of armed run over which the device loop latency is taken for the start line
LOOP_SETTLE_S = 0.3
#: the drift estimator's blocks: the median loop latency of the callbacks of each second
DRIFT_BLOCK_S = 1.0
#: a change of the block median larger than this is a step (an xrun moved a timeline), not
#: drift: real clocks differ by < 500 ppm, 0.5 ms per block
DRIFT_STEP_S = 0.0015
#: the blocks this long after a step are left out too: after an xrun PulseAudio's timestamps
#: converge again (measured: ~4 ms back over ~8 s, time constant ~3 s), which within one piece
#: reads as a slope (the tracker read 118 ppm on one clock under a CPU hog, 166 slips a minute)
DRIFT_STEP_SETTLE_S = 10.0
#: drift is the least-squares slope of the step-free block medians over this many seconds...
DRIFT_WINDOW_S = 300.0
#: ...once they span at least this many
DRIFT_MIN_SPAN_S = 10.0
#: slips follow the drift line only where its slope is this many standard errors from zero
#: and it has moved this many times the residuals' spread over the window: on one clock
#: under PulseAudio the block medians wander +-1 ms in a sawtooth of 10-20 s (the phase of
#: the callbacks against the server's period, measured), which over a 20-60 s window reads
#: as up to 20 ppm of slope with small standard errors
DRIFT_SIGNIFICANCE = 4.0
DRIFT_WANDER = 3.0
#: a slip when the drift line is this many samples from where the output is (one sample of
#: hysteresis: the line's level wobbles by a sample as it is refitted, and slips back and forth
#: would follow it)
SLIP_AFTER = 2
#: no slips while the estimated drift is within this (20 ppm = 1.2 ms per minute); real
#: clocks differ by 20-200 ppm, and what is left is caught by a realign every few minutes
DRIFT_DEADBAND = 20e-6
#: for this long after the hold the timestamps are still converging: under PulseAudio the
#: loop latency they give fell from ~50 to ~21 ms over the first ~12 s of a run while the
#: real latency (clicks through the server) did not move by a sample (measured, busy
#: machine). Meanwhile the level printed follows what the timestamps say beyond what the
#: phase moved (slow changes, time constant CONVERGE_TAU_S); the phase needs no converging.
CONVERGE_S = 15.0
CONVERGE_TAU_S = 0.25
#: a loop latency at the hold this much above the device latencies is time lost to xruns
#: during start-up (not convergence): the device latencies are held instead
STARTUP_LOSS_S = 0.1
#: the loop latency now: the median over the output callbacks of this many seconds
REALIGN_WINDOW_S = 0.5
#: the timeline is realigned when the loop latency now is this far from the held value (a
#: jump is audible; PulseAudio's reported latency wanders by a few ms after an xrun)...
REALIGN_MIN_S = 0.008
#: ...on this many ticks in a row (the median window has moved past the step)...
REALIGN_CONFIRM = 3
#: ...and not sooner than this after the last realign. A realign ahead (less latency) goes
#: only as far as the output callbacks since the step found processed output to spare
#: beyond the margin (the timeline): under load PulseAudio's reported latency also wanders
#: by tens of ms without an xrun (measured), and a jump ahead on that would underrun.
REALIGN_HOLD_S = 1.0
#: the output buffer grows after this many underruns...
GROW_AFTER = 2
#: ...within this many seconds
GROW_WINDOW_S = 10.0
#: ...and at least this long after the second (time for a step of the loop latency that
#: explains them to show in the median and be realigned instead)
GROW_SETTLE_S = 0.6
#: the most the output buffer may grow beyond the start-up plan; a worker later than that
#: is stalled, not jittery, and the callback plays the dry input instead
MAX_GROW_S = 0.2
#: a grown buffer shrinks when nothing came late for this long
SHRINK_AFTER_S = 30.0
#: shrinks smaller than this are not worth a jump
SHRINK_MIN_S = 0.002


class LoopLog(Records):
    """The device loop latency ``D`` (s) of each output callback, with its time: a ring of the
    last ``capacity`` (the output callback writes, the main thread reads)."""

    def __init__(self, capacity: int = 16384) -> None:
        super().__init__(capacity, 1)

    def record(self, now: float, loop: float) -> None:
        """(output callback) one measurement."""
        k = self.n % self.t.shape[0]
        self.t[k] = now
        self.v[0, k] = loop
        self.n += 1

    def median(self, since: float) -> float | None:
        """Median loop latency of the callbacks from time ``since`` on (None if none)."""
        _, v = self.since(since)
        return float(np.median(v[0])) if v.shape[1] else None


class DriftEstimator:
    """Clock drift between the streams, from the loop latency over long windows.

    The loop latency of each :data:`DRIFT_BLOCK_S` is its median (robust to the callbacks an
    xrun or a scheduling delay displaced). A change of more than :data:`DRIFT_STEP_S` from one
    block to the next, or over two blocks (a step half-way through a block leaves its median
    between the two levels), is a step: the blocks on either side and those of the next
    :data:`DRIFT_STEP_SETTLE_S` are left out and the series is cut there. The drift is the
    least-squares slope (s per s) common to the pieces, each with its own level, over the last
    :data:`DRIFT_WINDOW_S`; None while the pieces span less than :data:`DRIFT_MIN_SPAN_S`.
    Main thread only (it reads a :class:`LoopLog`).
    """

    def __init__(self, capacity: int = 1024) -> None:
        self.t = np.zeros(capacity, np.float64)  # block start times
        self.m = np.zeros(capacity, np.float64)  # block medians
        self.piece = np.zeros(capacity, np.int64)  # which piece between steps
        self.ok = np.zeros(capacity, bool)  # not next to a step
        self.n = 0
        self.steps = 0  # steps found (xruns)
        self._read = 0  # LoopLog records consumed
        self._block: list[float] = []
        self._block_t = 0.0
        self._settle_until = -math.inf  # blocks starting before this follow a step
        self._fit_cache: tuple[int, tuple | None] = (-1, None)

    def start(self, loop_log: LoopLog) -> None:
        """Estimate from the records written from now on."""
        self.n = self.steps = 0
        self._block = []
        self._settle_until = -math.inf
        self._read = loop_log.n

    def update(self, loop_log: LoopLog) -> None:
        """Take in the records written since the last call."""
        idx = loop_log.order(self._read)
        self._read = loop_log.n
        for t, d in zip(loop_log.t[idx].tolist(), loop_log.v[0, idx].tolist(), strict=True):
            if not self._block:
                self._block_t = t
            elif t - self._block_t >= DRIFT_BLOCK_S:
                self._close_block()
                self._block_t = t
            self._block.append(d)

    def _close_block(self) -> None:
        cap = self.t.shape[0]
        k = self.n
        m = float(np.median(self._block))
        self._block = []
        settled = self._block_t >= self._settle_until
        self.t[k % cap], self.m[k % cap], self.ok[k % cap] = self._block_t, m, settled
        self.piece[k % cap] = self.piece[(k - 1) % cap] if k else 0
        self.n = k + 1
        if k == 0:
            return
        step = abs(m - self.m[(k - 1) % cap]) > DRIFT_STEP_S
        if not step and k >= 2 and self.piece[(k - 1) % cap] == self.piece[(k - 2) % cap]:
            step = abs(m - self.m[(k - 2) % cap]) > DRIFT_STEP_S
        if step:
            self.steps += 1
            self.piece[k % cap] += 1
            self.ok[k % cap] = self.ok[(k - 1) % cap] = False
            self._settle_until = self._block_t + DRIFT_STEP_SETTLE_S

    def _fit(self) -> tuple[float, float, float, tuple[float, float] | None] | None:
        """The least-squares line through the window: (slope, its standard error, how far
        it moves over the window in residual spreads, (time, level) of the last piece's
        centre or None if it is too short), or None."""
        if self._fit_cache[0] == self.n:
            return self._fit_cache[1]
        cap = self.t.shape[0]
        idx = np.arange(max(0, self.n - cap), self.n) % cap
        fit = None
        if len(idx):
            idx = idx[(self.t[idx] >= self.t[idx[-1]] - DRIFT_WINDOW_S) & self.ok[idx]]
            t, m, piece = self.t[idx], self.m[idx], self.piece[idx]
            dt, dm = t.copy(), m.copy()
            span = 0.0
            centre = None
            for p in np.unique(piece):
                sel = piece == p
                centre = None
                if sel.sum() >= 2:
                    centre = float(t[sel].mean()), float(m[sel].mean())
                    span += float(t[sel][-1] - t[sel][0])
                    dt[sel] -= centre[0]
                    dm[sel] -= centre[1]
                else:
                    dt[sel] = dm[sel] = 0.0  # a piece of one block tells nothing
            free = len(t) - len(np.unique(piece)) - 1
            if span >= DRIFT_MIN_SPAN_S and free > 0:
                slope = float(dt @ dm / (dt @ dt))
                residual = dm - slope * dt
                spread = math.sqrt(float(residual @ residual) / free)
                se = spread / math.sqrt(float(dt @ dt))
                fit = slope, se, abs(slope) * span / max(spread, 1e-9), centre
        self._fit_cache = (self.n, fit)
        return fit

    @property
    def rate(self) -> float | None:
        """Drift in seconds of loop latency per second (+: the output clock runs slow);
        None until the window spans DRIFT_MIN_SPAN_S."""
        fit = self._fit()
        return None if fit is None else fit[0]

    @property
    def significant(self) -> bool:
        """True if the drift is beyond the dead band and DRIFT_SIGNIFICANCE standard errors."""
        fit = self._fit()
        if fit is None:
            return False
        slope, se, moved, _ = fit
        return abs(slope) > max(DRIFT_DEADBAND, DRIFT_SIGNIFICANCE * se) and moved > DRIFT_WANDER

    def level(self, now: float) -> float | None:
        """The loop latency the drift line of the last piece gives at ``now`` (s)."""
        fit = self._fit()
        if fit is None or fit[3] is None:
            return None
        rate, _, _, (t_centre, m_centre) = fit
        return m_centre + rate * (now - t_centre)


class TimingControl:
    """Holds the latency where it was printed: realigns, slips, grows and shrinks.

    Ticked by the main thread (every ~50 ms) with the engine's counters; returns the jump the
    output callback should make, ``(samples, kind)`` (+: ahead, less latency), or None.
    ``jumped[kind]`` is the engine's net samples jumped per kind (what it really did).
    """

    def __init__(
        self,
        sample_rate: int,
        margin: int,
        loop_log: LoopLog,
        timeline: Timeline,
        phase_log: LoopLog | None = None,
    ):
        self.sr = sample_rate
        self.margin = margin
        self.loop_log = loop_log
        #: what the changes are read from (the engine's sample-count phase; the timestamps'
        #: loop latency if None)
        self.phase_log = loop_log if phase_log is None else phase_log
        self.timeline = timeline
        self.drift = DriftEstimator()
        self.ref: float | None = None  # the loop latency held (s): the level printed
        self.ref_phase = 0.0  # the phase held (s): changes are measured from it
        self._realign_ticks = 0
        self._last_realign = -math.inf
        self._step_t = -math.inf  # when the loop latency moved away from the held value
        self._hold_t = self._last_tick = 0.0
        self._drift_started = False
        self._underruns_seen = 0
        self._underrun_times: deque[float] = deque(maxlen=GROW_AFTER)
        self._late = 0  # worst lateness (samples) of the underruns not yet answered
        self._grow_due: float | None = None  # when GROW_AFTER underruns came close together
        self._last_change = -math.inf  # last underrun, grow or shrink

    def hold(self, now: float, underruns: int, expected: float = 0.0) -> float | None:
        """Hold the loop latency of the last LOOP_SETTLE_S (s; None without timestamps), or
        ``expected`` (the device latencies, s) if that was more by STARTUP_LOSS_S: a timeline
        that lost time to xruns during start-up is then realigned like after any xrun."""
        self.ref = self.loop_log.median(now - LOOP_SETTLE_S)
        phase = self.phase_log.median(now - LOOP_SETTLE_S)
        self.ref_phase = self.ref if phase is None else phase
        if self.ref is not None and expected > 0 and self.ref > expected + STARTUP_LOSS_S:
            log.info("loop latency %.1f ms at start, expected %.1f", 1e3 * self.ref, 1e3 * expected)
            self.ref_phase -= self.ref - expected  # the time lost: realigned like an xrun
            self.ref = expected
        self._hold_t = self._last_tick = now
        self._drift_started = False
        self._underruns_seen = underruns
        self._last_change = now
        return self.ref

    def loop_now(self, now: float, jumped: list[int]) -> float | None:
        """The device loop latency now less what the realigns and slips took off: the
        latency beyond the engine and the output buffer (s; None without timestamps): the
        level held, moved by what the phase moved since."""
        d = self.phase_log.median(now - REALIGN_WINDOW_S)
        if d is None or self.ref is None:
            return None
        return self.ref + d - self.ref_phase - (jumped[REALIGN] + jumped[SLIP]) / self.sr

    def tick(
        self, now: float, underruns: int, late: int, jumped: list[int]
    ) -> tuple[int, int] | None:
        """One decision: ``underruns`` so far, ``late`` the worst samples missing at a read
        since the last tick, ``jumped`` the engine's net jumps per kind."""
        dt, self._last_tick = now - self._last_tick, now
        converging = now < self._hold_t + CONVERGE_S
        if not self._drift_started:
            self.drift.start(self.phase_log)
            self._drift_started = True
        self.drift.update(self.phase_log)
        if underruns > self._underruns_seen:
            self._underruns_seen = underruns
            times = self._underrun_times
            times.append(now)
            if self._grow_due is None and len(times) == GROW_AFTER:
                if times[-1] - times[0] <= GROW_WINDOW_S:
                    self._grow_due = now
            self._last_change = now
        self._late = max(self._late, late)
        if self.ref is None:  # no timestamps: only the buffer adapts
            return self._buffer(now, jumped)
        # a step of the device loop latency (an xrun): one jump by all of it
        d_now = self.phase_log.median(now - REALIGN_WINDOW_S)
        if d_now is not None:
            err = round((d_now - self.ref_phase) * self.sr) - jumped[REALIGN] - jumped[SLIP]
            if converging:  # the level printed follows what only the timestamps say
                ts_now = self.loop_log.median(now - REALIGN_WINDOW_S)
                ts_err = 0.0 if ts_now is None else ts_now - self.ref - (d_now - self.ref_phase)
                if abs(ts_err) < REALIGN_MIN_S / 2:  # slow changes (a step is an xrun's)
                    self.ref += ts_err * min(1.0, dt / CONVERGE_TAU_S)
            if abs(err) >= REALIGN_MIN_S * self.sr:
                if not self._realign_ticks:  # the step came about half a window ago
                    self._step_t = now - REALIGN_WINDOW_S / 2
                self._realign_ticks += 1
                if (
                    self._realign_ticks < REALIGN_CONFIRM
                    or now < self._last_realign + REALIGN_HOLD_S
                ):
                    return None  # no buffer decisions while the timeline may be off
                self._realign_ticks = 0
                self._last_realign = now
                if err > 0:  # ahead (less latency): only as far as the reads since show spare
                    err = self.timeline.plan_trim(self.margin / self.sr, err, since=self._step_t)
                if err:
                    self._underrun_times.clear()  # what came late was the step's doing
                    self._grow_due = None
                    self._late = 0
                    return err, REALIGN
            else:
                self._realign_ticks = 0
        # clock drift: one-sample slips (at most one a tick) along the drift line
        level = self.drift.level(now) if self.drift.significant else None
        if level is not None:
            want = round((level - self.ref_phase) * self.sr) - jumped[REALIGN] - jumped[SLIP]
            if abs(want) >= SLIP_AFTER:
                return (1 if want > 0 else -1), SLIP
        return self._buffer(now, jumped)

    def _buffer(self, now: float, jumped: list[int]) -> tuple[int, int] | None:
        """Grow after repeated underruns; shrink what was grown when it was not needed."""
        grown = -(jumped[GROW] + jumped[SHRINK])
        if self._grow_due is not None and now >= self._grow_due + GROW_SETTLE_S:
            room = round(MAX_GROW_S * self.sr) - grown
            step = min(self._late + self.margin, room)
            self._underrun_times.clear()
            self._grow_due = None
            self._late = 0
            if step > 0:
                self._last_change = now
                return -step, GROW
        if grown > 0 and now - self._last_change >= SHRINK_AFTER_S:
            since = self._last_change
            self._last_change = now
            step = self.timeline.plan_trim(self.margin / self.sr, grown, since=since)
            if step >= SHRINK_MIN_S * self.sr:
                return step, SHRINK
        return None
