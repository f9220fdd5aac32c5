"""Denoise a live input device into an output device with low, steady latency.

  rtdenoise live --input mic --output speakers
  rtdenoise live -l                                  # list the devices

Devices: 'mic' / 'speakers' (the system defaults), an index, or part of a name (see -l).
At start the total latency is printed (algorithmic + output buffering + device buffers as the
stream measures them); every few seconds a status line (real-time factor, xruns) unless -q.
Ctrl-C or SIGTERM stops with a one-line summary.

How it works: an input and an output PortAudio stream whose callbacks only copy (input into a
ring; ring into the output) and count status flags; a worker thread runs the streaming engine
(resampling, STFT, model, overlap-add) on fixed-size chunks (one STFT hop at the device rate,
also the default callback size) and writes ahead into the output ring. For half a second the
output plays silence while the callbacks measure the device latencies and the largest bursts
of back-to-back callbacks; then the output ring is prefilled with those bursts + a short
crossfade + a margin, so the output callback finds processed audio whatever the phase between
the two streams' bursts. For the next 2 s the engine records when the worker made each chunk
and when the output callback asked for it; then it drops, with one crossfaded jump, the
buffering that every one of those reads could have done without beyond ``--margin-ms``: the
real phase is not the worst one, and while both streams run on one clock it stays in the
range it showed (0-12 ms less latency, measured). If a read comes too early later on, the
output steps back by what was missing + the margin (crossfaded, counted as an underrun). If
the worker falls behind with no trim left, the callback crossfades to the equally delayed dry
input and counts an underrun. The worker asks for SCHED_FIFO scheduling where it is permitted.

Latency, device input to device output: ``Streamer.latency_samples`` (STFT window + block +
resamplers) + the prefill less the trim + the device loop (mean over output callbacks of the
DAC time of a sample minus the ADC time of the input sample it was made from, from PortAudio's
timestamps).
"""

from __future__ import annotations

import argparse
import gc
import logging
import math
import os
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import devices
from .errors import UserError
from .file_mode import add_processing_arguments, processor_from_args
from .streamer import Streamer

log = logging.getLogger(__name__)

#: seconds of stream run before the pipeline is armed: device start-up glitches, burst sizing
PREROLL_S = 0.5
#: seconds between status lines
STATUS_EVERY_S = 5.0
#: output samples above this magnitude are soft-clipped (tanh) towards 1.0
SOFT_KNEE = 0.9
#: crossfade between processed and dry output when the worker falls behind or catches up
FADE_S = 0.001
#: callbacks closer together than this belong to one burst (sizing the output prefill)
BURST_GAP_S = 0.001
#: SCHED_FIFO priority of the worker, when the system allows it (root, limits.conf rtprio),
#: below PulseAudio/PipeWire's usual 5..20. The callback thread is PortAudio's and keeps the
#: scheduling PortAudio gives it: raised above the sound server's normal-priority client
#: threads (ALSA pulse plugin) it can busy-wait on them and starve them (seen: 100% CPU, xruns).
WORKER_RT_PRIORITY = 3
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
#: a stream that delivers nothing for this long (and at least 5 device latencies) has stalled
STALL_S = 2.0


# --------------------------------------------------------------------------- CLI


