"""Issue #11's cost figure: the engine's CPU time per second of 48 kHz audio next to RNNoise's.

Both systems run on the same 48 kHz audio in the same process, interleaved: every round times
each system once over the whole signal with ``time.process_time`` (CPU time of this process,
one thread everywhere), rotating the order; a system's ratio is the median over rounds of its
time divided by RNNoise's time in the same round, so the shared machine's drift cancels.

* RNNoise: ``pyrnnoise`` at its native 48 kHz, 480-sample frames (int16-scaled float32, as in
  ``peers.RNNoise``), no resampling: its cost per second of 48 kHz audio.
* rtdenoise: the ``Streamer`` at 48 kHz in and out (resampling to and from 8 kHz, STFT, ONNX
  Runtime, mask, overlap-add, full-band split), built and fed exactly as the CLI builds it from
  its own defaults (the argv below), so the figure follows the defaults:

  - ``file``: ``rtdenoise file --latency-mode standard in out`` (the standard model, file
    mode's frames per call, its ``--block-seconds`` blocks; explicit since the low-latency
    model became the default, so that the name keeps meaning what the results recorded);
  - ``file-low``: ``rtdenoise file --latency-mode low`` (the low-latency model, the default);
  - ``live``: ``rtdenoise live`` (the low-latency model, one frame per model call, one STFT hop
    of device samples per ``feed``, as live mode's worker calls it);
  - ``live-standard``: ``rtdenoise live --latency-mode standard``;
  - with ``--model PATH``, also ``file-model`` and ``live-model``: the same with ``--model PATH``.

Audio: the noisy half of ``../shared/data/wideband16k`` (real content above 4 kHz), resampled to
48 kHz once, before timing; synthetic noise if the set is missing.

``--stages`` adds a breakdown of one pass of each rtdenoise setup by stage (resampling, band
split, STFT, model, mask, overlap-add, the rest), timed with per-call CPU timers; the timers
themselves cost ~0.5 us per call, so the breakdown is approximate for small calls. Usage::

    python -m benchmarks.cost48k [--seconds 20] [--rounds 7] [--stages] [--json PATH] [--model M]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import ctypes  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
WIDEBAND = ROOT.parent / "shared" / "data" / "wideband16k" / "noisy"
RATE = 48000

#: rtdenoise setups: name -> the CLI arguments whose defaults it runs
SETUPS: dict[str, list[str]] = {
    "file": ["file", "--latency-mode", "standard", "in.wav", "out.wav"],
    "file-low": ["file", "--latency-mode", "low", "in.wav", "out.wav"],
    "live": ["live"],
    "live-standard": ["live", "--latency-mode", "standard"],
}


def load_audio(seconds: float) -> np.ndarray:
    """float32 ``[n]`` at 48 kHz: wideband16k's noisy files concatenated, or noise."""
    import soundfile as sf
    import soxr

    n16 = int(seconds * 16000)
    parts, total = [], 0
    for f in sorted(WIDEBAND.glob("*.flac")) if WIDEBAND.is_dir() else []:
        x, sr = sf.read(f, dtype="float32", always_2d=True)
        x = x[:, 0] if sr == 16000 else soxr.resample(x[:, 0], sr, 16000)
        parts.append(x)
        total += len(x)
        if total >= n16:
            break
    if total < n16:
        x16 = 0.05 * np.random.default_rng(0).standard_normal(n16)
    else:
        x16 = np.concatenate(parts)[:n16]
    return np.ascontiguousarray(soxr.resample(x16, 16000, RATE, quality="HQ"), np.float32)


class RNNoise48:
    """RNNoise frame by frame at 48 kHz (480 samples, int16-scaled float32)."""

    name = "rnnoise"

    def __init__(self) -> None:
        from pyrnnoise import rnnoise as R

        self._R = R
        self._in = np.zeros(480, np.float32)
        self._out = np.zeros(480, np.float32)
        self._pin = self._in.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        self._pout = self._out.ctypes.data_as(ctypes.POINTER(ctypes.c_float))

    def run(self, x: np.ndarray, y: np.ndarray) -> None:
        R, bi, bo, pi, po = self._R, self._in, self._out, self._pin, self._pout
        process = R.lib.rnnoise_process_frame
        st = R.create()
        try:
            for a in range(0, len(x) - 479, 480):
                np.multiply(x[a : a + 480], 32768.0, out=bi)
                process(st, po, pi)
                np.multiply(bo, 1.0 / 32768.0, out=y[a : a + 480])
        finally:
            R.destroy(st)


