"""Latency planning for live mode: how much output buffering, and keeping the latency put.

Three measurements, each filled by the audio callbacks or the worker into preallocated arrays
and read by the main thread:

* :class:`Preroll`: the callbacks of the first half second (before the pipeline is armed):
  the largest bursts of back-to-back callbacks and the device latencies. :func:`plan_prefill`
  sizes the output buffer from them for the worst phase between the two streams' bursts.
* :class:`Timeline`: when the worker made processed output up to an index and when an output
  callback needed it. :meth:`Timeline.plan_trim` finds how much of the prefill every recorded
  read could have done without beyond the margin: the real phase is not the worst one.
* :class:`LoopTracker`: the device loop latency (DAC time of an output sample minus the ADC
  time of the input sample it was made from) per output callback, and the one-sample slips
  that hold it where it was when the latency was printed (clock drift between the devices).
"""

from __future__ import annotations

import logging
import math

import numpy as np

log = logging.getLogger(__name__)

#: callbacks closer together than this belong to one burst (sizing the output prefill)
BURST_GAP_S = 0.001
#: drift between the input and output clocks (or an xrun that moved one timeline): the output
#: slips one sample per callback while the smoothed device loop latency (from the callback
#: timestamps) is this far from the value printed at start
DRIFT_LIMIT_S = 0.002
#: smoothing of the loop latency per output callback (time constant ~ 200 callbacks)
LOOP_SMOOTHING = 0.005
#: seconds of armed run over which the device loop latency is averaged for the start line
LOOP_SETTLE_S = 0.3
#: seconds of armed run over which the output callbacks' timing is recorded for the trim. The
#: phase between the two streams' bursts wobbles: under PulseAudio with a 44.1 kHz stream on a
#: 48 kHz sink the output callbacks slide through a whole period every 2-4 s (measured); a
#: window of 2 s planned the same trim as whole 40 s runs did, 0.3 s up to 8 ms too much.
TRIM_WINDOW_S = 2.0
#: the trim plan ignores output callbacks this close to the end of its recording (their data
#: may come after it)
TRIM_HORIZON_S = 0.06


class Preroll:
    """Callback times, sizes and device latencies before arming: [input, output] x callbacks."""

    def __init__(self, capacity: int = 4096) -> None:
        self.n = [0, 0]
        self.t = np.zeros((2, capacity), np.float64)
        self.frames = np.zeros((2, capacity), np.int64)
        self.latency = np.zeros((2, capacity), np.float64)

    def record(self, side: int, now: float, frames: int, latency: float) -> None:
        """(callback) one callback of ``side`` (0 input, 1 output)."""
        n = self.n[side]
        if n < self.t.shape[1]:
            self.t[side, n] = now
            self.frames[side, n] = frames
            self.latency[side, n] = latency
            self.n[side] = n + 1

    def bursts(self, side: int, least: int) -> tuple[int, float]:
        """(largest burst in frames, at least ``least``; mean device latency s) of one side."""
        n = min(self.n[side], self.t.shape[1])
        skip = n // 4  # the first callbacks come in a start-up rush
        t = self.t[side, skip:n]
        frames = self.frames[side, skip:n]
        burst = int(frames.max(initial=least))
        run = 0
        for i in range(t.shape[0]):
            run = run + int(frames[i]) if i and t[i] - t[i - 1] < BURST_GAP_S else int(frames[i])
            burst = max(burst, run)
        lat = self.latency[side, skip:n]
        lat = lat[lat > 0]
        return burst, float(lat.mean()) if len(lat) else 0.0


def plan_prefill(
    preroll: Preroll, blocksize: int, chunk: int, fade: int, margin: int
) -> tuple[int, float, float]:
    """From the pre-roll: (prefill samples, device input latency s, output latency s).

    prefill = the largest input burst + the largest output burst (back-to-back callbacks:
    the output side may ask for that much at once, just before the input side delivers
    what the worker needs for it) + crossfade length + margin, + up to one chunk of input
    the worker is still waiting to complete unless input callbacks are exactly one chunk
    (the default). Device latencies are the mean of PortAudio's callback timestamps
    (``currentTime - inputBufferAdcTime``, ``outputBufferDacTime - currentTime``).
    """
    least = blocksize or chunk
    burst_in, lat_in = preroll.bursts(0, least)
    burst_out, lat_out = preroll.bursts(1, least)
    pending = 0 if blocksize == chunk else chunk - 1
    log.info(
        "prefill: bursts in %d + out %d + pending chunk %d + fade %d + margin %d samples",
        burst_in, burst_out, pending, fade, margin,
    )  # fmt: skip
    return burst_in + burst_out + pending + fade + margin, lat_in, lat_out


