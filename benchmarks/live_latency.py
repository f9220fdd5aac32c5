"""Measured end-to-end latency of ``rtdenoise live`` through a real audio server.

    python -m benchmarks.live_latency                  # default settings (+ --passthrough)
    python -m benchmarks.live_latency -- --latency 0.2 # extra arguments for rtdenoise live

Starts a private PulseAudio server (``tests/audio_server.py``), then:

1. calibration: plays a click train into ``rtd_in`` and records ``rtd_in``'s monitor with one
   duplex stream: the measuring path's own latency ``L0``;
2. the same while ``rtdenoise live --input rtd_in --output rtd_out`` runs, recording ``rtd_out``:
   ``L1``. The program's latency, device input to device output, is ``L1 - L0`` (both paths
   contain exactly one play-into-a-sink and one record-from-a-monitor of the measuring stream);
3. prints it next to the latency the program printed at start and in its summary.

Clicks are band-limited (< 3 kHz, so they pass the 8 kHz engine) and irregularly spaced, so a
matched filter finds each one without ambiguity. Not a CI test: a script with a verdict.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy import signal

from tests.audio_server import SINK_RATE, AudioServer, LiveRun, playrec_command, say_if_missing

#: issue #12: the printed latency within this of the measured one...
TOLERANCE_MS = 5.0
#: ...and the measured one at the default settings on an idle machine at most this
TARGET_MS = 60.0


def click_train(sr: int, seconds: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A train of band-limited clicks -> (signal float32 [n], click sample positions)."""
    rng = np.random.default_rng(seed)
    taps = signal.firwin(129, 3000, fs=sr).astype(np.float32)
    click = 0.5 * taps / np.abs(taps).max()
    n = int(seconds * sr)
    x = np.zeros(n, np.float32)
    positions = []
    p = int(0.3 * sr)
    while p + len(click) < n - int(0.3 * sr):
        x[p : p + len(click)] += click
        positions.append(p)
        p += int(rng.uniform(0.35, 0.65) * sr)
    return x, np.array(positions)


def measure_lag(
    played: np.ndarray, rec: np.ndarray, sr: int, max_lag_s: float = 1.0
) -> tuple[float, float, np.ndarray]:
    """Per-click lag of ``rec`` behind ``played`` -> (median ms, spread ms (max-min), the lag
    of each click in ms, in order)."""
    n = len(played) + len(rec)
    corr = np.fft.irfft(np.fft.rfft(rec, n) * np.conj(np.fft.rfft(played, n)), n)
    max_lag = int(max_lag_s * sr)
    lag = int(np.argmax(corr[:max_lag]))
    # refine per click: matched filter around each click at the global lag
    taps = signal.firwin(129, 3000, fs=sr).astype(np.float32)
    mf = np.correlate(rec, taps, mode="valid")
    onsets = np.flatnonzero(np.diff((played != 0).astype(np.int8)) > 0) + 1
    lags = []
    w = int(0.02 * sr)
    for p in onsets:
        a, b = p + lag - w, p + lag + w
        if a < 0 or b > len(mf):
            continue
        lags.append(a + int(np.argmax(mf[a:b])) - p)
    lags_ms = 1000.0 * np.array(lags) / sr
    return float(np.median(lags_ms)), float(np.ptp(lags_ms)), lags_ms


def playrec(server: AudioServer, x: np.ndarray, work: Path, rec_device: str) -> np.ndarray:
    play, rec = work / "clicks.wav", work / f"rec_{rec_device}.wav"
    sf.write(play, x, SINK_RATE, subtype="FLOAT")
    cmd = playrec_command(play, rec, rec_device=rec_device, latency=0.1, lead=0.0, tail=0.5)
    timeout = 60 + 2 * len(x) / SINK_RATE
    subprocess.run(cmd, env=server.env, check=True, capture_output=True, timeout=timeout)
    y, _ = sf.read(rec, dtype="float32")
    return y[: len(x) + int(0.5 * SINK_RATE)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=8.0, help="length of the click train")
    parser.add_argument("--model", action="store_true", help="use the model, not --passthrough")
    parser.add_argument("live_args", nargs="*", help="extra arguments for rtdenoise live")
    args = parser.parse_args(argv)
    if say_if_missing():
        return 2
    x, _ = click_train(SINK_RATE, args.seconds)
    live_args = ["--input", "rtd_in", "--output", "rtd_out", *args.live_args]
    if not args.model:
        live_args.append("--passthrough")
    with tempfile.TemporaryDirectory(prefix="rtdlat") as tmp, AudioServer(Path(tmp)) as server:
        work = Path(tmp)
        rec0 = playrec(server, x, work, "rtd_in")
        l0, spread0, lags0 = measure_lag(x, rec0, SINK_RATE)
        live = LiveRun(server.env, live_args)
        try:
            printed = live.wait_started()
            rec1 = playrec(server, x, work, "rtd_out")
        finally:
            summary = live.stop()
        l1, spread1, lags1 = measure_lag(x, rec1, SINK_RATE)
    measured = l1 - l0
    start_line = next((line for line in live.lines if "latency" in line and "->" in line), "")
    print(f"live args: {' '.join(live_args)}")
    print(start_line)
    print(next((line for line in live.lines if "stopped" in line), ""))
    print(
        f"measuring path alone:   {l0:7.1f} ms (spread {spread0:.1f} ms over {len(lags0)} clicks)"
    )
    print(
        f"through rtdenoise live: {l1:7.1f} ms (spread {spread1:.1f} ms over {len(lags1)} clicks)"
    )
    print(f"measured end-to-end:    {measured:7.1f} ms")
    quarter = max(1, len(lags1) // 4)  # does the latency move during the run (drift)?
    first, last = np.median(lags1[:quarter]), np.median(lags1[-quarter:])
    print(
        f"  first / last quarter of the clicks: {first - l0:.1f} / {last - l0:.1f} ms "
        f"({last - first:+.1f} ms over {args.seconds:g} s)"
    )
    print(f"printed at start:       {printed:7.1f} ms (diff {printed - measured:+.1f} ms)")
    print(
        f"printed in summary:     {summary['latency_ms']:7.1f} ms "
        f"(diff {summary['latency_ms'] - measured:+.1f} ms); xruns {summary['xruns']:.0f} after "
        f"start-up, underruns {summary['underruns']:.0f}, RTF {summary['rtf']:.3f}"
    )
    ok = abs(printed - measured) <= TOLERANCE_MS and spread1 < 2.0
    print(f"verdict: {'PASS' if ok else 'FAIL'} (printed within {TOLERANCE_MS:.0f} ms of measured)")
    if not args.live_args:
        met = "met" if measured <= TARGET_MS else "NOT met"
        print(f"default settings: {measured:.1f} ms end to end, target <= {TARGET_MS:.0f} ms {met}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