class Engine:
    """rtdenoise's streamer at 48 kHz as the CLI builds it from ``argv``'s defaults."""

    def __init__(self, name: str, argv: list[str]) -> None:
        from rtdenoise.cli import build_parser
        from rtdenoise.file_mode import processor_from_args, streamer_options
        from rtdenoise.live_engine import chunk_frames
        from rtdenoise.streamer import Streamer

        args = build_parser(argv[0]).parse_args(argv)
        self.name = name
        processor = processor_from_args(args)
        self.streamer = Streamer(processor, RATE, 1, **streamer_options(args, processor))
        if argv[0] == "live":
            self.chunk = chunk_frames(self.streamer)
        else:
            self.chunk = max(1, round(args.block_seconds * RATE))
        self.block_frames = self.streamer.block_frames

    def run(self, x: np.ndarray, y: np.ndarray) -> None:
        s, n = self.streamer, self.chunk
        s.reset()
        feed = s.feed
        for a in range(0, len(x), n):
            feed(x[a : a + n], out=y[a : a + n])


def cpu_time(system: Any, x: np.ndarray, y: np.ndarray) -> float:
    t0 = time.process_time()
    system.run(x, y)
    return time.process_time() - t0


def measure(systems: list[Any], x: np.ndarray, rounds: int) -> dict[str, list[float]]:
    """CPU seconds per system and round; round r starts at system r (rotating order)."""
    y = np.empty_like(x)
    for s in systems:  # warm-up: JIT compilation, first model calls
        s.run(x[: RATE // 2], y[: RATE // 2])
    times: dict[str, list[float]] = {s.name: [] for s in systems}
    for r in range(rounds):
        order = systems[r % len(systems) :] + systems[: r % len(systems)]
        for s in order:
            times[s.name].append(cpu_time(s, x, y))
    return times


# ------------------------------------------------------------------------------ stage breakdown


def _timed(acc: dict[str, float], key: str, fn: Callable) -> Callable:
    clock = time.process_time

    def wrapper(*a: Any, **k: Any) -> Any:
        t0 = clock()
        try:
            return fn(*a, **k)
        finally:
            acc[key] += clock() - t0

    wrapper.__wrapped__ = fn  # type: ignore[attr-defined]
    return wrapper


def stage_breakdown(engine: Engine, x: np.ndarray) -> dict[str, float]:
    """CPU ms per second of audio by stage for one pass (instance attributes shadow methods;
    removed afterwards). Nested stages are subtracted from their parents."""
    s = engine.streamer
    core = s._core
    proc = s.processor
    acc: dict[str, float] = {}
    patched: list[tuple[Any, str]] = []

    def wrap(obj: Any, attr: str, key: str) -> None:
        if obj is None or not hasattr(obj, attr):
            return
        acc.setdefault(key, 0.0)
        setattr(obj, attr, _timed(acc, key, getattr(obj, attr)))
        patched.append((obj, attr))

    band = s._band
    wrap(getattr(s, "_rs_in", None), "process", "resample 48k->8k")
    wrap(getattr(s, "_rs_out", None), "process", "resample 8k->48k")
    wrap(core.analyzer, "push", "stft analysis")
    wrap(core.analyzer, "pop", "stft analysis")
    if hasattr(proc, "process"):  # less the model's step inside it (timed on its own)
        mask_key, model_key = "mask (processor minus model)", "model (onnx step)"
        acc.setdefault(mask_key, 0.0)
        acc.setdefault(model_key, 0.0)
        process = proc.process

        def timed_process(*a: Any, **k: Any) -> Any:
            m0, t0 = acc[model_key], time.process_time()
            try:
                return process(*a, **k)
            finally:
                acc[mask_key] += time.process_time() - t0 - (acc[model_key] - m0)

        proc.process = timed_process
        patched.append((proc, "process"))
    wrap(getattr(proc, "backend", None), "step", "model (onnx step)")
    wrap(core.synth, "push", "overlap-add (istft)")
    if band is not None:
        wrap(band, "meter", "band split")
        wrap(band, "feed8", "band split")
        wrap(band, "mix", "band split")
        wrap(band.gain, "push", "band split")
        wrap(band._up, "process", "band split: up-resampler")
    if s._hops is not None:  # one-hop calls: two compiled calls around the model's step
        import rtdenoise.hop_path as hp

        for name, key in (
            ("_hop_in", "compiled hop: meter, resampler, analysis"),
            ("_hop_out", "compiled hop: mask, synthesis, resamplers, band split"),
        ):
            acc[key] = 0.0
            setattr(hp, name, _timed(acc, key, getattr(hp, name)))
            patched.append((hp, name))
    y = np.empty_like(x)
    t0 = time.process_time()
    try:
        engine.run(x, y)
    finally:
        for obj, attr in patched:
            if obj.__class__.__name__ == "module":
                setattr(obj, attr, getattr(obj, attr).__wrapped__)
            else:
                delattr(obj, attr)
    total = time.process_time() - t0
    if "band split: up-resampler" in acc:
        acc["band split"] -= acc["band split: up-resampler"]
    acc["rest (rings, python glue, timers)"] = total - sum(acc.values())
    dur = len(x) / RATE
    out = {k: 1000.0 * v / dur for k, v in acc.items()}
    out["total"] = 1000.0 * total / dur
    return out


# ------------------------------------------------------------------------------ command


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        return "?"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.cost48k", description=__doc__.split("\n")[0]
    )
    p.add_argument("--seconds", type=float, default=20.0, help="audio per timed pass")
    p.add_argument("--rounds", type=int, default=7, help="interleaved rounds")
    p.add_argument("--setups", nargs="+", default=list(SETUPS), choices=list(SETUPS))
    p.add_argument("--stages", action="store_true", help="also a per-stage breakdown")
    p.add_argument("--json", type=Path, help="write the results here")
    p.add_argument(
        "--model",
        type=Path,
        help="also time this exported model (ONNX) in file and live mode: setups "
        "'file-model' and 'live-model' (e.g. a candidate architecture before it ships)",
    )
    args = p.parse_args(argv)
    if args.model is not None:
        if not args.model.is_file():
            p.error(f"no such model: {args.model}")
        for mode, extra in (("file", ["in.wav", "out.wav"]), ("live", [])):
            SETUPS[f"{mode}-model"] = [mode, "--model", str(args.model), *extra]
            args.setups.append(f"{mode}-model")

    x = load_audio(args.seconds)
    dur = len(x) / RATE
    engines = [Engine(n, SETUPS[n]) for n in args.setups]
    systems: list[Any] = [RNNoise48(), *engines]
    load0 = os.getloadavg()
    times = measure(systems, x, args.rounds)
    load1 = os.getloadavg()
    ref = np.array(times["rnnoise"])
    rows: dict[str, dict] = {}
    for s in systems:
        t = np.array(times[s.name])
        r = t / ref
        rows[s.name] = {
            "cpu_ms_per_s": round(1000.0 * float(np.median(t)) / dur, 2),
            "cpu_ms_per_s_min": round(1000.0 * float(t.min()) / dur, 2),
            "ratio_to_rnnoise": round(float(np.median(r)), 3),
            "ratio_iqr": [round(float(np.percentile(r, q)), 3) for q in (25, 75)],
        }
        if isinstance(s, Engine):
            rows[s.name].update(
                argv=" ".join(SETUPS[s.name]),
                block_frames=s.block_frames,
                samples_per_feed=s.chunk,
                latency_ms=round(s.streamer.latency_ms, 1),
                full_band=s.streamer.full_band,
            )
    print(
        f"{dur:.0f} s of 48 kHz audio, {args.rounds} interleaved rounds, CPU time "
        f"(load {load0[0]:.1f} -> {load1[0]:.1f}), commit {_commit()}"
    )
    print(f"{'system':15s} {'K':>3s} {'feed':>6s} {'ms CPU/s':>9s} {'x RNNoise':>10s}  IQR")
    for name, row in rows.items():
        k = str(row.get("block_frames", "-"))
        feed = str(row.get("samples_per_feed", 480))
        lo, hi = row["ratio_iqr"]
        print(
            f"{name:15s} {k:>3s} {feed:>6s} {row['cpu_ms_per_s']:9.2f} "
            f"{row['ratio_to_rnnoise']:10.3f}  [{lo:.3f}, {hi:.3f}]"
        )
    result: dict[str, Any] = {
        "audio_s": dur,
        "rounds": args.rounds,
        "commit": _commit(),
        "load_avg": [list(load0), list(load1)],
        "cpu": _cpu_name(),
        "systems": rows,
    }
    if args.stages:
        result["stages"] = {}
        for e in engines:
            st = stage_breakdown(e, x)
            result["stages"][e.name] = {k: round(v, 2) for k, v in st.items()}
            print(f"\n{e.name}: CPU ms per second of audio by stage (one pass, timers included)")
            for k, v in st.items():
                print(f"  {k:36s} {v:7.2f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