class Timeline:
    """When processed output up to an index was made (side 0, the worker) and when an output
    callback needed it (side 1): [side] x (time s, output index), recorded while :attr:`on`."""

    def __init__(self, capacity: int = 4096) -> None:
        self.on = False
        self.n = [0, 0]
        self.t = np.zeros((2, capacity), np.float64)
        self.i = np.zeros((2, capacity), np.int64)

    def record(self, side: int, now: float, index: int) -> None:
        """(worker or callback) output up to ``index`` was made (0) / needed (1) at ``now``."""
        n = self.n[side]
        if n < self.t.shape[1]:
            self.t[side, n] = now
            self.i[side, n] = index
            self.n[side] = n + 1

    def start(self) -> None:
        """Start recording afresh."""
        self.n = [0, 0]
        self.on = True

    def stop(self) -> None:
        self.on = False

    def spare(self, n: int = 0) -> float:
        """The least time (s) between processed output being made and an output callback
        reading it (+ the crossfade), had the output been ``n`` samples further ahead; -inf if
        a read would have come first, +inf if nothing was recorded."""
        nw, nr = self.n
        made_t, made_i = self.t[0, :nw], self.i[0, :nw]
        read_t, need = self.t[1, :nr], self.i[1, :nr]
        if nw < 2:
            return math.inf
        # reads whose data was all made while recording; later ones may need what came after
        keep = (need > made_i[0]) & (read_t < made_t[-1] - TRIM_HORIZON_S)
        if not keep.any():
            return math.inf
        idx = np.searchsorted(made_i, need[keep] + n)  # the chunk that made the needed sample
        if idx.max() >= nw:
            return -math.inf
        return float(np.min(read_t[keep] - made_t[idx]))

    def plan_trim(self, margin_s: float, most: int) -> int:
        """Samples of output buffering to drop (at most ``most``): the most that leaves every
        recorded output callback finding what it reads made at least ``margin_s`` before.

        The prefill assumes the worst phase between input and output bursts and no worker
        time. While both streams run on one clock the phase only wobbles within the range the
        timeline shows (see TRIM_WINDOW_S), and the timeline holds the worker's real times, so
        what it shows is spare is latency for nothing. Measured in time, not in spare samples:
        a callback that comes while the worker is half-way through a burst finds a chunk more
        or less depending on who wins the race.
        """
        if not margin_s <= self.spare(0) < math.inf:
            return 0
        lo, hi = 0, most  # spare falls as n grows: bisect
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.spare(mid) >= margin_s:
                lo = mid
            else:
                hi = mid - 1
        return lo


class LoopTracker:
    """The device loop latency per output callback, and the drift slips that hold it.

    :meth:`measure` takes one callback's loop latency (s) and returns the slip to apply (+1:
    the output plays one sample newer, -1: it repeats one, 0). Plain floats and ints: the
    output callback calls it, the main thread reads it.
    """

    def __init__(self, sample_rate: int) -> None:
        self.sum = 0.0  # sum over output callbacks of (DAC time - ADC time of that input)
        self.n = 0
        self.ema = 0.0  # smoothed loop latency (s): moves if the two clocks drift
        self.slips = 0  # net one-sample slips of the output against the input (drift)
        self.ref: float | None = None  # main -> output callback: loop latency to hold
        self._sample_s = 1.0 / sample_rate

    def measure(self, loop: float) -> int:
        """(output callback) one loop latency measurement -> slip (+1, -1 or 0)."""
        self.sum += loop
        self.n += 1
        self.ema += (loop - self.ema) * LOOP_SMOOTHING if self.n > 1 else loop
        ref = self.ref
        if ref is None:
            return 0
        if self.ema - ref > DRIFT_LIMIT_S:  # output late: play a newer sample
            self.ema -= self._sample_s
            self.slips += 1
            return 1
        if ref - self.ema > DRIFT_LIMIT_S:  # output early: repeat one
            self.ema += self._sample_s
            self.slips -= 1
            return -1
        return 0

    def restart(self) -> None:
        """(output callback) the output timeline jumped: measure the mean afresh."""
        self.sum = 0.0
        self.n = 0

    def hold(self, loop: float) -> None:
        """Start drift compensation: hold the loop latency at ``loop`` seconds (the value
        printed at start), also after an xrun has moved it."""
        if self.n:
            self.ema = loop  # track from the mean, not from one noisy callback
            self.ref = loop

    def move_ref(self, seconds: float) -> None:
        """(output callback) the output buffer grew by ``seconds``: hold that instead."""
        if self.ref is not None:
            self.ref += seconds

    def drift_seconds(self) -> float:
        """How far the output clock moved against the input since :meth:`hold` (s):
        positive = the output ran slow (latency would have grown)."""
        if self.ref is None:
            return 0.0
        return self.ema + self.slips * self._sample_s - self.ref

    def mean(self) -> float:
        """Mean loop latency (s) since the last jump; 0 if the host gives no timestamps."""
        return self.sum / self.n if self.n else 0.0
