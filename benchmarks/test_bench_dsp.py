"""DSP cost of the streaming engine on one thread (pytest-benchmark).

* STFT analysis and synthesis per hop (31 samples at 8 kHz), batched as in file mode (64 hops
  per call) and as in live mode (10 ms = 80 samples per call);
* the whole engine with identity processing, 48 kHz in and out (resampling + STFT + iSTFT +
  rings), as CPU seconds per second of audio (RTF; target <= 0.005), for one hop per call (186
  samples, what live mode's worker feeds), 10 ms chunks and 4096-sample blocks (file mode). A
  lone 519-point FFT costs as much as four batched ones, so small calls cost more per second.

Timer: ``time.process_time`` (CPU time of this process, single-threaded here), so that a busy
shared machine inflates the figures less than wall-clock time would. Run::

    python -m pytest benchmarks/test_bench_dsp.py --benchmark-only -s
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import time  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from rtdenoise.stft import StftAnalyzer, StftConfig, StftSynthesizer  # noqa: E402
from rtdenoise.streamer import Streamer  # noqa: E402

CFG = StftConfig()
TARGET_RTF = 0.005
SECONDS = 2.0


def _noise(n: int, shape_tail: tuple[int, ...] = ()) -> np.ndarray:
    rng = np.random.default_rng(0)
    return (0.1 * rng.standard_normal((n,) + shape_tail)).astype(np.float32)


def _per_hop(benchmark, n_hops: int, what: str) -> None:
    us = benchmark.stats.stats.min / n_hops * 1e6
    benchmark.extra_info["us_per_hop"] = round(us, 3)
    print(f"\n{what}: {us:.2f} us per hop (min over rounds)")


@pytest.mark.benchmark(group="stft-per-hop", timer=time.process_time)
@pytest.mark.parametrize("chunk", [80, 64 * 31], ids=["live-10ms", "file-64hops"])
def test_stft_analysis(benchmark, chunk):
    x = _noise(int(CFG.sample_rate * SECONDS))[None]
    an = StftAnalyzer(CFG, 1, max_frames=64)

    def run():
        an.reset()
        for a in range(0, x.shape[1], chunk):
            an.push(x[:, a : a + chunk])
            if an.available:
                an.pop(an.available)

    benchmark.pedantic(run, rounds=5, warmup_rounds=1)
    _per_hop(benchmark, an.frames_out, f"STFT analysis, {chunk}-sample calls")


@pytest.mark.benchmark(group="stft-per-hop", timer=time.process_time)
@pytest.mark.parametrize("batch", [3, 64], ids=["live-3frames", "file-64frames"])
def test_stft_synthesis(benchmark, batch):
    n_frames = int(CFG.sample_rate * SECONDS) // CFG.hop
    rng = np.random.default_rng(1)
    z = (rng.standard_normal((1, n_frames, CFG.n_freqs)) * (1 + 1j)).astype(np.complex64)
    sy = StftSynthesizer(CFG, 1, max_frames=64)

    def run():
        sy.reset()
        for a in range(0, n_frames, batch):
            sy.push(z[:, a : a + batch])

    benchmark.pedantic(run, rounds=5, warmup_rounds=1)
    _per_hop(benchmark, n_frames, f"STFT synthesis (iFFT + exact OLA), {batch} frames per call")


@pytest.mark.benchmark(group="engine-48k", timer=time.process_time)
@pytest.mark.parametrize("chunk", [186, 480, 4096], ids=["live-1hop", "live-10ms", "file-4096"])
def test_engine_48k_identity_rtf(benchmark, chunk):
    sr = 48000
    x = _noise(int(sr * SECONDS))
    s = Streamer(sample_rate=sr)
    out = np.empty(chunk, np.float32)
    s.feed(x[: sr // 2])  # compile/warm everything outside the timed rounds

    def run():
        for a in range(0, len(x) - chunk + 1, chunk):
            s.feed(x[a : a + chunk], out=out)

    benchmark.pedantic(run, setup=s.reset, rounds=5, warmup_rounds=1)
    rtf = benchmark.stats.stats.min / SECONDS
    benchmark.extra_info["rtf"] = round(rtf, 5)
    benchmark.extra_info["latency_ms"] = round(s.latency_ms, 3)
    flag = "OK" if rtf <= TARGET_RTF else f"OVER target {TARGET_RTF}"
    print(
        f"\nengine 48 kHz identity, {chunk}-sample chunks: RTF {rtf:.5f} "
        f"({rtf * 1e3:.2f} ms CPU per second of audio) {flag}; latency {s.latency_ms:.2f} ms"
    )
    assert s.underflows == 0
