"""The Python API: ``denoise`` == ``rtdenoise file``, streaming == whole, no allocation, errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from numpy.testing import assert_allclose
from scipy.signal import resample_poly

import rtdenoise
from rtdenoise import cli
from tests.test_streamer import held_memory

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "examples" / "demo_noisy.wav"


@pytest.fixture(scope="module")
def demo() -> tuple[np.ndarray, int]:
    """The demo clip (8 kHz mono speech in noise) as int16 samples."""
    x, sr = sf.read(DEMO, dtype="int16")
    return x, sr


def stereo_44k(demo: tuple[np.ndarray, int], seconds: float = 2.5) -> np.ndarray:
    """2.5 s of the demo at 44.1 kHz, two channels (the second one 0.1 s later), float32."""
    x = demo[0][: int(seconds * 8000)] / 32768.0
    up = resample_poly(x, 441, 80)
    return np.stack([up, np.roll(up, 4410)], axis=1).astype(np.float32)


# --------------------------------------------------------------------------- equivalences


@pytest.mark.parametrize("case", ["demo_int16", "stereo_44k_knobs"])
def test_denoise_equals_the_file_command(
    tmp_path: Path, demo: tuple[np.ndarray, int], case: str
) -> None:
    if case == "demo_int16":
        x, sr, opts, flags = demo[0], demo[1], {}, []
    else:
        x, sr = stereo_44k(demo), 44100
        opts, flags = {"atten_lim_db": 6.0, "wet": 0.8}, ["--atten-lim-db", "6", "--wet", "0.8"]
    src, dst = tmp_path / "in.wav", tmp_path / "out.wav"
    sf.write(src, x, sr, subtype="PCM_16" if x.dtype == np.int16 else "FLOAT")
    assert cli.main(["file", "-q", "--subtype", "FLOAT", *flags, str(src), str(dst)]) == 0
    expected, _ = sf.read(dst, dtype="float32")
    y = rtdenoise.denoise(x, sr, **opts)
    assert y.shape == x.shape and y.dtype == np.float32
    assert_allclose(y, expected, atol=2e-6)
    # the same output at the model's own 4 frames per call (denoise() runs 16, as files do)
    k4 = rtdenoise.Denoiser(sr, x.shape[1] if x.ndim == 2 else 1, block_frames=4, **opts)
    assert_allclose(y, k4.denoise(x), atol=2e-6)
    assert np.abs(y - x / (32768.0 if x.dtype == np.int16 else 1.0)).max() > 0.01  # it denoised


@pytest.mark.parametrize(("sr", "channels", "seed"), [(8000, 1, 0), (16000, 2, 1), (44100, 1, 2)])
def test_streaming_in_random_chunks_equals_denoise(
    demo: tuple[np.ndarray, int], sr: int, channels: int, seed: int
) -> None:
    """Chunks of random size (0 included), through ``out=``: the output is the whole-signal
    result delayed by exactly ``latency_samples`` (zeros before it), and ``flush`` ends it."""
    rng = np.random.default_rng(seed)
    x8 = demo[0][:12000] / 32768.0
    x = resample_poly(x8, sr // 1000, 8) if sr != 8000 else x8
    if sr == 44100:
        x = resample_poly(x8, 441, 80)
    x = np.stack([np.roll(x, 97 * c) for c in range(channels)], 1).astype(np.float32)
    if channels == 1:
        x = x[:, 0]
    d = rtdenoise.Denoiser(sr, channels)
    pieces, a = [], 0
    while a < len(x):
        n = int(rng.choice([0, 1, 7, 31, 160, 441, 480, 1024, 2999]))
        chunk = x[a : a + n]
        out = np.full(chunk.shape, np.nan, np.float32)
        assert d.process(chunk, out=out) is out
        pieces.append(out)
        a += n
    pieces.append(d.flush())
    y = np.concatenate(pieces)
    lat = d.latency_samples
    assert not y[: lat - sr // 100].any()  # silence until the resampler's ~2 ms lead-in
    assert_allclose(y[lat:], rtdenoise.denoise(x, sr), atol=2e-6)
    d.reset()  # a new stream gives the same result again
    assert_allclose(d.denoise(x), y[lat:], atol=2e-6)


def test_process_in_place_and_sample_types(demo: tuple[np.ndarray, int]) -> None:
    x16 = demo[0][:8000]
    ref = rtdenoise.Denoiser(8000).process(x16.astype(np.float32) / 32768)
    for a in (x16, x16.astype(np.float64) / 32768, (x16.astype(np.int32) << 16)):
        assert_allclose(rtdenoise.Denoiser(8000).process(a), ref, atol=1e-7)
    buf = x16.astype(np.float32) / 32768
    d = rtdenoise.Denoiser(8000)
    assert d.process(buf, out=buf) is buf  # out may be the chunk itself
    assert_allclose(buf, ref, atol=1e-7)
    column = rtdenoise.denoise(x16[:, None], 8000)  # [n, 1] stays [n, 1]
    assert column.shape == (8000, 1) and column.dtype == np.float32


def test_process_with_out_allocates_nothing() -> None:
    """An audio callback's use: float32 chunk + out. 200 calls at 48 kHz (resampling, STFT,
    the ONNX model) keep nothing and never hold a chunk-sized (8 KB) temporary."""
    d = rtdenoise.Denoiser(48000, 2)
    chunk = (0.1 * np.random.default_rng(0).standard_normal((1024, 2))).astype(np.float32)
    out = np.empty_like(chunk)
    kept, peak = held_memory(lambda: d.process(chunk, out=out))
    # peak: the call's transient Python objects (views, ints; ~3.1 KB, and ~30 bytes more over
    # 400 calls than over 200), far from a chunk-sized temporary
    assert kept < 2048 and peak < 4096, (kept, peak)


def test_latency_and_repr() -> None:
    d = rtdenoise.Denoiser(8000)  # the low-latency model: 123 + 3 * 31
    assert d.latency_samples == 216 and d.latency_ms == pytest.approx(27.0)
    assert rtdenoise.Denoiser(8000, block_frames=1).latency_samples == 123
    assert "latency_samples=216" in repr(d)
    std = rtdenoise.Denoiser(8000, latency_mode="standard")  # 518 + 3 * 31
    assert std.latency_samples == 611 and std.latency_ms == pytest.approx(76.375)
    assert rtdenoise.denoise(np.zeros(0, np.float32), 8000).shape == (0,)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: rtdenoise.Denoiser(0), "sample_rate must be a positive integer"),
        (lambda: rtdenoise.Denoiser(44100.5), "sample_rate must be a positive integer"),
        (lambda: rtdenoise.Denoiser("48000"), "sample_rate must be a positive integer"),
        (lambda: rtdenoise.Denoiser(8000, channels=0), "channels must be a positive integer"),
        (lambda: rtdenoise.Denoiser(8000, atten_lim_db=-3), "atten_lim_db must be >= 0"),
        (lambda: rtdenoise.Denoiser(8000, wet=1.5), "wet must be between 0 and 1"),
        (
            lambda: rtdenoise.Denoiser(8000, pitch_postfilter=2),
            "pitch_postfilter must be between 0 and 1",
        ),
        (lambda: rtdenoise.Denoiser(8000, block_frames=17), "block_frames must be an integer"),
        (lambda: rtdenoise.Denoiser(8000, backend="tf"), "backend must be one of onnx"),
        (lambda: rtdenoise.Denoiser(8000, model="nope.onnx"), "model file not found: nope.onnx"),
        (lambda: rtdenoise.Denoiser(8000, latency_mode="fast"), "latency_mode must be 'low' or"),
        (
            lambda: rtdenoise.Denoiser(
                8000, latency_mode="low", model=ROOT / "rtdenoise/models/lowlat.onnx"
            ),
            "latency_mode picks a shipped model",
        ),
        (lambda: rtdenoise.Denoiser(8000).process(np.zeros((9, 2))), r"expected \[n, 1\]"),
        (lambda: rtdenoise.Denoiser(8000).process(np.zeros(9, np.uint8)), "int16 or int32"),
        (
            lambda: rtdenoise.Denoiser(8000).process(np.zeros(9, np.float32), np.zeros(9)),
            "out must be float32",
        ),
        (lambda: rtdenoise.Denoiser(8000).process(np.full(9, np.nan)), "NaN or infinite"),
        (lambda: rtdenoise.denoise(np.zeros((2, 8000)), 8000), r"pass audio\.T"),
        (lambda: rtdenoise.denoise(np.zeros((4, 4, 4)), 8000), r"must be \[n\] or \[n, 1\]"),
        (lambda: rtdenoise.denoise(np.array([0.0, np.inf]), 8000), "NaN or infinite"),
        (lambda: rtdenoise.denoise(np.zeros(9), 8000, channels=2), "channels come from"),
    ],
)
def test_bad_arguments_raise_value_error(call, match: str) -> None:
    with pytest.raises(ValueError, match=match) as exc:
        call()
    assert "\n" not in str(exc.value)


def test_a_model_that_does_not_load_is_a_value_error(tmp_path: Path) -> None:
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"not an onnx graph")
    with pytest.raises(ValueError, match="broken.onnx"):
        rtdenoise.Denoiser(8000, model=bad)


# --------------------------------------------------------------------------- packaging


def test_import_is_cheap_and_needs_no_torch() -> None:
    """``import rtdenoise`` loads nothing heavy; the API runs with torch made unimportable."""
    code = (
        "import sys\n"
        "class NoTorch:\n"  # any 'import torch' fails
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'torch':\n"
        "            raise ImportError('torch is not installed')\n"
        "sys.meta_path.insert(0, NoTorch())\n"
        "import rtdenoise\n"
        "heavy = [m for m in ('numpy', 'onnxruntime', 'soundfile', 'rtdenoise.api') "
        "if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "import numpy as np\n"
        "y = rtdenoise.denoise(np.zeros((4000, 2), np.float32), 16000)\n"
        "assert y.shape == (4000, 2) and not y.any() and 'torch' not in sys.modules\n"
        "print('ok')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr


def test_denoise_runs_files_block_size_streams_keep_the_models() -> None:
    """``denoise()`` runs the model on 16 frames per call like ``rtdenoise file`` (about half
    the CPU of 4; the output is the same, checked against the file command above), while a
    ``Denoiser`` stream keeps the model's 4 (its latency counts)."""
    from rtdenoise.file_mode import FILE_BLOCK_FRAMES

    whole = rtdenoise.Denoiser(8000, _whole_signals=True)
    stream = rtdenoise.Denoiser(8000)
    assert whole._streamer.processor.block_frames == FILE_BLOCK_FRAMES == 16
    assert stream._streamer.processor.block_frames == 4
    assert whole.latency_samples > stream.latency_samples