class _ListDevices(argparse.Action):
    """``-l``: print the devices and exit, before any other argument is looked at."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> None:
        try:
            print(devices.list_devices())
        except UserError as exc:
            parser.exit(exc.exit_code, f"rtdenoise: error: {exc}\n")
        parser.exit(0)


def _one_latency(text: str) -> str | float:
    if text in ("low", "high"):
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected 'low', 'high' or seconds, got {text!r}"
        ) from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"latency must be > 0 seconds, got {text}")
    return value


def _latency_arg(text: str) -> str | float | tuple[str | float, str | float]:
    """'low' | 'high' | seconds, or IN,OUT for the input and output side separately."""
    parts = text.split(",")
    if len(parts) == 2:
        return _one_latency(parts[0].strip()), _one_latency(parts[1].strip())
    return _one_latency(text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-l", "--list-devices", action=_ListDevices, help="list the audio devices and exit"
    )
    dev = parser.add_argument_group("devices")
    dev.add_argument(
        "-i",
        "--input",
        default="mic",
        metavar="DEV",
        help="input device: 'mic' (system default), an index or part of a name (default: mic)",
    )
    dev.add_argument(
        "-o",
        "--output",
        default="speakers",
        metavar="DEV",
        help="output device: 'speakers' (system default), an index or part of a name "
        "(default: speakers)",
    )
    dev.add_argument(
        "-r",
        "--samplerate",
        type=float,
        metavar="HZ",
        help="device sample rate (default: the input device's default rate)",
    )
    dev.add_argument(
        "-b",
        "--blocksize",
        type=int,
        metavar="N",
        help="frames per audio callback (default: one STFT hop at the device rate; "
        "0 lets PortAudio vary it)",
    )
    dev.add_argument(
        "--latency",
        type=_latency_arg,
        # 15 ms each way. A 5 ms input request starts ~8 ms lower (the sound server delivers
        # ~8 ms input bursts instead of ~16 ms, and the output buffer covers one burst), but
        # under PulseAudio the input then arrives later and later (~100 ppm: 15 ms in 150 s,
        # 65 ms in 10 min, measured with clicks), so the latency does not stay put. A 10 ms
        # output request measured 102 ms end to end, but ALSA's pulse plugin underran and the
        # output timeline lost 76 ms in 10 min (3274 drift slips); 12.5 ms gets the same
        # device buffer as 15.
        default=0.015,
        metavar="S",
        help="PortAudio suggested latency: 'low', 'high' or seconds, or IN,OUT for each side "
        "(default: 0.015; 'low' is often too small for a sound server; 0.005,0.015 starts ~8 ms "
        "lower but drifts under PulseAudio; on a busy machine use 0.05 with --margin-ms 10)",
    )
    dev.add_argument(
        "--margin-ms",
        type=float,
        default=4.0,
        metavar="MS",
        help="how long before the output callback asks for it processed audio must be ready "
        "(worker jitter); the output buffer is sized for the worst phase of the two streams, "
        "then trimmed after 2 s to keep this much (default: 4)",
    )
    add_processing_arguments(parser.add_argument_group("processing"))
    # one frame per model call: 11.6 ms less latency than the file default of 4, for ~1.5x the
    # model's CPU (RTF ~0.07 live, measured); the low-latency model unless --model is given
    parser.set_defaults(block_frames=1, default_latency_mode="low")
    run_ = parser.add_argument_group("run")
    run_.add_argument(
        "-d", "--duration", type=float, metavar="S", help="stop after S seconds of audio"
    )
    run_.add_argument(
        "--record-input", metavar="WAV", help="also write the input to this WAV (debugging)"
    )
    run_.add_argument(
        "--record-output",
        metavar="WAV",
        help="also write the processed output to this WAV (debugging; as the worker made it, "
        "before any dry fallback in the callback)",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    parser.add_argument("-q", "--quiet", action="store_true", help="no periodic status lines")


# --------------------------------------------------------------------------- engine


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
        self.loop_sum = 0.0  # sum over output callbacks of (DAC time - ADC time of that input)
        self.loop_n = 0
        self.loop_ema = 0.0  # smoothed loop latency (s): moves if the two clocks drift
        self.slips = 0  # net one-sample slips of the output against the input (drift)
        self.untrims = 0  # times a late read took the start-up trim back (also underruns)


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
        self._margin = round(cfg.margin_ms * sr / 1000)
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
        self._out_pos = 0  # output callback: samples played
        self.out_map: int | None = None  # output callback: q = o + out_map once armed
        self._out_written = 0  # worker: processed output stored up to here
        self._worker_pos = 0  # worker: next input index to process
        self._arm_start = 0
        self._armed = False
        self._arm_prefill = 0  # main -> input callback: arm with this prefill
        self._dry = False  # output callback: currently playing the dry fallback
        self._loop_ref: float | None = None  # main -> output callback: loop latency to hold
        self._sample_s = 1.0 / sr
        self.prefill = 0
        self.delay = 0
        self._trim_request = 0  # main -> output callback: skip this many samples ahead
        #: samples of the prefill dropped again after start-up (the streams did not need them)
        self.trimmed = 0
        self._warm_until = 0  # worker: output below this index is dry (after a resync)
        # pre-roll measurements (callbacks, preallocated): [input, output] x callbacks
        self._pr_n = [0, 0]
        self._pr_t = np.zeros((2, 4096), np.float64)
        self._pr_frames = np.zeros((2, 4096), np.int64)
        self._pr_lat = np.zeros((2, 4096), np.float64)
        # start-up timeline for the trim (preallocated): [worker chunks, output reads] x
        # (time, output index): when processed output up to an index was there / was needed
        self._tl_on = False
        self._tl_n = [0, 0]
        self._tl_t = np.zeros((2, 4096), np.float64)
        self._tl_i = np.zeros((2, 4096), np.int64)
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
            if adc > 0.0:
                self._in_ref = (end, adc + frames / self.cfg.samplerate)
            if not self._armed:
                self._preroll(0, now, frames, t.currentTime - adc)
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
                    self._preroll(1, now, frames, t.outputBufferDacTime - t.currentTime)
                    return
                self.out_map = self._in_written - o  # newest input <-> this output sample
            q = o + self.out_map
            dac = t.outputBufferDacTime
            i_ref, a_ref = self._in_ref
            st = self.stats
            if dac > 0.0 and a_ref > 0.0:  # loop latency: DAC time of q - ADC time of input q
                loop = dac - (a_ref + (q - i_ref) * self._sample_s)
                st.loop_sum += loop
                st.loop_n += 1
                st.loop_ema += (loop - st.loop_ema) * LOOP_SMOOTHING if st.loop_n > 1 else loop
                ref = self._loop_ref
                if ref is not None:  # clock drift: slip one sample to hold the latency
                    if st.loop_ema - ref > DRIFT_LIMIT_S:  # output late: play a newer sample
                        self.out_map += 1
                        st.loop_ema -= self._sample_s
                        st.slips += 1
                    elif ref - st.loop_ema > DRIFT_LIMIT_S:  # output early: repeat one
                        self.out_map -= 1
                        st.loop_ema += self._sample_s
                        st.slips -= 1
            avail = self._out_written - q
            if not self._dry and avail >= frames + self.fade:
                trim = self._trim_request
                if trim:  # (once, after start-up) drop buffering the stream turned out not to need
                    self._trim_request = 0
                    if trim <= avail - frames - self.fade:
                        self._skip(q, trim, frames, out)
                    else:
                        _ring_read(self._out, q, out)
                else:
                    _ring_read(self._out, q, out)
                    if self._tl_on:
                        self._timeline(1, now, q + frames + self.fade)
            elif not self._dry and self.trimmed and avail + self.trimmed >= frames + self.fade:
                # late after the trim (the streams' phase moved: different clocks, load): give
                # back what was missing + the margin, with a crossfaded step instead of going dry
                back = min(self.trimmed, frames + self.fade - avail + self._margin)
                ref = self._loop_ref
                if ref is not None:
                    self._loop_ref = ref + back * self._sample_s
                self._skip(q, -back, frames, out)
                st.underruns += 1
                st.untrims += 1
            else:
                self._mix_dry(q, frames, avail, out)
            if outdata.shape[1] > 1:
                outdata[:, 1:] = outdata[:, :1]
        except Exception as exc:
            self._fail(exc)
            raise self.callback_abort from exc

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

    def _timeline(self, side: int, now: float, index: int) -> None:
        n = self._tl_n[side]
        if n < self._tl_t.shape[1]:
            self._tl_t[side, n] = now
            self._tl_i[side, n] = index
            self._tl_n[side] = n + 1

    def _preroll(self, side: int, now: float, frames: int, latency: float) -> None:
        n = self._pr_n[side]
        if n < self._pr_t.shape[1]:
            self._pr_t[side, n] = now
            self._pr_frames[side, n] = frames
            self._pr_lat[side, n] = latency
            self._pr_n[side] = n + 1

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

    def _skip(self, q: int, n: int, frames: int, out: np.ndarray) -> None:
        """(output callback) jump ``n`` samples ahead (back if negative) in the processed
        output, crossfading from the old position into the new one; the loop latency is
        measured afresh."""
        _ring_read(self._out, q, out)
        self._fade_into(q + n, frames, out)
        self.out_map += n
        self.trimmed += n
        st = self.stats
        st.loop_sum = 0.0
        st.loop_n = 0

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
            if self._tl_on:
                self._timeline(0, self._clock(), o + n)
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

    def _bursts(self, side: int) -> tuple[int, float]:
        """From the pre-roll of one direction: (largest burst in frames, mean latency s)."""
        n = min(self._pr_n[side], self._pr_t.shape[1])
        skip = n // 4  # the first callbacks come in a start-up rush
        t = self._pr_t[side, skip:n]
        frames = self._pr_frames[side, skip:n]
        burst = int(frames.max(initial=self.cfg.blocksize or self.chunk))
        run = 0
        for i in range(t.shape[0]):
            run = run + int(frames[i]) if i and t[i] - t[i - 1] < BURST_GAP_S else int(frames[i])
            burst = max(burst, run)
        lat = self._pr_lat[side, skip:n]
        lat = lat[lat > 0]
        return burst, float(lat.mean()) if len(lat) else 0.0

    def plan_prefill(self) -> tuple[int, float, float]:
        """From the pre-roll: (prefill samples, device input latency s, output latency s).

        prefill = the largest input burst + the largest output burst (back-to-back callbacks:
        the output side may ask for that much at once, just before the input side delivers
        what the worker needs for it) + crossfade length + margin, + up to one chunk of input
        the worker is still waiting to complete unless input callbacks are exactly one chunk
        (the default). Device latencies are the mean of PortAudio's callback timestamps
        (``currentTime - inputBufferAdcTime``, ``outputBufferDacTime - currentTime``).
        """
        burst_in, lat_in = self._bursts(0)
        burst_out, lat_out = self._bursts(1)
        margin = self._margin
        pending = 0 if self.cfg.blocksize == self.chunk else self.chunk - 1
        log.info(
            "prefill: bursts in %d + out %d + pending chunk %d + fade %d + margin %d samples",
            burst_in, burst_out, pending, self.fade, margin,
        )  # fmt: skip
        return burst_in + burst_out + pending + self.fade + margin, lat_in, lat_out

    def record_timeline(self, on: bool) -> None:
        """Start (clearing) or stop recording when processed output was made and needed."""
        if on:
            self._tl_n = [0, 0]
        self._tl_on = on

    def timeline_spare(self, n: int = 0) -> float:
        """From the recorded timeline: the least time (s) between processed output being made
        and an output callback reading it (+ the crossfade), had the output been ``n`` samples
        further ahead; -inf if a read would have come first, +inf if nothing was recorded."""
        nw, nr = self._tl_n
        made_t, made_i = self._tl_t[0, :nw], self._tl_i[0, :nw]
        read_t, need = self._tl_t[1, :nr], self._tl_i[1, :nr]
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

    def plan_trim(self) -> int:
        """Samples of output buffering to drop: the most that leaves every recorded output
        callback finding what it reads made at least ``margin_ms`` before (0 if none).

        The prefill assumes the worst phase between input and output bursts and no worker
        time. While both streams run on one clock the phase only wobbles within the range the
        timeline shows (see TRIM_WINDOW_S), and the timeline holds the worker's real times, so
        what it shows is spare is latency for nothing. Measured in time, not in spare samples:
        a callback that comes while the worker is half-way through a burst finds a chunk more
        or less depending on who wins the race.
        """
        margin = self.cfg.margin_ms / 1000.0
        if not margin <= self.timeline_spare(0) < math.inf:
            return 0
        lo, hi = 0, self.prefill  # timeline_spare falls as n grows: bisect
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.timeline_spare(mid) >= margin:
                lo = mid
            else:
                hi = mid - 1
        return lo

    def trim(self, n: int) -> None:
        """Ask the output callback to skip ``n`` samples ahead (with a crossfade), once."""
        self._trim_request = max(0, n)

    @property
    def trim_pending(self) -> bool:
        return self._trim_request > 0

    @property
    def buffer_samples(self) -> int:
        """Output buffering in effect: the prefill less what was trimmed after start-up."""
        return self.prefill - self.trimmed

    def hold_latency(self, loop: float) -> None:
        """Start drift compensation: hold the device loop latency at ``loop`` seconds (the
        value printed at start), also after an xrun has moved it."""
        if self.stats.loop_n:
            self.stats.loop_ema = loop  # track from the mean, not from one noisy callback
            self._loop_ref = loop

    def drift_seconds(self) -> float:
        """How far the output clock moved against the input since :meth:`hold_latency` (s):
        positive = the output ran slow (latency would have grown)."""
        if self._loop_ref is None:
            return 0.0
        st = self.stats
        return st.loop_ema + st.slips * self._sample_s - self._loop_ref

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

    def loop_latency(self) -> float:
        """Mean device loop latency in seconds (input ADC to output DAC of the same index,
        buffering not counted), from the callback timestamps; 0 if the host gives none."""
        st = self.stats
        return st.loop_sum / st.loop_n if st.loop_n else 0.0


# --------------------------------------------------------------------------- run


def _say(text: str) -> None:
    print(f"rtdenoise live: {text}", file=sys.stderr, flush=True)


def _status(engine: LiveEngine) -> str:
    st = engine.stats
    return (
        f"{engine.audio_seconds:.1f} s, RTF {engine.rtf():.3f}, xruns {st.xruns}, "
        f"underruns {st.underruns}"
    )


def _latency_text(engine: LiveEngine, loop: float, lat_in: float, lat_out: float) -> tuple:
    """(total latency ms, breakdown text); loop: device loop latency in seconds."""
    sr = engine.cfg.samplerate
    algo = 1000.0 * engine.streamer.latency_samples / sr
    buf = 1000.0 * engine.buffer_samples / sr
    # the trim moved the output timeline: the loop latency measured since then is shorter by
    # it; shown as device loop (what the devices add) + output buffer (what we keep)
    loop += engine.trimmed / sr
    total = algo + buf + 1000.0 * loop
    detail = (
        f"engine {algo:.1f} + output buffer {buf:.1f} + device loop {1000 * loop:.1f} "
        f"[in {1000 * lat_in:.1f} / out {1000 * lat_out:.1f}]"
    )
    return total, detail


def _warm_up(streamer: Streamer, chunk: int) -> None:
    """Run the engine once before the stream starts: JIT compilation and first model call."""
    x = np.zeros(chunk, np.float32)
    y = np.zeros(chunk, np.float32)
    for _ in range(max(4, -(-2 * streamer.latency_samples // chunk))):
        streamer.feed(x, out=y)
    streamer.reset()


def run(args: argparse.Namespace) -> int:
    """Open the devices, run until --duration, Ctrl-C or SIGTERM, print a summary."""
    sd = devices.import_sounddevice()
    in_dev = devices.resolve_device(args.input, "input")
    out_dev = devices.resolve_device(args.output, "output")
    rate = args.samplerate if args.samplerate is not None else in_dev.default_samplerate
    if not rate > 0 or int(rate) != rate:
        raise UserError(f"--samplerate must be a positive whole number of Hz, got {rate:g}")
    rate = int(rate)
    devices.check_settings(in_dev, out_dev, rate)
    if args.duration is not None and not args.duration > 0:
        raise UserError(f"--duration must be > 0 seconds, got {args.duration:g}")
    if args.blocksize is not None and args.blocksize < 0:
        raise UserError(f"--blocksize must be >= 0, got {args.blocksize}")

    processor = processor_from_args(args)
    what = (
        "passthrough"
        if args.passthrough
        else (
            "identity (no model)"
            if processor is None
            else f"{args.model or 'default model'} ({args.backend})"
        )
    )
    streamer = Streamer(processor, sample_rate=rate, channels=1)
    blocksize = chunk_frames(streamer) if args.blocksize is None else args.blocksize
    cfg = LiveConfig(rate, blocksize, args.latency, args.margin_ms)
    engine = LiveEngine(streamer, cfg)
    engine.callback_abort = sd.CallbackAbort
    engine.use_realtime = True
    _warm_up(streamer, engine.chunk)
    # A full collection walks every object (~100 k after importing numba and onnxruntime:
    # 40-80 ms measured) while holding the GIL, so a callback waiting for it misses the 20 ms
    # output deadline. Everything alive now lives as long as the run: freeze it out of the GC.
    gc.collect()
    gc.freeze()

    ended: list[bool] = []  # a stream finished by itself (device error, disconnect)
    streams = []
    for device, kind in ((in_dev, "input"), (out_dev, "output")):
        cls = sd.InputStream if kind == "input" else sd.OutputStream
        callback = engine.input_callback if kind == "input" else engine.output_callback
        try:
            streams.append(
                cls(
                    device=device.index,
                    samplerate=rate,
                    blocksize=blocksize,
                    latency=args.latency[0 if kind == "input" else 1]
                    if isinstance(args.latency, tuple)
                    else args.latency,
                    channels=1,
                    dtype="float32",
                    callback=callback,
                    finished_callback=lambda: _finished(ended, engine),
                )
            )
        except sd.PortAudioError as exc:
            for stream in streams:
                stream.close()
            raise devices.portaudio_user_error(exc, device, rate, kind) from exc
    in_stream, out_stream = streams
    engine.open_recordings(args.record_input, args.record_output)

    worker = threading.Thread(target=engine.worker, name="rtdenoise-worker", daemon=True)
    stopped_by: list[str] = []

    def on_signal(signum: int, frame: Any) -> None:
        stopped_by.append("Ctrl-C" if signum == signal.SIGINT else "SIGTERM")
        engine.stop_event.set()

    old_handlers = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    old_switch = sys.getswitchinterval()
    sys.setswitchinterval(0.0005)  # a callback waits at most this long for the GIL
    stall_s = max(STALL_S, 5 * (in_stream.latency + out_stream.latency))
    latency_ms = 0.0
    ended_early = False
    lat_in = lat_out = 0.0
    try:
        with out_stream, in_stream:
            # pre-roll: silence out, measure callback bursts and device latency, then arm
            _settle(engine, stall_s, PREROLL_S, None)
            if not engine.stop_event.is_set():
                prefill, lat_in, lat_out = engine.plan_prefill()
                if lat_in <= 0 or lat_out <= 0:  # host API without timestamps
                    lat_in, lat_out = in_stream.latency, out_stream.latency
                worker.start()
                engine.arm(prefill)
                while not engine.armed and not engine.stop_event.wait(0.01):
                    _check_stall(engine, stall_s)
                engine.record_timeline(True)
                _settle(engine, stall_s, TRIM_WINDOW_S, args.duration)
                engine.record_timeline(False)
                trim = engine.plan_trim()
                log.info("output buffer: trimming %d of %d samples", trim, engine.prefill)
                engine.trim(trim)
                while engine.trim_pending and not engine.stop_event.wait(0.01):
                    _check_stall(engine, stall_s)
                _settle(engine, stall_s, LOOP_SETTLE_S, args.duration)
                log.info("real-time scheduling (SCHED_FIFO) granted: %s", engine.realtime)
                loop = engine.loop_latency() or lat_in + lat_out
                latency_ms, detail = _latency_text(engine, loop, lat_in, lat_out)
                engine.hold_latency(loop)
                _say(
                    f"{in_dev.name} -> {out_dev.name}, {rate} Hz, block {blocksize or 'variable'}"
                    f", {what}; latency {latency_ms:.1f} ms ({detail})"
                )
            next_status = engine.audio_seconds + STATUS_EVERY_S
            untrim_said = False
            while not engine.stop_event.wait(0.05):
                _check_stall(engine, stall_s)
                now = engine.audio_seconds
                if args.duration is not None and now >= args.duration:
                    break
                if engine.stats.untrims and not untrim_said:
                    untrim_said = True
                    _say(
                        "the output came late for the trimmed buffer: buffering more "
                        "(sound devices on different clocks, or a busy machine?)"
                    )
                if now >= next_status:
                    next_status += STATUS_EVERY_S
                    if not args.quiet:
                        _say(_status(engine))
            ended_early = bool(ended) and engine.error is None and not stopped_by
    finally:
        engine.stop_event.set()
        engine._wake.set()
        if worker.is_alive():
            worker.join(timeout=5.0)
        engine.close_recordings()
        for sig, handler in old_handlers.items():
            signal.signal(sig, handler)
        sys.setswitchinterval(old_switch)

    if ended_early:
        raise UserError(
            f"the audio stream stopped unexpectedly after {engine.audio_seconds:.1f} s "
            "(device error or disconnect; try a larger --latency)",
            exit_code=1,
        )
    if engine.error is not None:
        exc = engine.error
        raise UserError(f"audio processing failed: {type(exc).__name__}: {exc}", exit_code=1)
    st = engine.stats
    if st.loop_n:
        latency_ms, _ = _latency_text(engine, engine.loop_latency(), lat_in, lat_out)
    flags = ", ".join(f"{k} {v}" for k, v in sorted(st.flags.items()))
    _say(
        f"stopped{' by ' + stopped_by[0] if stopped_by else ''} after {engine.audio_seconds:.1f} s"
        f", RTF {engine.rtf():.3f}, xruns {st.xruns} after start-up ({st.xruns_startup} during)"
        f", underruns {st.underruns} ({st.dry_samples / rate:.2f} s dry)"
        f", latency {latency_ms:.1f} ms, clock drift {1000 * engine.drift_seconds():+.1f} ms"
        f" ({abs(st.slips)} sample slips)" + (f" [{flags}]" if flags else "")
    )
    return 0


def _finished(ended: list[bool], engine: LiveEngine) -> None:
    """PortAudio's finished callback: the stream ended (by us, or by a device failure)."""
    ended.append(True)
    engine.stop_event.set()


def _settle(engine: LiveEngine, stall_s: float, seconds: float, end: float | None) -> None:
    """Let ``seconds`` of audio pass while the callbacks measure something (not past ``end``,
    the --duration)."""
    until = engine.audio_seconds + seconds
    if end is not None:
        until = min(until, end)
    while engine.audio_seconds < until and not engine.stop_event.wait(0.02):
        _check_stall(engine, stall_s)


def _check_stall(engine: LiveEngine, stall_s: float) -> None:
    if time.perf_counter() - min(engine.last_callback) > stall_s:
        raise UserError(
            f"the audio stream stopped delivering audio for {stall_s:.1f} s "
            "(try a larger --latency or --blocksize)",
            exit_code=1,
        )
