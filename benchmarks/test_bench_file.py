"""`rtdenoise file --passthrough` on a 10-minute 48 kHz file: target >= 200x real time.

Run: ``python -m pytest benchmarks/test_bench_file.py --benchmark-only``. Times the CLI in
process (parser, file I/O, 1 s blocks through the Streamer: 48 -> 8 kHz, STFT, overlap-add,
8 -> 48 kHz), after one warm-up run so numba compilation is not counted. The speed factor (audio
seconds / wall seconds, and / CPU seconds) is in the benchmark's ``extra_info``.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import soundfile as sf  # noqa: E402

from rtdenoise import cli  # noqa: E402

SR = 48000
MINUTES = 10
TARGET_X_REALTIME = 200.0


@pytest.fixture(scope="module")
def long_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10 minutes of 48 kHz mono PCM_16: speech-band tones plus noise, written minute by minute."""
    path = tmp_path_factory.mktemp("bench") / "long48k.wav"
    rng = np.random.default_rng(0)
    with sf.SoundFile(path, "w", SR, 1, "PCM_16") as f:
        t = np.arange(60 * SR) / SR
        for minute in range(MINUTES):
            x = 0.3 * np.sin(2 * np.pi * (300 + 50 * minute) * t) + 0.05 * rng.standard_normal(
                t.size
            )
            f.write(x.astype(np.float32))
    return path


def test_file_passthrough_10min_48k(benchmark, long_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.wav"
    argv = ["file", "-q", "--passthrough", str(long_file), str(out)]
    assert cli.main(argv) == 0  # warm-up: imports, numba, page cache
    cpu: list[float] = []

    def run() -> None:
        c0 = time.process_time()
        assert cli.main(argv) == 0
        cpu.append(time.process_time() - c0)

    benchmark.pedantic(run, rounds=3, iterations=1)
    seconds = MINUTES * 60
    wall = benchmark.stats.stats.min
    benchmark.extra_info["audio_seconds"] = seconds
    benchmark.extra_info["x_realtime_wall"] = round(seconds / wall, 1)
    benchmark.extra_info["x_realtime_cpu"] = round(seconds / min(cpu), 1)
    info = sf.info(out)
    assert (info.frames, info.samplerate, info.channels) == (seconds * SR, SR, 1)
    print(
        f"\nrtdenoise file --passthrough, {MINUTES} min at 48 kHz: {wall:.2f} s wall "
        f"({seconds / wall:.0f}x real time), {min(cpu):.2f} s CPU ({seconds / min(cpu):.0f}x); "
        f"target >= {TARGET_X_REALTIME:.0f}x"
    )
