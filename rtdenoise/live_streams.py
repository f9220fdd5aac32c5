"""The two PortAudio streams of live mode, and a larger device buffer after repeated xruns.

One stream per direction (a duplex stream over two different ALSA/pulse devices was seen to
busy-wait at 100% CPU with xruns; separate streams do not), both calling into one
:class:`.live_engine.LiveEngine`.

On a busy machine the callbacks themselves may come too late for a small device buffer:
PortAudio then reports xruns (``output_underflow``, ``input_overflow``) and the sound server
plays silence or drops input. No output buffering of ours helps with that (the data is ready;
the callback did not run), so when one stream reports :data:`XRUN_REPEAT` xruns within
:data:`XRUN_WINDOW_S`, :meth:`LiveStreams.check_xruns` reopens it with twice the suggested
latency (at least :data:`MIN_GROWN_LATENCY_S`, at most :data:`MAX_DEVICE_LATENCY_S`). A grown
stream that then runs :data:`SHRINK_AFTER_S` without an xrun is reopened with the buffer it had
before (one step at a time, back to the one asked for): the load that caused the xruns has
usually passed, and the larger buffer is latency. If the xruns then come back within that
time, the stream grows again and waits twice as long before the next try (up to
:data:`MAX_SHRINK_AFTER_S`), so that a machine that stays busy does not flip between the two.
The engine keeps counting samples across a reopen; the step this puts in the device loop
latency is realigned like any xrun's.

A machine whose other runnable tasks fill every CPU at start (:func:`machine_busy`) gets
:data:`BUSY_LATENCY_S` from the start (live.py), and the defaults once calm, as if grown.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections import deque
from typing import Any

from . import devices
from .live_engine import LiveEngine

log = logging.getLogger(__name__)

#: a stream that reports this many xruns...
XRUN_REPEAT = 2
#: ...within this many seconds is reopened with a larger buffer. Each xrun is a gap (and a
#: realign): under 2 busy processes the sound server's own main thread was runnable but not
#: run for 0.1-0.3 s at a time (/proc, measured), every 5-20 s, which no output buffering of
#: ours covers; only a larger device buffer does
XRUN_WINDOW_S = 30.0
#: the suggested latency a reopened stream gets at least (s): 50 ms each way gave 0 xruns in
#: a minute under 2 busy processes where 5/15 ms gave 6 (measured)...
MIN_GROWN_LATENCY_S = 0.05
#: ...and at most
MAX_DEVICE_LATENCY_S = 0.2
#: a grown stream is reopened with its previous buffer after this long without an xrun...
SHRINK_AFTER_S = 60.0
#: ...doubled (up to this) each time the xruns came back within it after a shrink
MAX_SHRINK_AFTER_S = 600.0
#: xrun flags this soon after a reopen are the new stream starting up, not load: not counted
#: towards the next grow (they stay counted in the engine's stats)
REOPEN_GRACE_S = 0.5
#: the suggested latency each way when the machine is busy at start (see :func:`machine_busy`):
#: under 2 busy processes 50 ms gave 0 xruns in a minute where 5/15 ms gave 6 (measured)
BUSY_LATENCY_S = 0.05
#: the xrun flags of each direction
XRUN_FLAGS = (("input_overflow", "input_underflow"), ("output_underflow", "output_overflow"))
SIDES = ("input", "output")


def machine_busy(samples: int = 10, interval: float = 0.01) -> tuple[bool, float]:
    """Whether the other runnable tasks fill every CPU (the median of ``samples`` readings of
    the kernel's runnable count, less this thread): a callback would then wait for a CPU
    each time it wakes, and so would the sound server's threads. -> (busy, others). Linux
    (/proc/stat); elsewhere never busy."""
    counts = []
    for k in range(samples):
        try:
            with open("/proc/stat") as f:
                line = next(ln for ln in f if ln.startswith("procs_running"))
        except (OSError, StopIteration):
            return False, 0.0
        counts.append(int(line.split()[1]) - 1)
        if k + 1 < samples:
            time.sleep(interval)
    others = float(sorted(counts)[len(counts) // 2])
    return others >= (os.cpu_count() or 1), others


class LiveStreams:
    """The input and output stream of one run (``sd``: the sounddevice module)."""

    def __init__(
        self,
        sd: Any,
        engine: LiveEngine,
        devs: tuple[devices.Device, devices.Device],
        rate: int,
        blocksize: int,
        latency: str | float | tuple[str | float, str | float],
        calm_latency: tuple[str | float, str | float] | None = None,
    ) -> None:
        """``calm_latency``: what each stream goes back to once it has run SHRINK_AFTER_S
        without an xrun, as if it had grown from there (a busy start)."""
        self.sd, self.engine, self.devs = sd, engine, devs
        self.rate, self.blocksize = rate, blocksize
        self.requested = list(latency) if isinstance(latency, tuple) else [latency, latency]
        #: a stream finished by itself (device error, disconnect)
        self.ended: list[bool] = []
        #: times each side was reopened with a larger buffer, and with a smaller one again
        self.grown = [0, 0]
        self.shrunk = [0, 0]
        #: per side, the suggested latencies it had before each grow (the last is restored
        #: first by a shrink)
        self._before: tuple[list, list] = ([], [])
        self._calm_s = [SHRINK_AFTER_S, SHRINK_AFTER_S]
        self._last_xrun = [-math.inf, -math.inf]
        self._last_shrink = [-math.inf, -math.inf]
        self._grown_at = [-math.inf, -math.inf]
        if calm_latency is not None:
            now = time.monotonic()
            for side in (0, 1):
                self._before[side].append(calm_latency[side])
                self._grown_at[side] = now
        self._generation = [0, 0]
        self._xruns_seen = [0, 0]
        self._xrun_times: tuple[deque[float], deque[float]] = (
            deque(maxlen=XRUN_REPEAT),
            deque(maxlen=XRUN_REPEAT),
        )
        self.streams: list[Any] = []
        try:
            for side in (0, 1):
                self.streams.append(self._open(side))
        except BaseException:
            self.close()
            raise

    def _open(self, side: int) -> Any:
        sd, engine = self.sd, self.engine
        cls = sd.InputStream if side == 0 else sd.OutputStream
        generation = self._generation[side]

        def finished() -> None:  # PortAudio's: the stream ended (by us, or a device failure)
            if generation == self._generation[side]:  # not one we replaced
                self.ended.append(True)
                engine.stop_event.set()

        try:
            return cls(
                device=self.devs[side].index,
                samplerate=self.rate,
                blocksize=self.blocksize,
                latency=self.requested[side],
                channels=1,
                dtype="float32",
                callback=engine.input_callback if side == 0 else engine.output_callback,
                finished_callback=finished,
            )
        except sd.PortAudioError as exc:
            raise devices.portaudio_user_error(
                exc, self.devs[side], self.rate, SIDES[side]
            ) from exc

    @property
    def latencies(self) -> tuple[float, float]:
        """The device latencies PortAudio gives the streams now (s)."""
        return self.streams[0].latency, self.streams[1].latency

    def start(self) -> None:
        for stream in self.streams[::-1]:  # the output first: it plays silence until armed
            stream.start()

    def close(self) -> None:
        for side, stream in enumerate(self.streams):
            self._generation[side] += 1
            try:
                stream.close(ignore_errors=True)
            except Exception as exc:  # closing a stream a device failure already broke
                log.debug("closing a stream: %s", exc)
        self.streams = []

    def check_xruns(self) -> str | None:
        """(main thread) Reopen a stream whose xruns repeat with a larger buffer, and a grown
        one that has been calm for a while with its previous buffer; -> what was done, for
        the user, or None."""
        flags = self.engine.stats.flags
        now = time.monotonic()
        for side in (0, 1):
            count = sum(flags.get(name, 0) for name in XRUN_FLAGS[side])
            if count > self._xruns_seen[side]:
                self._xruns_seen[side] = count
                if now - self._last_change(side) < REOPEN_GRACE_S:
                    continue
                self._last_xrun[side] = now
                times = self._xrun_times[side]
                times.append(now)
                if len(times) == XRUN_REPEAT and now - times[0] <= XRUN_WINDOW_S:
                    times.clear()
                    if now - self._last_shrink[side] <= self._calm_s[side]:  # too early
                        self._calm_s[side] = min(MAX_SHRINK_AFTER_S, 2 * self._calm_s[side])
                    return self._grow(side)
            calm = now - max(self._last_xrun[side], self._last_change(side))
            if self._before[side] and calm >= self._calm_s[side]:
                return self._shrink(side, now)
        return None

    def _last_change(self, side: int) -> float:
        return max(self._last_shrink[side], self._grown_at[side])

    def _reopen(self, side: int, latency: str | float) -> None:
        self._generation[side] += 1
        old = self.streams[side]
        old.abort(ignore_errors=True)
        old.close(ignore_errors=True)
        self.requested[side] = latency
        self.streams[side] = self._open(side)
        self.streams[side].start()
        self._xrun_times[side].clear()

    def _grow(self, side: int) -> str | None:
        old = self.streams[side]
        latency = min(MAX_DEVICE_LATENCY_S, max(MIN_GROWN_LATENCY_S, 2 * old.latency))
        if not latency > old.latency * 1.05 or math.isnan(latency):
            return None  # as large as it gets
        self._before[side].append(self.requested[side])
        self._reopen(side, latency)
        self._grown_at[side] = time.monotonic()
        self.grown[side] += 1
        return (
            f"repeated {SIDES[side]} xruns (a busy machine?): reopened the {SIDES[side]} "
            f"stream with a {1000 * self.streams[side].latency:.0f} ms device buffer"
        )

    def _shrink(self, side: int, now: float) -> str:
        self._reopen(side, self._before[side].pop())
        self._last_shrink[side] = now
        self.shrunk[side] += 1
        return (
            f"no {SIDES[side]} xruns for {self._calm_s[side]:.0f} s: reopened the "
            f"{SIDES[side]} stream with a {1000 * self.streams[side].latency:.0f} ms device "
            "buffer again"
        )
