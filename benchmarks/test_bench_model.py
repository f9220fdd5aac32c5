"""Model cost on one thread (pytest-benchmark).

* the ``rt`` step per backend (torch eager, TorchScript, ONNX Runtime) at K = 1, 4, 8, 16 frames
  per call, with the model's RTF ``step_time * 258.06 / K`` (258.06 frames per second of audio);
* the whole streaming engine with the ``rt`` model on ONNX Runtime, 8 kHz and 48 kHz in and
  out, 10 ms chunks, K = 4 and 8 (target at 48 kHz: RTF <= 0.05);
* the ``seed`` preset: one 260 x 260 window (offline), for the record.

The model is the shipped default, the ``rtdenoise/models/lowlat.onnx`` family (the same network
and cost as the standard ``default.onnx``), when present, else a random
``rt`` model of the default config (same architecture, same cost) exported to a temp dir.
Timer: ``time.process_time`` (CPU time). Run::

    python -m pytest benchmarks/test_bench_model.py --benchmark-only -s
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import time  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from rtdenoise.backends import DEFAULT_PATHS, load_backend  # noqa: E402
from rtdenoise.export import export_all  # noqa: E402
from rtdenoise.model import (  # noqa: E402
    FRAMES_PER_SECOND,
    DenoiserNet,
    ModelConfig,
    model_complexity,
    preset_config,
    save_checkpoint,
)

torch.set_num_threads(1)

PATH_KEYS = {"onnx": "onnx", "torchscript": "torchscript", "torch": "checkpoint"}


@pytest.fixture(scope="module")
def model_paths(tmp_path_factory) -> dict:
    if all(p.is_file() for p in DEFAULT_PATHS.values()):
        return {PATH_KEYS[k]: p for k, p in DEFAULT_PATHS.items()}
    d = tmp_path_factory.mktemp("bench_model")
    save_checkpoint(d / "rt.pt", DenoiserNet(ModelConfig()).eval())
    return export_all(d / "rt.pt", d / "out")


@pytest.fixture(scope="module", autouse=True)
def complexity_report():
    c = model_complexity(ModelConfig())
    print(
        f"\nrt model: {c['params']} parameters + {c['codebook_values']} EMA codebook values, "
        f"{c['macs_per_frame'] / 1e3:.0f} k MACs/frame, "
        f"{c['macs_per_second'] / 1e6:.0f} M MACs per second of audio"
    )


@pytest.mark.benchmark(group="model-step", timer=time.process_time)
@pytest.mark.parametrize("k", [1, 4, 8, 16])
@pytest.mark.parametrize("kind", ["onnx", "torchscript", "torch"])
def test_model_step(benchmark, model_paths, kind, k):
    backend = load_backend(kind, model_paths[PATH_KEYS[kind]], block_frames=k)
    backend.reset(1)
    rng = np.random.default_rng(0)
    spec = (rng.standard_normal((1, k, 260, 2)) * 0.05).astype(np.float32)
    calls = 50

    def run():
        for _ in range(calls):
            backend.step(spec)

    benchmark.pedantic(run, rounds=7, warmup_rounds=1)
    step = benchmark.stats.stats.min / calls
    rtf = step * FRAMES_PER_SECOND / k
    benchmark.extra_info.update(us_per_step=round(step * 1e6, 1), model_rtf=round(rtf, 4))
    print(f"\n{kind} K={k}: {step * 1e6:.0f} us per step, model RTF {rtf:.4f}")


@pytest.mark.benchmark(group="engine-with-model", timer=time.process_time)
@pytest.mark.parametrize("k", [4, 8])
@pytest.mark.parametrize("sr", [8000, 48000])
def test_engine_with_model(benchmark, model_paths, sr, k):
    from rtdenoise.processor import MaskProcessor
    from rtdenoise.streamer import Streamer

    seconds, chunk = 2.0, sr // 100  # 10 ms chunks
    proc = MaskProcessor(load_backend("onnx", model_paths["onnx"], block_frames=k))
    streamer = Streamer(processor=proc, sample_rate=sr, channels=1)
    x = (0.1 * np.random.default_rng(0).standard_normal(int(sr * seconds))).astype(np.float32)

    def run():
        streamer.reset()
        for a in range(0, x.shape[0], chunk):
            streamer.feed(x[a : a + chunk])

    benchmark.pedantic(run, rounds=3, warmup_rounds=1)
    rtf = benchmark.stats.stats.min / seconds
    lat_ms = streamer.latency_samples / sr * 1e3
    benchmark.extra_info.update(rtf=round(rtf, 4), latency_ms=round(lat_ms, 1))
    print(f"\nengine {sr} Hz, rt on ONNX Runtime, K={k}: RTF {rtf:.4f}, latency {lat_ms:.1f} ms")


@pytest.mark.benchmark(group="seed-window", timer=time.process_time)
def test_seed_window(benchmark):
    torch.manual_seed(0)
    model = DenoiserNet(preset_config("seed")).eval()
    spec = torch.randn(1, 260, 260, 2) * 0.05

    def run():
        with torch.no_grad():
            model(spec)

    benchmark.pedantic(run, rounds=2, warmup_rounds=1)
    s = benchmark.stats.stats.min
    benchmark.extra_info.update(seconds_per_window=round(s, 3))
    # windows overlap by half: two windows per second of audio
    print(f"\nseed preset: {s:.2f} s per 260 x 260 window (RTF {2 * s:.2f} on one core)")


@pytest.mark.benchmark(group="band-split-48k", timer=time.process_time)
@pytest.mark.parametrize("k", [1, 4], ids=["live-K1", "file-K4"])
def test_engine_48k_band_split_cost(benchmark, model_paths, k):
    """The engine at 48 kHz with the model, 10 ms chunks: full band (the default) against the
    narrowband output, timed in interleaved pairs so the shared machine's drift cancels
    (target: full band <= 1.2x the narrowband CPU)."""
    from rtdenoise.processor import MaskProcessor
    from rtdenoise.streamer import Streamer

    sr, seconds, chunk = 48000, 2.0, 480
    x = (0.1 * np.random.default_rng(0).standard_normal(int(sr * seconds))).astype(np.float32)
    out = np.empty(chunk, np.float32)

    def engine(full_band: bool) -> Streamer:
        proc = MaskProcessor(load_backend("onnx", model_paths["onnx"], block_frames=k))
        return Streamer(processor=proc, sample_rate=sr, full_band=full_band)

    def run(streamer: Streamer) -> None:
        streamer.reset()
        for a in range(0, x.shape[0] - chunk + 1, chunk):
            streamer.feed(x[a : a + chunk], out=out)

    def cpu(streamer: Streamer) -> float:
        t0 = time.process_time()
        run(streamer)
        return time.process_time() - t0

    full, narrow = engine(True), engine(False)
    run(full), run(narrow)  # compile / warm up
    ratios = []
    for r in range(7):
        if r % 2:
            t_n, t_f = cpu(narrow), cpu(full)
        else:
            t_f, t_n = cpu(full), cpu(narrow)
        ratios.append(t_f / t_n)
    benchmark.pedantic(run, args=(full,), rounds=3, warmup_rounds=1)
    ratio = float(np.median(ratios))
    rtf = benchmark.stats.stats.min / seconds
    benchmark.extra_info.update(rtf=round(rtf, 4), ratio_to_narrowband=round(ratio, 3))
    flag = "OK" if ratio <= 1.2 else "OVER the 1.2x target"
    print(
        f"\nengine 48 kHz, rt on ONNX Runtime, K={k}, full band: RTF {rtf:.4f}, "
        f"{ratio:.3f}x the narrowband CPU (median of 7 interleaved pairs, "
        f"[{min(ratios):.3f}, {max(ratios):.3f}]) {flag}"
    )
