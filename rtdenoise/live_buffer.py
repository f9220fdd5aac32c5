"""How much output buffering live mode needs: the prefill at start, the trim and shrinks.

The audio callbacks and the worker only record, into preallocated arrays; the main thread
plans from the records (see :mod:`.live_timing` for the plans that keep the latency put).

* :class:`Preroll`: the callbacks of the first half second (before the pipeline is armed):
  the largest bursts of back-to-back callbacks and the device latencies. :func:`plan_prefill`
  sizes the output buffer from them for the worst phase between the two streams' bursts.
* :class:`Timeline`: when the worker made processed output up to an index and when an output
  callback needed it. :meth:`Timeline.plan_trim` finds how much buffering every recorded read
  could have done without beyond the margin: the real phase is not the worst one (the *trim*
  after start-up, a *shrink* after a grown buffer was not needed for a while, how far a
  realign may jump ahead).
"""

from __future__ import annotations

import logging
import math

import numpy as np

log = logging.getLogger(__name__)

#: callbacks closer together than this belong to one burst (sizing the output prefill)
BURST_GAP_S = 0.001
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


class Records:
    """The last ``capacity`` of a stream of records (time + columns), written by one thread,
    read by another: :meth:`since` copies out those from a time on (main thread only)."""

    def __init__(self, capacity: int, columns: int, dtype: type = np.float64) -> None:
        self.n = 0  # records written since the start
        self.t = np.zeros(capacity, np.float64)
        self.v = np.zeros((columns, capacity), dtype)

    def clear(self) -> None:
        self.n = 0

    def order(self, start: int = 0) -> np.ndarray:
        """Ring positions of the records from number ``start`` on, oldest first (at most the
        last ``capacity``; one more is dropped in case the writer is overwriting it)."""
        cap = self.t.shape[0]
        n = self.n
        start = max(start, n - cap + 1)
        return np.arange(start, n) % cap

    def since(self, t0: float) -> tuple[np.ndarray, np.ndarray]:
        """(times, values [columns, k]) of the records at ``t0`` or later, oldest first."""
        idx = self.order()
        idx = idx[self.t[idx] >= t0]
        return self.t[idx], self.v[:, idx]


class Timeline:
    """When processed output up to an index was made (side 0, the worker) and when an output
    callback needed it (side 1): [side] x (time s, output index), recorded while :attr:`on`.
    Rings: the last ``capacity`` records of each side (~60 s at the default chunk)."""

    def __init__(self, capacity: int = 16384) -> None:
        self.on = False
        self._rings = (Records(capacity, 1, np.int64), Records(capacity, 1, np.int64))

    def record(self, side: int, now: float, index: int) -> None:
        """(worker or callback) output up to ``index`` was made (0) / needed (1) at ``now``."""
        ring = self._rings[side]
        k = ring.n % ring.t.shape[0]
        ring.t[k] = now
        ring.v[0, k] = index
        ring.n += 1

    def start(self) -> None:
        """Start recording afresh."""
        for ring in self._rings:
            ring.clear()
        self.on = True

    def stop(self) -> None:
        self.on = False

    def spare(self, n: int = 0, since: float = -math.inf) -> float:
        """The least time (s) between processed output being made and an output callback
        reading it (+ the crossfade), had the output been ``n`` samples further ahead, over
        the reads from time ``since`` on (and all the output made that the rings hold); -inf
        if a read would have come first, +inf if nothing was recorded."""
        made_t, made_i = self._rings[0].since(-math.inf)
        read_t, need = self._rings[1].since(since)
        return _spare(made_t, made_i[0], read_t, need[0], n)

    def plan_trim(self, margin_s: float, most: int, since: float = -math.inf) -> int:
        """Samples of output buffering to drop (at most ``most``): the most that leaves every
        output callback recorded since ``since`` finding what it reads made at least
        ``margin_s`` before.

        The prefill assumes the worst phase between input and output bursts and no worker
        time. While both streams run on one clock the phase only wobbles within the range the
        timeline shows (see TRIM_WINDOW_S), and the timeline holds the worker's real times, so
        what it shows is spare is latency for nothing. Measured in time, not in spare samples:
        a callback that comes while the worker is half-way through a burst finds a chunk more
        or less depending on who wins the race.
        """
        made_t, made_i = self._rings[0].since(-math.inf)  # reads may need older output
        read_t, need = self._rings[1].since(since)
        spare = _spare(made_t, made_i[0], read_t, need[0], 0)
        if not margin_s <= spare < math.inf:
            return 0
        lo, hi = 0, most  # the spare falls as n grows: bisect
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if _spare(made_t, made_i[0], read_t, need[0], mid) >= margin_s:
                lo = mid
            else:
                hi = mid - 1
        return lo


def _spare(
    made_t: np.ndarray, made_i: np.ndarray, read_t: np.ndarray, need: np.ndarray, n: int
) -> float:
    if len(made_t) < 2:
        return math.inf
    # reads whose data was all made while recording; later ones may need what came after
    keep = (need > made_i[0]) & (read_t < made_t[-1] - TRIM_HORIZON_S)
    if not keep.any():
        return math.inf
    idx = np.searchsorted(made_i, need[keep] + n)  # the chunk that made the needed sample
    if idx.max() >= len(made_t):
        return -math.inf
    return float(np.min(read_t[keep] - made_t[idx]))
