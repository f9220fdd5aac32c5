"""Denoise a live input device into an output device with low, steady latency.

  rtdenoise live --input mic --output speakers
  rtdenoise live -l                                  # list the devices

Devices: 'mic' / 'speakers' (the system defaults), an index, or part of a name (see -l).
At start the total latency is printed (algorithmic + output buffering + device buffers as the
stream measures them); every few seconds a status line (latency now, real-time factor, xruns,
realigns, output buffer) unless -q.
Ctrl-C or SIGTERM stops with a one-line summary.

How it works: an input and an output PortAudio stream whose callbacks only copy (input into a
ring; ring into the output) and count status flags; a worker thread runs the streaming engine
(resampling, STFT, model, overlap-add) on fixed-size chunks (one STFT hop at the device rate,
also the default callback size) and writes ahead into the output ring (live_engine.py). For
half a second the output plays silence while the callbacks measure the device latencies and
the largest bursts of back-to-back callbacks; then the output ring is prefilled with those
bursts + a short crossfade + a margin, so the output callback finds processed audio whatever
the phase between the two streams' bursts. After 2 s the buffering that every output callback
could have done without beyond ``--margin-ms`` is dropped with one crossfaded jump (the trim).
From then on the latency is held where it was printed (live_buffer.py, live_timing.py), its
changes read from the phase between the two streams' sample counters: an xrun that moved a
device timeline is answered by one crossfaded realign; clock drift, estimated over long
windows with the xrun steps taken out, by one-sample slips; a worker that falls behind by a
crossfade to the equally delayed dry input, and if that repeats, by a larger output buffer
(one crossfaded jump back), which shrinks again once the output has been on time for 30 s; a
stream whose xruns repeat is reopened with a larger device buffer, and with the previous one
after a calm minute (live_streams.py), as a busy machine's larger start-up buffers are. Every
status line shows the latency now and the buffers; the summary counts each kind of change.

Latency, device input to device output: ``Streamer.latency_samples`` (STFT window + block +
resamplers) + the output buffer (prefill less the trim, plus any growth) + the device loop
(at start: the median over the output callbacks of the last 0.3 s of the DAC time of a sample
minus the ADC time of the input sample it was made from, from PortAudio's timestamps; then
moved by what the phase moved).
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import signal
import sys
import threading
import time
from typing import Any

import numpy as np

from . import devices, hop_path, network_frame, virtual_mic
from .backends import DEFAULT_LATENCY_MODE
from .errors import UserError
from .file_mode import add_processing_arguments, processor_from_args, streamer_options
from .live_buffer import TRIM_WINDOW_S
from .live_engine import AUDIO_NICE, LiveConfig, LiveEngine, chunk_frames, raise_priority
from .live_streams import BUSY_LATENCY_S, SHRINK_AFTER_S, LiveStreams, machine_busy
from .live_timing import (
    GROW,
    JUMP_KINDS,
    LOOP_SETTLE_S,
    REALIGN,
    SHRINK,
    SLIP,
    TRIM,
    TimingControl,
)
from .streamer import Streamer

log = logging.getLogger(__name__)

#: seconds of stream run before the pipeline is armed: device start-up glitches, burst sizing
PREROLL_S = 0.5
#: PortAudio suggested latency (s), input and output, unless --latency or a busy machine.
#: A 5 ms input request makes the server deliver every 3.9 ms instead of in bursts of 3-4
#: callbacks every 13 ms (15 ms): ~10 ms less output buffer, and its arrival did not drift
#: (0.1 ppm over 2 minutes at 48 kHz; the drift seen earlier was at 44.1 kHz). A 10 ms
#: output request (3 periods) saves ~4 ms more but leaves the callback ~4 ms of slack: 2
#: underflows in 2 minutes on an idle machine. Measured through PulseAudio at 48 kHz with
#: clicks: 54.4 ms end to end (0.015 both ways: 66.5; 0.005,0.010: 47.6)
DEFAULT_LATENCY = (0.005, 0.015)
#: seconds between status lines
STATUS_EVERY_S = 5.0
#: a warm-up longer than this that compiled the network-frame kernel (numba, the first run
#: after an install: ~5-15 s) is announced, since the streams open only after it
WARM_UP_NOTE_S = 3.0
#: a stream that delivers nothing for this long (and at least 5 device latencies) has stalled.
#: Under heavy load PulseAudio's ALSA plugin was seen to recover from an output underrun only
#: after ~2 s; the realign makes up for that, so only a longer silence ends the run.
STALL_S = 5.0


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


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0 seconds, got {text}")
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
        metavar="DEV",
        help="output device: 'speakers' (system default), an index or part of a name "
        "(default: speakers)",
    )
    dev.add_argument(
        "--virtual-mic",
        nargs="?",
        const=virtual_mic.DEFAULT_NAME,
        metavar="NAME",
        help="instead of an output device, denoise into a new virtual microphone that call "
        "apps list as 'NAME (denoised microphone)' (PulseAudio or PipeWire, via pactl; "
        f"removed again on exit; default NAME: {virtual_mic.DEFAULT_NAME})",
    )
    dev.add_argument(
        "-r",
        "--samplerate",
        type=float,
        metavar="HZ",
        help=f"device sample rate (default: {devices.PREFERRED_RATE} where both devices "
        "accept it, else the input device's default rate)",
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
        default=None,  # DEFAULT_LATENCY, or BUSY_LATENCY_S on a busy machine
        metavar="S",
        help="PortAudio suggested latency: 'low', 'high' or seconds, or IN,OUT for each side "
        "(default: 0.005,0.015, or 0.05 each way while the machine is busy, at start and "
        "after repeated xruns, going back once calm; 'low' is often too small for a sound "
        "server)",
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
    # one frame per model call: 11.6 ms less latency than the model's default of 4, for ~1.5x the
    # model's CPU (RTF ~0.07 live, measured); the model: the low-latency one, as everywhere
    parser.set_defaults(block_frames=1)
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
    parser.add_argument(
        "--status-every",
        type=_positive_seconds,
        default=STATUS_EVERY_S,
        metavar="S",
        help=f"seconds between status lines (default: {STATUS_EVERY_S:g})",
    )


# --------------------------------------------------------------------------- run


def _say(text: str) -> None:
    print(f"rtdenoise live: {text}", file=sys.stderr, flush=True)


def _status(
    engine: LiveEngine, control: TimingControl | None, streams: LiveStreams | None = None
) -> str:
    st = engine.stats
    devs = ""
    if streams is not None and streams.streams:
        lat_in, lat_out = streams.latencies
        devs = f", device buffers {1000 * lat_in:.1f}/{1000 * lat_out:.1f} ms"
    return (
        f"{engine.audio_seconds:.1f} s, latency {_latency_ms(engine, control):.1f} ms, "
        f"RTF {engine.rtf():.3f}, xruns {st.xruns}, underruns {st.underruns}, "
        f"realigns {st.jumps[REALIGN]}, buffer {_buffer_text(engine)}{devs}"
    )


def _buffer_text(engine: LiveEngine) -> str:
    """Output buffer now and its changes since the trim: '20.4 ms (grown 1x, shrunk 0x)'."""
    st = engine.stats
    ms = 1000.0 * engine.buffer_samples / engine.cfg.samplerate
    return f"{ms:.1f} ms (grown {st.jumps[GROW]}x, shrunk {st.jumps[SHRINK]}x)"


def _reopened_text(streams: LiveStreams) -> str:
    """', output device buffer grown 2x, shrunk 1x' for each stream that was reopened."""
    return "".join(
        f", {side} device buffer grown {streams.grown[k]}x, shrunk {streams.shrunk[k]}x"
        for k, side in enumerate(("input", "output"))
        if streams.grown[k]
    )


def _latency_text(engine: LiveEngine, loop: float, lat_in: float, lat_out: float) -> tuple:
    """(total latency ms, breakdown text); loop: device loop latency in seconds (the loop
    latency the timestamps measure, less what realigns and slips took off)."""
    sr = engine.cfg.samplerate
    algo = 1000.0 * engine.streamer.latency_samples / sr
    buf = 1000.0 * engine.buffer_samples / sr
    total = algo + buf + 1000.0 * loop
    detail = (
        f"engine {algo:.1f} + output buffer {buf:.1f} + device loop {1000 * loop:.1f} "
        f"[in {1000 * lat_in:.1f} / out {1000 * lat_out:.1f}]"
    )
    return total, detail


def _latency_ms(engine: LiveEngine, control: TimingControl | None) -> float:
    """Total latency now (ms): the device loop of the last half second."""
    loop = None
    if control is not None:
        loop = control.loop_now(engine.now(), engine.stats.jumped)
    if loop is None:  # no timestamps: the device latencies PortAudio reports
        loop = engine.device_latency
    return _latency_text(engine, loop, 0.0, 0.0)[0]


def _shipped_name(args: argparse.Namespace) -> str:
    """'low-latency model' or 'standard model': the shipped model --latency-mode picked."""
    mode = args.latency_mode or DEFAULT_LATENCY_MODE
    return "low-latency model" if mode == "low" else f"{mode} model"


def _warm_up(streamer: Streamer, chunk: int) -> None:
    """Run the engine once before the stream starts: JIT compilation and first model call."""
    x = np.zeros(chunk, np.float32)
    y = np.zeros(chunk, np.float32)
    for _ in range(max(4, -(-2 * streamer.latency_samples // chunk))):
        streamer.feed(x, out=y)
    for _ in range(256):  # until the compiled one-hop path has run (compiled) too
        calls = streamer.compiled_hop_calls
        if calls is None or calls >= 2:
            break
        streamer.feed(x, out=y)
    streamer.reset()


def run(args: argparse.Namespace) -> int:
    """Open the devices (or the virtual mic), run until --duration, Ctrl-C or SIGTERM, print a
    summary."""
    if args.virtual_mic is not None:
        if args.output is not None:
            raise UserError("give --output or --virtual-mic, not both")
        virtual_mic.check_name(args.virtual_mic)
        virtual_mic.check_server()
    sd = devices.import_sounddevice()
    in_dev = devices.resolve_device(args.input, "input")
    out_dev = None
    if args.virtual_mic is None:
        out_dev = devices.resolve_device(args.output or "speakers", "output")
    rate = args.samplerate
    if rate is None:  # the virtual mic's sink is made at whatever rate the input gets
        both = [(in_dev, "input")] + ([(out_dev, "output")] if out_dev is not None else [])
        rate = devices.default_rate(both)
    if not rate > 0 or int(rate) != rate:
        raise UserError(f"--samplerate must be a positive whole number of Hz, got {rate:g}")
    rate = int(rate)
    if out_dev is not None:
        return _run(args, sd, in_dev, out_dev, rate)
    with virtual_mic.VirtualMic(args.virtual_mic, rate) as mic:
        try:
            out_dev = devices.resolve_device(mic.output_device(), "output")
        except UserError as exc:
            raise UserError(
                f"--virtual-mic writes through PortAudio's ALSA device "
                f"'{virtual_mic.PULSE_DEVICE}' ({exc}; Debian/Ubuntu: apt-get install "
                "libasound2-plugins)"
            ) from None
        _say(f"virtual microphone: pick '{mic.name} (denoised microphone)' in the call app")
        return _run(args, sd, in_dev, out_dev, rate)


def _run(
    args: argparse.Namespace, sd: Any, in_dev: devices.Device, out_dev: devices.Device, rate: int
) -> int:
    """Run the engine between two resolved devices (see :func:`run`)."""
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
            else f"{args.model or _shipped_name(args)} ({args.backend})"
        )
    )
    streamer = Streamer(processor, sample_rate=rate, channels=1, **streamer_options(args))
    blocksize = chunk_frames(streamer) if args.blocksize is None else args.blocksize
    latency, calm = args.latency, None
    if latency is None:
        latency = DEFAULT_LATENCY
        busy, others = machine_busy()
        if busy:  # a callback would wait for a CPU each time: start with larger buffers
            latency, calm = (BUSY_LATENCY_S, BUSY_LATENCY_S), DEFAULT_LATENCY
            _say(
                f"busy machine ({others:.0f} other runnable tasks on {os.cpu_count()} CPUs): "
                f"{1000 * BUSY_LATENCY_S:.0f} ms device buffers until it has been calm for "
                f"{SHRINK_AFTER_S:.0f} s (--latency chooses)"
            )
    cfg = LiveConfig(rate, blocksize, latency, args.margin_ms)
    engine = LiveEngine(streamer, cfg)
    engine.callback_abort = sd.CallbackAbort
    engine.use_realtime = True
    t0 = time.perf_counter()
    _warm_up(streamer, engine.chunk)
    if time.perf_counter() - t0 > WARM_UP_NOTE_S and (
        network_frame.built_here() or hop_path.built_here()
    ):
        _say(
            f"built the engine's compiled kernels in {time.perf_counter() - t0:.0f} s "
            "(cached: later runs start at once)"
        )
    # A full collection walks every object (~100 k after importing numba and onnxruntime:
    # 40-80 ms measured) while holding the GIL, so a callback waiting for it misses the 20 ms
    # output deadline. Everything alive now lives as long as the run: freeze it out of the GC.
    gc.collect()
    gc.freeze()

    # before the streams exist: their threads (PortAudio's callbacks, the sound server client's
    # event loop) and the worker inherit it
    engine.realtime[f"audio threads nice {AUDIO_NICE}"] = raise_priority(AUDIO_NICE)
    streams = LiveStreams(sd, engine, (in_dev, out_dev), rate, blocksize, latency, calm)
    engine.open_recordings(args.record_input, args.record_output)

    worker = threading.Thread(target=engine.worker, name="rtdenoise-worker", daemon=True)
    stopped_by: list[str] = []

    def on_signal(signum: int, frame: Any) -> None:
        stopped_by.append("Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name)
        engine.stop_event.set()

    stop_signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    old_handlers = {sig: signal.signal(sig, on_signal) for sig in stop_signals}
    old_switch = sys.getswitchinterval()
    sys.setswitchinterval(0.0005)  # a callback waits at most this long for the GIL
    stall_s = max(STALL_S, 5 * sum(streams.latencies))
    latency_ms = 0.0
    control: TimingControl | None = None
    ended_early = False
    lat_in = lat_out = 0.0
    try:
        streams.start()
        started = _start_up(engine, streams, worker, args.duration, stall_s)
        if started is not None:
            control, lat_in, lat_out = started
            loop = engine.device_latency if control.ref is None else control.ref
            latency_ms, detail = _latency_text(engine, loop, lat_in, lat_out)
            _say(
                f"{in_dev.name} -> {out_dev.name}, {rate} Hz, block {blocksize or 'variable'}"
                f", {what}; latency {latency_ms:.1f} ms ({detail})"
            )
        _run_armed(engine, control, streams, args, stall_s)
        ended_early = bool(streams.ended) and engine.error is None and not stopped_by
    finally:
        streams.close()
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
    if control is not None:
        latency_ms = _latency_ms(engine, control)
    rate_ = control.drift.rate if control is not None else None
    drift = "unknown (too little time between steps)"
    if rate_ is not None:
        drift = f"{60000 * rate_:+.2f} ms/min"
    if control is not None and rate_ is not None and not control.drift.significant:
        drift += " (within the jitter)"
    flags = ", ".join(f"{k} {v}" for k, v in sorted(st.flags.items()))
    _say(
        f"stopped{' by ' + stopped_by[0] if stopped_by else ''} after {engine.audio_seconds:.1f} s"
        f", RTF {engine.rtf():.3f}, xruns {st.xruns} after start-up ({st.xruns_startup} during)"
        f", underruns {st.underruns} ({st.dry_samples / rate:.2f} s dry)"
        f", latency {latency_ms:.1f} ms, clock drift {drift}, realigns {st.jumps[REALIGN]}"
        f", slips {st.jumps[SLIP]}, buffer {_buffer_text(engine)}"
        + _reopened_text(streams)
        + (f" [{flags}]" if flags else "")
    )
    return 0


def _start_up(
    engine: LiveEngine,
    streams: LiveStreams,
    worker: threading.Thread,
    end: float | None,
    stall_s: float,
) -> tuple[TimingControl, float, float] | None:
    """Pre-roll (silence out while the callbacks measure bursts and device latencies), arm
    with the prefill, trim after TRIM_WINDOW_S, hold the latency. -> (the timing control,
    device input latency s, output latency s), or None if stopped before."""
    _settle(engine, stall_s, PREROLL_S, None)
    if engine.stop_event.is_set():
        return None
    prefill, lat_in, lat_out = engine.plan_prefill()
    if lat_in <= 0 or lat_out <= 0:  # host API without timestamps
        lat_in, lat_out = streams.latencies
    worker.start()
    engine.arm(prefill)
    while not engine.armed and not engine.stop_event.wait(0.01):
        _check_stall(engine, stall_s)
    engine.timeline.start()
    _settle(engine, stall_s, TRIM_WINDOW_S, end)
    trim = engine.plan_trim()
    log.info("output buffer: trimming %d of %d samples", trim, engine.prefill)
    if trim:
        engine.jump(trim, TRIM)
    while engine.jump_pending and not engine.stop_event.wait(0.01):
        _check_stall(engine, stall_s)
    _settle(engine, stall_s, LOOP_SETTLE_S, end)
    log.info("scheduling granted (worker: SCHED_FIFO): %s", engine.realtime)
    engine.device_latency = lat_in + lat_out
    control = TimingControl(
        engine.cfg.samplerate, engine.margin, engine.loop_log, engine.timeline, engine.phase_log
    )
    control.hold(engine.now(), engine.stats.underruns, expected=engine.device_latency)
    return control, lat_in, lat_out


def _run_armed(
    engine: LiveEngine,
    control: TimingControl | None,
    streams: LiveStreams,
    args: argparse.Namespace,
    stall_s: float,
) -> None:
    """Until --duration, a stop or a stall: tick the timing control, give a stream whose
    xruns repeat a larger buffer, print status lines."""
    next_status = engine.audio_seconds + args.status_every
    while not engine.stop_event.wait(0.05):
        _check_stall(engine, stall_s)
        now = engine.audio_seconds
        if args.duration is not None and now >= args.duration:
            break
        grown = streams.check_xruns()
        if grown is not None:
            _say(grown)
        decision = engine.steer(control) if control is not None else None
        if decision is not None:
            n, kind = decision
            log.info("output timeline: %s %+d samples", JUMP_KINDS[kind], n)
            if kind in (GROW, SHRINK) and not args.quiet:
                ms = 1000.0 * (engine.buffer_samples - n) / engine.cfg.samplerate
                why = "repeated underruns (busy?)" if kind == GROW else "on time for a while"
                _say(f"output buffer {JUMP_KINDS[kind]}s to {ms:.1f} ms: {why}")
        if now >= next_status:
            next_status += args.status_every
            if not args.quiet:
                _say(_status(engine, control, streams))


def _settle(engine: LiveEngine, stall_s: float, seconds: float, end: float | None) -> None:
    """Let ``seconds`` of audio pass while the callbacks measure something (not past ``end``,
    the --duration)."""
    until = engine.audio_seconds + seconds
    if end is not None:
        until = min(until, end)
    while engine.audio_seconds < until and not engine.stop_event.wait(0.02):
        _check_stall(engine, stall_s)


def _check_stall(engine: LiveEngine, stall_s: float) -> None:
    last = engine.last_callback
    if time.perf_counter() - min(last) > stall_s:
        side = "input" if last[0] <= last[1] else "output"
        raise UserError(
            f"the {side} stream stopped delivering audio for {stall_s:.1f} s "
            "(try a larger --latency or --blocksize)",
            exit_code=1,
        )
