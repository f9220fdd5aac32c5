"""A long ``rtdenoise live`` run through a real audio server: xruns, memory growth, CPU.

    python -m benchmarks.live_soak                      # 10 minutes, the default processor
    python -m benchmarks.live_soak --minutes 3 --passthrough
    python -m benchmarks.live_soak -- --latency 0.05    # extra arguments for rtdenoise live

Starts a private PulseAudio server (``tests/audio_server.py``), loops a noisy speech-like
signal into ``rtd_in`` and runs ``rtdenoise live --input rtd_in --output rtd_out`` for the whole
time. Reports:

* xruns and worker underruns after start-up (from the program's summary line);
* RSS of the live process after the first minute and at the end (the goal: within 5 MB);
* CPU seconds of the whole live process per second of audio between those two points, next to
  the program's own worker RTF and an offline RTF of the same engine (same processor, rate and
  chunk size, fed in-process here).

Not a CI test: a script with a verdict.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from tests.audio_server import (
    SINK_RATE,
    AudioServer,
    LiveRun,
    add_noise,
    say_if_missing,
    speech_like,
)

RSS_TOLERANCE_MB = 5.0
_TICK = os.sysconf("SC_CLK_TCK")


def proc_sample(pid: int) -> tuple[float, float]:
    """(RSS in MB, CPU seconds user + system) of a running process, from /proc."""
    with open(f"/proc/{pid}/status") as f:
        rss_kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime (fields 14, 15)
    return rss_kb / 1024.0, cpu


def offline_rtf(
    rate: int,
    passthrough: bool,
    seconds: float = 30.0,
    paced: bool = False,
    model: str | None = None,
    block_frames: int | None = None,
) -> float:
    """Engine CPU per second of audio, fed in-process the way the live worker feeds it
    (same processor, rate, chunk and frames per model call as the live run).

    ``paced``: sleep one chunk's duration between calls, as the live worker does (its caches
    go cold in between: on this machine that costs ~3-4x the CPU of a tight loop).
    """
    from rtdenoise.file_mode import build_processor
    from rtdenoise.stft import StftConfig
    from rtdenoise.streamer import Streamer

    processor = build_processor(passthrough=passthrough, model=model, block_frames=block_frames)
    streamer = Streamer(processor, sample_rate=rate, channels=1)
    chunk = math.ceil(StftConfig().hop * rate / streamer.stft.sample_rate)
    x = add_noise(speech_like(rate, seconds), rate, snr_db=5)
    y = np.zeros(chunk, np.float32)
    for a in range(0, rate, chunk):  # warm-up: JIT, first model call
        streamer.feed(x[a : a + chunk], out=y[: len(x[a : a + chunk])])
    streamer.reset()
    n = len(x) // chunk * chunk
    cpu = 0.0
    for a in range(0, n, chunk):
        t0 = time.thread_time()
        streamer.feed(x[a : a + chunk], out=y)
        cpu += time.thread_time() - t0
        if paced:
            time.sleep(chunk / rate)
    return cpu / (n / rate)


def live_block_frames(live_args: list[str]) -> int:
    """Frames per model call that ``rtdenoise live`` uses with these arguments."""
    from rtdenoise import live

    parser = argparse.ArgumentParser()
    live.add_arguments(parser)
    return parser.parse_known_args(live_args)[0].block_frames


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the run")
    parser.add_argument("--passthrough", action="store_true", help="identity processing")
    parser.add_argument("--model", help="model file (default: the shipped model)")
    parser.add_argument("live_args", nargs="*", help="extra arguments for rtdenoise live")
    args = parser.parse_args(argv)
    if say_if_missing():
        return 2
    seconds = args.minutes * 60.0
    if seconds < 90:
        parser.error("--minutes must be at least 1.5 (RSS is compared with the first minute)")
    live_args = ["--input", "rtd_in", "--output", "rtd_out", "--duration", f"{seconds:g}"]
    live_args += ["--passthrough"] if args.passthrough else []
    live_args += ["--model", args.model] if args.model else []
    live_args += args.live_args
    loop = add_noise(speech_like(SINK_RATE, 20.0, seed=5), SINK_RATE, snr_db=5, seed=6)

    with tempfile.TemporaryDirectory(prefix="rtdsoak") as tmp, AudioServer(Path(tmp)) as server:
        wav = Path(tmp) / "loop.wav"
        sf.write(wav, loop, SINK_RATE, subtype="FLOAT")
        player = subprocess.Popen(
            [sys.executable, "tests/audio_server.py", "play", str(wav), "--seconds",
             f"{seconds + 120:g}"],
            env=server.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        live = LiveRun(server.env, live_args)
        try:
            live.wait_started(timeout=120)
            t_start = time.monotonic()
            samples: list[tuple[float, float, float]] = []  # (t, rss MB, cpu s)
            while live.proc.poll() is None:
                t = time.monotonic() - t_start
                try:
                    rss, cpu = proc_sample(live.proc.pid)
                except (FileNotFoundError, ProcessLookupError, StopIteration):
                    break
                samples.append((t, rss, cpu))
                if len(samples) % 30 == 0:
                    print(f"  {t:6.0f} s  RSS {rss:6.1f} MB  CPU {cpu:7.1f} s", flush=True)
                time.sleep(2.0)
            summary = live.wait(timeout=60)
        finally:
            live.kill()
            player.terminate()
            player.wait(10)

    start_line = next((ln for ln in live.lines if " -> " in ln and "latency" in ln), "")
    rate = int(re.search(r", (\d+) Hz,", start_line).group(1))
    arr = np.array(samples)
    first = arr[np.searchsorted(arr[:, 0], 60.0)]
    last = arr[np.searchsorted(arr[:, 0], seconds - 5.0) - 1]  # before the shutdown
    cpu_per_s = (last[2] - first[2]) / (last[0] - first[0])
    rss_growth = last[1] - first[1]
    k = live_block_frames(live_args)
    ref = offline_rtf(rate, args.passthrough, model=args.model, block_frames=k)
    ref_paced = offline_rtf(
        rate, args.passthrough, seconds=15.0, paced=True, model=args.model, block_frames=k
    )
    print(f"live args: {' '.join(live_args)}")
    print(start_line)
    print(next((ln for ln in live.lines if "stopped" in ln), ""))
    print(
        f"run: {summary['seconds']:.0f} s of audio; xruns after start-up {summary['xruns']:.0f} "
        f"({summary['xruns_startup']:.0f} during start-up), worker underruns "
        f"{summary['underruns']:.0f} ({summary['dry_s']:.2f} s dry)"
    )
    print(
        f"RSS: {first[1]:.1f} MB at {first[0]:.0f} s, {last[1]:.1f} MB at {last[0]:.0f} s "
        f"(growth {rss_growth:+.2f} MB)"
    )
    print(
        f"CPU per second of audio: process {cpu_per_s:.3f}, worker (program's RTF) "
        f"{summary['rtf']:.3f}; offline engine here {ref:.3f} in a tight loop, "
        f"{ref_paced:.3f} paced at real time (worker / paced {summary['rtf'] / ref_paced:.2f})"
    )
    ok = summary["xruns"] == 0 and abs(rss_growth) <= RSS_TOLERANCE_MB
    print(f"verdict: {'PASS' if ok else 'FAIL'} (0 xruns after start-up, RSS within 5 MB)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
