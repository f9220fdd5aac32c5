"""The live engine: two audio callbacks that only copy, and a worker that runs the streamer.

An input and an output PortAudio stream whose callbacks only copy (input into a ring; ring into
the output) and count status flags; a worker thread runs the streaming engine (resampling,
STFT, model, overlap-add) on fixed-size chunks (one STFT hop at the device rate, also the
default callback size) and writes ahead into the output ring. How much ahead, and how that is
kept while the streams run, is planned in :mod:`.live_timing`; the engine records what the
plans need (callback bursts, when output was made and needed, the device loop latency) and
carries them out: it arms the pipeline with the prefill, makes each requested jump of the
output timeline (trim, grow, shrink, realign, slip) as one crossfade, and crossfades to the
equally delayed dry input when the worker falls behind. The worker asks for SCHED_FIFO
scheduling where it is permitted.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import UserError
from .live_buffer import Preroll, Timeline, plan_prefill
from .live_timing import GROW, JUMP_KINDS, SHRINK, TRIM, LoopLog, TimingControl
from .streamer import Streamer

log = logging.getLogger(__name__)

#: output samples above this magnitude are soft-clipped (tanh) towards 1.0
SOFT_KNEE = 0.9
#: crossfade between processed and dry output when the worker falls behind or catches up
FADE_S = 0.001
#: SCHED_FIFO priority of the worker, when the system allows it (root, limits.conf rtprio),
#: below PulseAudio/PipeWire's usual 5..20. The callback thread is PortAudio's and keeps the
#: scheduling PortAudio gives it: raised above the sound server's normal-priority client
#: threads (ALSA pulse plugin) it can busy-wait on them and starve them (seen: 100% CPU, xruns).
WORKER_RT_PRIORITY = 3
#: callbacks per side over which the on-time line of a stream is its earliest: at least a
#: few server periods (0.12 s of 3.9 ms input callbacks, 0.25 s of output bursts)
PHASE_WINDOW = 32
#: nice value of the threads that move audio (the main thread raises itself before opening the
#: streams, so PortAudio's callback threads and the sound server client library's threads
#: inherit it), where the system allows it: PulseAudio gives its own threads -11. Under CFS /
#: EEVDF this is a weight (~11x a nice-0 process's), not a strict priority: a busy-waiting
#: thread cannot starve the rest, but a woken callback preempts busy normal processes within a
#: scheduler slice instead of queueing behind them. Measured under 2 busy processes (idle
#: machine otherwise): 11 output xruns a minute before, 6 with it and the new device buffers;
#: the rest came while the sound server's own main thread was runnable but not run.
AUDIO_NICE = -11


@dataclass(frozen=True)
class LiveConfig:
    """Settings of one live run (device side; the processor comes separately)."""

    samplerate: int
    blocksize: int  # frames per callback, 0 = variable
    latency: str | float | tuple[str | float, str | float]  # PortAudio suggested latency
    margin_ms: float = 4.0


class _Stats:
    """Counters the callback and the worker update (plain ints/floats: atomic under the GIL)."""

    def __init__(self) -> None:
        self.xruns = 0  # callbacks with an xrun status flag after start-up
        self.xruns_startup = 0
        self.flags: dict[str, int] = {}
        self.underruns = 0  # times the worker fell behind (output switched to dry)
        self.dry_samples = 0
        self.worker_cpu = 0.0  # thread CPU seconds inside the engine
        self.late = 0  # worst samples missing at a read since the main thread last looked
        #: per kind of jump (JUMP_KINDS): how many the output callback made, and their net
        #: samples (+: ahead, less latency)
        self.jumps = [0] * len(JUMP_KINDS)
        self.jumped = [0] * len(JUMP_KINDS)


def chunk_frames(streamer: Streamer) -> int:
    """The worker's chunk (and default callback size): one STFT hop at the device rate."""
    hop = streamer.stft.hop * streamer.sample_rate / streamer.stft.sample_rate
    return max(1, math.ceil(hop))


def _try_realtime(priority: int) -> bool:
    """Give the calling thread SCHED_FIFO ``priority``; False where not permitted/supported."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except (AttributeError, OSError):
        return False
    return True


def raise_priority(nice: int = AUDIO_NICE) -> bool:
    """Give the calling thread (and the threads it creates from now on: on Linux the nice
    value is per thread and inherited) nice value ``nice``, unless it already has that or a
    higher priority. False where it is not permitted (no CAP_SYS_NICE, RLIMIT_NICE)."""
    try:
        if os.getpriority(os.PRIO_PROCESS, 0) <= nice:
            return True
        os.setpriority(os.PRIO_PROCESS, 0, nice)
    except (AttributeError, OSError):
        return False
    return True


def _soft_clip(y: np.ndarray, tmp: np.ndarray, tmp2: np.ndarray) -> None:
    """In place: |y| above SOFT_KNEE goes through a tanh towards 1 (tmp, tmp2: scratch)."""
    np.abs(y, out=tmp)
    if tmp.max(initial=0.0) <= SOFT_KNEE:
        return
    head = 1.0 - SOFT_KNEE
    np.subtract(tmp, SOFT_KNEE, out=tmp)
    np.maximum(tmp, 0.0, out=tmp)  # excess over the knee, e >= 0
    np.multiply(tmp, 1.0 / head, out=tmp2)
    np.tanh(tmp2, out=tmp2)
    np.multiply(tmp2, head, out=tmp2)
    np.subtract(tmp, tmp2, out=tmp)  # e - head * tanh(e / head) >= 0: how much to take off
    np.copysign(tmp, y, out=tmp)
    np.subtract(y, tmp, out=y)
    np.clip(y, -1.0, 1.0, out=y)  # float32 rounding near the top


def _ring_write(ring: np.ndarray, index: int, x: np.ndarray) -> None:
    """ring [S] (S a power of two) <- x at absolute sample index ``index``, wrapping."""
    size = ring.shape[0]
    s = index & (size - 1)
    n = x.shape[0]
    if s + n <= size:
        ring[s : s + n] = x
    else:
        k = size - s
        ring[s:] = x[:k]
        ring[: n - k] = x[k:]


def _ring_read(ring: np.ndarray, index: int, out: np.ndarray) -> None:
    """out <- ring at absolute sample index ``index``, wrapping."""
    size = ring.shape[0]
    s = index & (size - 1)
    n = out.shape[0]
    if s + n <= size:
        out[:] = ring[s : s + n]
    else:
        k = size - s
        out[:k] = ring[s:]
        out[k:] = ring[: n - k]


class LiveEngine:
    """Input callback + output callback + worker around one :class:`Streamer` (mono).

    Two PortAudio streams, one per direction (a duplex stream over two different ALSA/pulse
    devices was seen to busy-wait at 100% CPU with xruns; separate streams do not).

    Indices count input samples since the input stream started. Input sample ``i`` is written
    at ring index ``i``; the worker processes chunk ``[k, k + N)`` and writes it at output
    index ``k + prefill``, so output index ``q`` is ``processed(input)[q - delay]`` with
    ``delay = prefill + streamer.latency_samples``; the dry fallback plays input ``q - delay``.
    The output stream counts its own samples ``o``; when the pipeline is armed the output
    callback maps them once onto input indices, ``q = o + out_map``, with ``q`` = the newest
    input index at that moment.
    """

    def __init__(self, streamer: Streamer, cfg: LiveConfig) -> None:
        self.streamer = streamer
        self.cfg = cfg
        sr = cfg.samplerate
        #: worker chunk: one STFT hop at the device rate
        self.chunk = chunk_frames(streamer)
        self.fade = max(1, round(FADE_S * sr))
        #: samples processed output should be ready before a read needs it (--margin-ms)
        self.margin = round(cfg.margin_ms * sr / 1000)
        #: device input + output latency (s) as PortAudio reports it, where the callbacks give
        #: no timestamps to measure the loop latency with
        self.device_latency = 0.0
        size = 1 << max(12, math.ceil(math.log2(4 * sr)))  # >= 4 s: history for the dry path
        self._in = np.zeros(size, np.float32)
        self._out = np.zeros(size, np.float32)
        self._dry_buf = np.zeros(size // 2, np.float32)
        self._wet_buf = np.zeros(size // 2, np.float32)
        self._fade_up = np.linspace(0.0, 1.0, self.fade + 2, dtype=np.float32)[1:-1]
        self._fade_down = self._fade_up[::-1].copy()
        self._x = np.zeros(self.chunk, np.float32)
        self._y = np.zeros(self.chunk, np.float32)
        self._tmp = np.zeros(self.chunk, np.float32)
        self._tmp2 = np.zeros(self.chunk, np.float32)
        self.stats = _Stats()
        # positions (absolute sample indices), each written by one thread only
        self._in_written = 0  # input callback: input stored up to here
        self._in_ref = (0, 0.0)  # input callback: (index, ADC time of that sample)
        # the streams' on-time lines (engine clock s - sample index / rate): each callback's
        # value, the least of the last PHASE_WINDOW (callbacks only come late), per side
        self._on_time = np.full((2, PHASE_WINDOW), np.inf)
        self._on_time_n = [0, 0]
        self._in_line = 0.0  # input callback: the input's on-time line now
        self._out_pos = 0  # output callback: samples played
        self.out_map: int | None = None  # output callback: q = o + out_map once armed
        self._out_written = 0  # worker: processed output stored up to here
        self._worker_pos = 0  # worker: next input index to process
        self._arm_start = 0
        self._armed = False
        self._arm_prefill = 0  # main -> input callback: arm with this prefill
        self._dry = False  # output callback: currently playing the dry fallback
        self._sample_s = 1.0 / sr
        self.prefill = 0
        self.delay = 0
        self._map0 = 0  # output callback: out_map when armed (the loop latency's reference)
        self._jump_n = 0  # main -> output callback: jump this many samples (+: ahead), once
        self._jump_kind = TRIM
        self._warm_until = 0  # worker: output below this index is dry (after a resync)
        #: the callbacks before arming: bursts and device latencies, for the prefill
        self.preroll = Preroll()
        #: when processed output was made and needed after start-up, for the trim and shrinks
        self.timeline = Timeline()
        #: device loop latency per output callback, from PortAudio's timestamps: the level
        self.loop_log = LoopLog()
        #: the streams' phase per output callback, from sample counts: its changes
        self.phase_log = LoopLog()
        self._clock = time.perf_counter
        self.last_callback = [self._clock(), self._clock()]
        self.error: BaseException | None = None
        self.stop_event = threading.Event()
        self._wake = threading.Event()
        self._recorders: list[Any] = []
        self._rec_in: Any = None
        self._rec_out: Any = None
        self.callback_abort: type[BaseException] = RuntimeError
        #: ask for real-time (SCHED_FIFO) scheduling of the worker thread
        self.use_realtime = False
        #: which threads got it
        self.realtime: dict[str, bool] = {}

    # -- audio callbacks: copy and count only ---------------------------------------------

    def input_callback(self, indata: np.ndarray, frames: int, t: Any, status: Any) -> None:
        """PortAudio input callback: store the samples, wake the worker."""
        try:
            if status:
                self._count_status(status)
            now = self._clock()
            self.last_callback[0] = now
            pos = self._in_written
            _ring_write(self._in, pos, indata[:, 0])
            end = pos + frames
            adc = t.inputBufferAdcTime
            self._in_written = end
            self._in_line = self._line(0, now - end * self._sample_s)  # its last sample
            if adc > 0.0:
                # no sample is delivered before it is captured: the first one of these frames
                # at least their duration before now (PulseAudio's ALSA plugin reports the
                # capture delay without the frames being read: ~0, and the printed latency
                # then came out ~4 ms short with 5 ms input buffers, measured with clicks)
                adc = min(adc, t.currentTime - frames * self._sample_s)
                self._in_ref = (end, adc + frames * self._sample_s)
            if not self._armed:
                self.preroll.record(0, now, frames, t.currentTime - adc)
                if self._arm_prefill:
                    self._arm(end)
            elif end - self._worker_pos >= self.chunk:
                self._wake.set()
        except Exception as exc:  # never propagate into PortAudio: stop the program instead
            self._fail(exc)
            raise self.callback_abort from exc

    def output_callback(self, outdata: np.ndarray, frames: int, t: Any, status: Any) -> None:
        """PortAudio output callback: processed output, or the delayed dry input if late."""
        try:
            if status:
                self._count_status(status)
            now = self._clock()
            self.last_callback[1] = now
            out = outdata[:, 0]
            o = self._out_pos
            self._out_pos = o + frames
            if self.out_map is None:
                if not self._armed:
                    out.fill(0.0)
                    self.preroll.record(1, now, frames, t.outputBufferDacTime - t.currentTime)
                    return
                self.out_map = self._in_written - o  # newest input <-> this output sample
                self._map0 = self.out_map
            q = o + self.out_map
            dac = t.outputBufferDacTime
            i_ref, a_ref = self._in_ref
            if dac > 0.0 and a_ref > 0.0:  # DAC time of o - ADC time of its input as armed
                loop = dac - (a_ref + (o + self._map0 - i_ref) * self._sample_s)
                self.loop_log.record(now, loop)
            # the phase: how far the input counter runs ahead of the output counter, from
            # their on-time lines (the last sample each callback delivers / asks for), less
            # the mapping made at arming. It moves as the real latency does (an xrun steps
            # it, clock drift slopes it) and, unlike the timestamps, never by itself
            out_line = self._line(1, now - (o + frames) * self._sample_s)
            self.phase_log.record(now, out_line - self._in_line - self._map0 * self._sample_s)
            avail = self._out_written - q
            n = self._jump_n
            if self._dry and n < 0 and avail - n >= frames + self.fade:
                # a jump back (an input xrun realigned, a grown buffer) ends the dry fallback:
                # from the dry input into the processed output there, at once
                self._jump_n = 0
                _ring_read(self._in, q - self.delay, out)
                self._fade_into(q + n, frames, out)
                self._dry = False
                self._count_jump(n, self._jump_kind)
                if self.timeline.on:
                    self.timeline.record(1, now, q + n + frames + self.fade)
            elif not self._dry and avail >= frames + self.fade:
                n = self._jump_n
                if n:
                    self._jump_n = 0
                    if n > 0:  # ahead: only as far as is processed
                        n = min(n, avail - frames - self.fade)
                if n:
                    self._skip(q, n, frames, out, self._jump_kind)
                    q += n
                else:
                    _ring_read(self._out, q, out)
                if self.timeline.on:
                    self.timeline.record(1, now, q + frames + self.fade)
            else:
                self._mix_dry(q, frames, avail, out)
            if outdata.shape[1] > 1:
                outdata[:, 1:] = outdata[:, :1]
        except Exception as exc:
            self._fail(exc)
            raise self.callback_abort from exc

    def _line(self, side: int, value: float) -> float:
        """(callback) Record when a sample came against its index on ``side``'s clock;
        -> the on-time line: the least of the last PHASE_WINDOW (late callbacks say
        nothing, and a step of the stream's timeline is in after PHASE_WINDOW callbacks)."""
        ring = self._on_time[side]
        n = self._on_time_n[side]
        ring[n % PHASE_WINDOW] = value
        self._on_time_n[side] = n + 1
        return float(ring.min())

    def _count_status(self, status: Any) -> None:
        st = self.stats
        xrun = False
        for name in ("input_underflow", "input_overflow", "output_underflow", "output_overflow"):
            if getattr(status, name):
                if self._armed:  # (start-up ones are only counted: the output is silence)
                    st.flags[name] = st.flags.get(name, 0) + 1
                xrun = True
        if xrun:
            if self._armed:
                st.xruns += 1
            else:
                st.xruns_startup += 1

    def _arm(self, start: int) -> None:
        """(input callback) start the pipeline at input index ``start``."""
        p = self._arm_prefill
        self.prefill = p
        self.delay = p + self.streamer.latency_samples
        self._worker_pos = start
        self._arm_start = start
        self._warm_until = 0
        self._out_written = start + p  # the ring is all zeros: [start, start + p) is silence
        self._armed = True

    def _skip(self, q: int, n: int, frames: int, out: np.ndarray, kind: int) -> None:
        """(output callback) jump ``n`` samples ahead (back if negative) in the processed
        output, crossfading from the old position into the new one; counted under ``kind``."""
        _ring_read(self._out, q, out)
        self._fade_into(q + n, frames, out)
        self._count_jump(n, kind)

    def _count_jump(self, n: int, kind: int) -> None:
        """(output callback) the timeline jumped ``n`` samples, for ``kind``."""
        self.out_map += n
        st = self.stats
        st.jumps[kind] += 1
        st.jumped[kind] += n

    def _fade_into(self, pos: int, frames: int, out: np.ndarray) -> None:
        """(output callback) ``out`` holds what was playing; crossfade from it into the
        processed output at ``pos`` over the first ``fade`` samples, then play that."""
        wet = self._wet_buf[:frames]
        _ring_read(self._out, pos, wet)
        f = min(self.fade, frames)
        head = out[:f]
        np.multiply(head, self._fade_down[:f], out=head)
        np.multiply(wet[:f], self._fade_up[:f], out=wet[:f])
        np.add(head, wet[:f], out=head)
        out[f:] = wet[f:]

    def _mix_dry(self, pos: int, frames: int, avail: int, out: np.ndarray) -> None:
        """(callback) the worker is behind: delayed dry input, crossfaded at the transitions."""
        st = self.stats
        fade = self.fade
        if frames > self._dry_buf.shape[0]:
            raise RuntimeError(f"callback of {frames} frames is larger than the rings")
        _ring_read(self._in, pos - self.delay, out)  # dry: always there
        if frames + fade - avail > st.late:
            st.late = frames + fade - avail
        if self._dry:
            if avail >= frames + fade:  # caught up: fade the processed signal back in
                self._fade_into(pos, frames, out)
                self._dry = False
            else:
                st.dry_samples += frames
            return
        # fall behind now: play what is processed, fading it into the dry signal at its end
        if not self.stop_event.is_set():  # (the worker stops first at shutdown)
            st.underruns += 1
        self._dry = True
        k = max(0, min(avail, frames))
        if k:
            wet = self._wet_buf[:k]
            _ring_read(self._out, pos, wet)
            f = min(fade, k)
            dry_tail = self._dry_buf[:f]
            dry_tail[:] = out[k - f : k]
            out[: k - f] = wet[: k - f]
            seg = out[k - f : k]
            np.multiply(wet[k - f :], self._fade_down[fade - f :], out=seg)
            np.multiply(dry_tail, self._fade_up[fade - f :], out=dry_tail)
            np.add(seg, dry_tail, out=seg)
        st.dry_samples += frames - k

    def _fail(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc
        self.stop_event.set()
        self._wake.set()

    # -- worker ---------------------------------------------------------------------------

    def open_recordings(self, record_input: str | None, record_output: str | None) -> None:
        import soundfile as sf

        for path, attr in ((record_input, "_rec_in"), (record_output, "_rec_out")):
            if path:
                try:
                    f = sf.SoundFile(
                        path, "w", samplerate=self.cfg.samplerate, channels=1, subtype="FLOAT"
                    )
                except (sf.LibsndfileError, OSError, RuntimeError) as exc:
                    raise UserError(f"cannot write {path}: {exc}") from exc
                setattr(self, attr, f)
                self._recorders.append(f)

    def close_recordings(self) -> None:
        for f in self._recorders:
            f.close()
        self._recorders.clear()

    def worker(self) -> None:
        """Thread body: process every complete chunk of input until stopped."""
        try:
            if self.use_realtime:
                self.realtime["worker"] = _try_realtime(WORKER_RT_PRIORITY)
            while not self.stop_event.is_set():
                self._wake.wait(0.1)
                self._wake.clear()
                if self._armed:
                    self.process_available()
        except BaseException as exc:
            log.debug("worker failed:\n%s", traceback.format_exc())
            self._fail(exc)

    def process_available(self) -> int:
        """(worker) Run the engine on every complete chunk of input; return how many."""
        n = self.chunk
        x, y, tmp, tmp2 = self._x, self._y, self._tmp, self._tmp2
        size = self._in.shape[0]
        st = self.stats
        feed = self.streamer.feed
        thread_time = time.thread_time
        done = 0
        while self._in_written - self._worker_pos >= n and not self.stop_event.is_set():
            k = self._worker_pos
            if self._in_written - k > size // 2:  # hopelessly behind: skip ahead
                self._resync()
                continue
            _ring_read(self._in, k, x)
            t0 = thread_time()
            feed(x, out=y)
            _soft_clip(y, tmp, tmp2)
            st.worker_cpu += thread_time() - t0
            o = k + self.prefill
            if o < self._warm_until:  # engine restarting after a resync: dry
                _ring_read(self._in, o - self.delay, y)
            _ring_write(self._out, o, y)
            self._out_written = o + n
            self._worker_pos = k + n
            if self.timeline.on:
                self.timeline.record(0, self._clock(), o + n)
            done += 1
            if self._rec_in is not None:
                self._rec_in.write(x)
            if self._rec_out is not None:
                self._rec_out.write(y)
        return done

    def _resync(self) -> None:
        """(worker) more than half the ring behind: jump to the newest input, restart the engine."""
        n = self.chunk
        k = self._in_written - n
        log.warning(
            "worker %.2f s behind: skipping ahead", (k - self._worker_pos) / self.cfg.samplerate
        )
        self.streamer.reset()
        self._worker_pos = k
        self._warm_until = k + self.prefill + self.streamer.latency_samples

    # -- control --------------------------------------------------------------------------

    def plan_prefill(self) -> tuple[int, float, float]:
        """From the pre-roll: (prefill samples, device input latency s, output latency s);
        see :func:`.live_timing.plan_prefill`."""
        cfg = self.cfg
        return plan_prefill(self.preroll, cfg.blocksize, self.chunk, self.fade, self.margin)

    def plan_trim(self) -> int:
        """Samples of the prefill the recorded timeline shows were not needed beyond the
        margin; see :meth:`.live_timing.Timeline.plan_trim`."""
        return self.timeline.plan_trim(self.cfg.margin_ms / 1000.0, self.prefill)

    def jump(self, n: int, kind: int) -> None:
        """Ask the output callback to jump its timeline ``n`` samples (+: ahead, less latency;
        ahead only as far as is processed) with a crossfade, once; ``kind`` in JUMP_KINDS."""
        self._jump_kind = kind
        self._jump_n = n

    @property
    def jump_pending(self) -> bool:
        return self._jump_n != 0

    def steer(self, control: TimingControl) -> tuple[int, int] | None:
        """(main thread) One tick of ``control``; make the jump it decides. -> (n, kind)."""
        if self.jump_pending:
            return None
        st = self.stats
        late, st.late = st.late, 0
        decision = control.tick(self.now(), st.underruns, late, st.jumped)
        if decision is not None:
            self.jump(*decision)
        return decision

    @property
    def buffer_samples(self) -> int:
        """Output buffering in effect: the prefill less the trim and shrinks, plus the grows."""
        jumped = self.stats.jumped
        return self.prefill - jumped[TRIM] - jumped[GROW] - jumped[SHRINK]

    def now(self) -> float:
        """The engine's clock (s): what the callbacks' and the worker's records are timed by."""
        return self._clock()

    def arm(self, prefill: int) -> None:
        """Ask the input callback to start the pipeline with ``prefill`` samples of buffering."""
        self._arm_prefill = max(1, prefill)

    @property
    def armed(self) -> bool:
        """True once the output side plays the pipeline (both callbacks armed)."""
        return self._armed and self.out_map is not None

    @property
    def audio_seconds(self) -> float:
        """Seconds of audio through the input stream since start (callback clock)."""
        return self._in_written / self.cfg.samplerate

    @property
    def processed_seconds(self) -> float:
        """Seconds of input the worker has processed since arming."""
        return (self._worker_pos - self._arm_start) / self.cfg.samplerate if self._armed else 0.0

    def rtf(self) -> float:
        """Worker CPU seconds per second of processed audio (0 before anything is processed)."""
        done = self.processed_seconds
        return self.stats.worker_cpu / done if done > 0 else 0.0
