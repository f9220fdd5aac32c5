"""`rtdenoise file`: end to end through the CLI, bad input, and block streaming == whole array."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose

from rtdenoise import cli, file_mode
from rtdenoise.file_mode import denoise_array
from rtdenoise.streamer import Streamer

RATES = [8000, 16000, 22050, 44100, 48000]
ROOT = Path(__file__).resolve().parent.parent


def speechband(n: int, sr: int, channels: int = 1, seed: int = 0, shift: float = 0.0) -> np.ndarray:
    """Tones inside the passband (200-3200 Hz) with 20 ms fades: float32 [n, C], peak < 0.8.

    Band-limited, so passthrough at any rate returns it up to the resamplers' ripple; ``shift``
    delays it by a (fractional) number of samples.
    """
    rng = np.random.default_rng(seed)
    t = (np.arange(n) - shift) / sr
    out = np.zeros((n, channels))
    for c in range(channels):
        for f in rng.uniform(200, 3200, 4):
            out[:, c] += 0.18 * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
    fade = 0.02
    if n > 2 * fade * sr:
        d = n / sr
        env = np.clip(np.minimum(t, d - 1 / sr - t) / fade, 0, 1)
        out *= (0.5 - 0.5 * np.cos(np.pi * env))[:, None]
    return out.astype(np.float32)


def residual_delay(sr: int, channels: int) -> float:
    """Sub-sample delay the engine leaves in its output at this rate (0 where it is whole)."""
    return float(getattr(Streamer(None, sr, channels), "residual_delay", 0.0))


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = cli.main(["file", "-q", *args])
    return code, capsys.readouterr().err


def run_sub(args: list[str], **kw: object) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "rtdenoise", "file", *args],
        capture_output=True,
        env=env,
        timeout=120,
        **kw,  # type: ignore[arg-type]
    )


def assert_one_error_line(code: int, err: str) -> None:
    assert code != 0
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("rtdenoise: error: "), err
    assert "Traceback" not in err


# --------------------------------------------------------------------------- passthrough


@pytest.mark.parametrize("channels", [1, 2])
def test_passthrough_8k_is_exact(tmp_path: Path, capsys: pytest.CaptureFixture[str], channels: int):
    x = np.random.default_rng(1).uniform(-0.9, 0.9, (5003, channels)).astype(np.float32)
    src, dst = tmp_path / "in.wav", tmp_path / "out.wav"
    sf.write(src, x, 8000, subtype="PCM_16")
    code, _ = run_cli(["--passthrough", str(src), str(dst)], capsys)
    assert code == 0
    a, _ = sf.read(src, dtype="float32", always_2d=True)
    b, sr = sf.read(dst, dtype="float32", always_2d=True)
    info = sf.info(dst)
    assert (sr, info.channels, info.format, info.subtype) == (8000, channels, "WAV", "PCM_16")
    assert b.shape == a.shape
    assert np.abs(a - b).max() <= 1e-4


@pytest.mark.parametrize("sr", RATES[1:])
@pytest.mark.parametrize("channels", [1, 2])
def test_passthrough_other_rates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], sr: int, channels: int
) -> None:
    x = speechband(sr // 3, sr, channels)
    src, dst = tmp_path / "in.wav", tmp_path / "out.wav"
    sf.write(src, x, sr, subtype="FLOAT")
    code, _ = run_cli(["--passthrough", "--block-seconds", "0.07", str(src), str(dst)], capsys)
    assert code == 0
    y, sr2 = sf.read(dst, dtype="float32", always_2d=True)
    assert sr2 == sr and y.shape == x.shape and sf.info(dst).subtype == "FLOAT"
    expect = speechband(sr // 3, sr, channels, shift=residual_delay(sr, channels))
    assert np.abs(y - expect).max() < 3e-3  # resampler ripple, both ways, on a 0.8-peak signal


@pytest.mark.parametrize(
    ("ext", "subtype", "tol"),
    [("flac", "PCM_24", 1e-4), ("ogg", "VORBIS", None), ("wav", "PCM_U8", 2e-2)],
)
def test_formats_are_kept(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], ext: str, subtype: str, tol: float | None
) -> None:
    x = speechband(6000, 8000, 2)
    src, dst = tmp_path / f"in.{ext}", tmp_path / f"out.{ext}"
    sf.write(src, x, 8000, subtype=subtype)
    code, _ = run_cli(["--passthrough", str(src), str(dst)], capsys)
    assert code == 0
    a, _ = sf.read(src, dtype="float32", always_2d=True)
    b, _ = sf.read(dst, dtype="float32", always_2d=True)
    info = sf.info(dst)
    assert (info.format, info.subtype, info.channels) == (sf.info(src).format, subtype, 2)
    assert b.shape == a.shape
    if tol is not None:
        assert np.abs(a - b).max() <= tol
    else:  # lossy re-encoding: still the same signal, time-aligned
        snr = 10 * np.log10(np.sum(a**2) / np.sum((a - b) ** 2))
        assert snr > 15


def test_format_follows_extension_and_subtype_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    x = speechband(4000, 8000)
    src = tmp_path / "in.wav"
    sf.write(src, x, 8000, subtype="FLOAT")
    code, _ = run_cli(["--passthrough", str(src), str(tmp_path / "out.flac")], capsys)
    assert code == 0
    info = sf.info(tmp_path / "out.flac")
    assert (info.format, info.subtype) == ("FLAC", "PCM_16")  # FLAC has no float: its default
    code, _ = run_cli(
        ["--passthrough", "--subtype", "pcm_24", str(src), "-o", str(tmp_path / "o.wav")], capsys
    )
    assert code == 0 and sf.info(tmp_path / "o.wav").subtype == "PCM_24"
    code, err = run_cli(["--subtype", "VORBIS", str(src), str(tmp_path / "bad.wav")], capsys)
    assert_one_error_line(code, err)
    assert not (tmp_path / "bad.wav").exists()


def test_output_folder_and_several_inputs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "out").mkdir()
    a, b = tmp_path / "a.wav", tmp_path / "b.flac"
    xa, xb = speechband(3000, 8000), speechband(4000, 16000, 2)
    sf.write(a, xa, 8000, subtype="FLOAT")
    sf.write(b, xb, 16000, subtype="PCM_24")
    code, _ = run_cli(["--passthrough", str(a), str(b), "-o", str(tmp_path / "out")], capsys)
    assert code == 0
    assert sorted(os.listdir(tmp_path / "out")) == ["a.wav", "b.flac"]
    ya, _ = sf.read(tmp_path / "out" / "a.wav", dtype="float32", always_2d=True)
    yb, sr = sf.read(tmp_path / "out" / "b.flac", dtype="float32", always_2d=True)
    assert_allclose(ya, xa, atol=1e-5)
    assert sr == 16000 and yb.shape == xb.shape and np.abs(yb - xb).max() < 3e-3
    # IN OUT with an existing folder as OUT keeps the input's name
    (tmp_path / "o2").mkdir()
    code, _ = run_cli(["--passthrough", str(a), str(tmp_path / "o2")], capsys)
    assert code == 0 and os.listdir(tmp_path / "o2") == ["a.wav"]


def test_several_inputs_one_bad_goes_on(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    (tmp_path / "out").mkdir()
    good, bad = tmp_path / "good.wav", tmp_path / "bad.wav"
    sf.write(good, speechband(2000, 8000), 8000)
    bad.write_bytes(b"this is not audio at all" * 10)
    code, err = run_cli(["--passthrough", str(bad), str(good), "-o", str(tmp_path / "out")], capsys)
    assert_one_error_line(code, err)
    assert "bad.wav" in err
    assert os.listdir(tmp_path / "out") == ["good.wav"]


def test_stdin_stdout(tmp_path: Path) -> None:
    """A real process: wav through a pipe; on stderr the NaN report and the summary line."""
    x = speechband(7000, 8000, 2)
    x[123, 1] = np.nan
    src = tmp_path / "in.wav"
    sf.write(src, x, 8000, subtype="FLOAT")
    with open(src, "rb") as f:
        res = run_sub(["--passthrough", "-", "-"], stdin=f)
    err = res.stderr.decode()
    assert res.returncode == 0, err
    assert "replaced 1 NaN/inf samples" in err and "Traceback" not in err
    out = tmp_path / "out.wav"
    out.write_bytes(res.stdout)
    b, sr = sf.read(out, dtype="float32", always_2d=True)
    assert sr == 8000 and sf.info(out).subtype == "FLOAT"
    assert_allclose(b, np.nan_to_num(x, nan=0.0), atol=1e-5)


def test_one_line_per_file_unless_quiet(tmp_path: Path) -> None:
    """A real process without a terminal: no progress bar, one line per file on stderr (input
    -> output, seconds of audio, x real time); -q: nothing."""
    srcs = [tmp_path / "a.wav", tmp_path / "b.flac"]
    sf.write(srcs[0], speechband(4000, 8000), 8000)
    sf.write(srcs[1], speechband(4410, 44100, 2), 44100)
    (tmp_path / "out").mkdir()
    res = run_sub(["--passthrough", *map(str, srcs), "-o", str(tmp_path / "out")])
    lines = res.stderr.decode().splitlines()
    assert res.returncode == 0 and len(lines) == 2, lines
    for src, line, secs in zip(srcs, lines, ("0.50", "0.10"), strict=True):
        dst = tmp_path / "out" / src.name
        assert line.startswith(f"{src} -> {dst}: {secs} s of audio in "), line
        assert line.endswith("x real time)"), line
    res = run_sub(["-q", "--passthrough", str(srcs[0]), str(tmp_path / "q.wav")])
    assert res.returncode == 0 and res.stderr == b""


def test_help_describes_the_shipped_model(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["file", "--help"])
    text = capsys.readouterr().out
    assert exc.value.code == 0
    import json

    limits_of = ("lowlat", "default")
    limits = {
        json.loads((ROOT / f"rtdenoise/models/{name}.json").read_text())["atten_lim_db"]
        for name in limits_of
    }
    assert len(limits) == 1  # the help gives one figure for both shipped models
    floor = f"-{limits.pop():g} dB"  # the limit the help states is the one the models carry
    assert "lowlat.onnx" in text and "MODEL_CARD" in text and floor in text
    assert "--latency-mode standard" in text and "default.onnx" in text  # the other model
    assert "until a trained model ships" not in text.lower()
    # the pitch post-filter's strengths the help states are the ones the models carry
    meta = {n: json.loads((ROOT / f"rtdenoise/models/{n}.json").read_text()) for n in limits_of}
    flat = " ".join(text.split())
    low = meta["lowlat"].get("pitch_postfilter", 0)
    std = meta["default"].get("pitch_postfilter", 0)
    assert f"{low:g} for the low-latency model, {std:g} for the standard one" in flat, flat


def test_default_model_fallback(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A broken install without the model file falls back to identity, with a warning."""
    monkeypatch.setattr(file_mode, "DEFAULT_MODEL", tmp_path / "lowlat.onnx")
    src, dst = tmp_path / "in.wav", tmp_path / "out.wav"
    sf.write(src, speechband(3000, 8000), 8000)
    code, _ = run_cli([str(src), str(dst)], capsys)
    assert code == 0
    assert any("identity" in r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    assert_allclose(sf.read(dst)[0], sf.read(src)[0], atol=1e-4)


# --------------------------------------------------------------------------- bad input


def _snapshot(folder: Path) -> dict[str, str]:
    return {p.name: digest(p) for p in folder.iterdir() if p.is_file()}


@pytest.fixture
def one_input(tmp_path: Path) -> Path:
    src = tmp_path / "in.wav"
    sf.write(src, speechband(3000, 8000), 8000, subtype="PCM_16")
    return src


@pytest.mark.parametrize(
    "case",
    [
        "missing",
        "folder_input",
        "not_audio",
        "unknown_ext_garbage",
        "same_path",
        "same_file_other_spelling",
        "out_folder_missing",
        "out_parent_is_file",
        "several_into_missing_folder",
        "bad_wet",
        "bad_postfilter",
        "missing_model",
        "stdin_twice",
    ],
)
def test_bad_input_one_line_nothing_left(
    tmp_path: Path, one_input: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    src = one_input
    out = tmp_path / "out.wav"
    args = {
        "missing": [str(tmp_path / "nope.wav"), str(out)],
        "folder_input": [str(tmp_path), str(out)],
        "not_audio": [str(tmp_path / "text.wav"), str(out)],
        "unknown_ext_garbage": [str(tmp_path / "blob.xyz"), str(out)],
        "same_path": [str(src), str(src)],
        "same_file_other_spelling": [str(src), str(tmp_path / "." / "in.wav")],
        "out_folder_missing": [str(src), str(tmp_path / "no" / "out.wav")],
        "out_parent_is_file": [str(src), str(src) + "/out.wav"],
        "several_into_missing_folder": [str(src), str(src), "-o", str(tmp_path / "nodir")],
        "bad_wet": ["--wet", "1.5", str(src), str(out)],
        "bad_postfilter": ["--pitch-postfilter", "-0.1", str(src), str(out)],
        "missing_model": ["--model", str(tmp_path / "m.onnx"), str(src), str(out)],
        "stdin_twice": ["-", "-", "-o", str(tmp_path)],
    }[case]
    (tmp_path / "text.wav").write_text("RIFF? no, just text\n" * 20)
    (tmp_path / "blob.xyz").write_bytes(os.urandom(3000))
    before = _snapshot(tmp_path)
    code, err = run_cli(args, capsys)
    assert_one_error_line(code, err)
    assert _snapshot(tmp_path) == before  # input untouched, no output, no temporary file


def test_unwritable_destination(tmp_path: Path, one_input: Path, capsys) -> None:
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        dst = locked / "out.wav"
    elif os.path.isdir("/proc/self"):
        dst = Path("/proc/self/out.wav")  # root may write anywhere, except here
    else:
        pytest.skip("no unwritable folder available")
    code, err = run_cli(["--passthrough", str(one_input), str(dst)], capsys)
    assert_one_error_line(code, err)
    assert not dst.exists()


def test_bad_input_in_subprocess_has_no_traceback(tmp_path: Path) -> None:
    res = run_sub([str(tmp_path / "missing.flac"), str(tmp_path / "o.flac")])
    err = res.stderr.decode()
    assert_one_error_line(res.returncode, err)
    assert "missing.flac" in err
    assert os.listdir(tmp_path) == []


def test_empty_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # a valid file with no samples -> a valid file with no samples
    src = tmp_path / "empty.wav"
    sf.write(src, np.zeros((0, 2), np.float32), 22050, subtype="PCM_24")
    code, _ = run_cli([str(src), str(tmp_path / "out.wav")], capsys)
    assert code == 0
    info = sf.info(tmp_path / "out.wav")
    assert (info.frames, info.channels, info.samplerate) == (0, 2, 22050)
    # a 0-byte file -> a 0-byte output, not a crash
    (tmp_path / "zero.wav").write_bytes(b"")
    code, err = run_cli([str(tmp_path / "zero.wav"), str(tmp_path / "out0.wav")], capsys)
    assert code == 0 and "Traceback" not in err
    assert (tmp_path / "out0.wav").stat().st_size == 0


def test_all_zero_and_nonfinite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    src = tmp_path / "z.wav"
    sf.write(src, np.zeros((4000, 1), np.float32), 16000, subtype="PCM_16")
    code, _ = run_cli(["--passthrough", str(src), str(tmp_path / "zo.wav")], capsys)
    assert code == 0
    y, _ = sf.read(tmp_path / "zo.wav")
    assert y.shape == (4000,) and not y.any()

    x = speechband(5000, 8000, 2)
    x[100, 0], x[200, 1], x[4000, 0] = np.nan, np.inf, -np.inf
    src = tmp_path / "nan.wav"
    sf.write(src, x, 8000, subtype="FLOAT")
    code, _ = run_cli(["--passthrough", str(src), str(tmp_path / "clean.wav")], capsys)
    assert code == 0
    assert any("replaced 3 NaN/inf samples" in r.getMessage() for r in caplog.records)
    y, _ = sf.read(tmp_path / "clean.wav", dtype="float32", always_2d=True)
    expect = np.where(np.isfinite(x), x, 0.0)
    assert np.isfinite(y).all()
    assert_allclose(y, expect, atol=1e-5)


def test_failure_mid_stream_keeps_old_output(
    tmp_path: Path, one_input: Path, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    """Ctrl-C (or any failure) during processing: temp file removed, old output untouched."""
    dst = tmp_path / "out.wav"
    dst.write_bytes(b"previous result")
    calls = {"n": 0}
    real_feed = Streamer.feed

    def feed(self: Streamer, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_feed(self, x, out)

    monkeypatch.setattr(Streamer, "feed", feed)
    before = _snapshot(tmp_path)
    code = cli.main(["file", "-q", "--block-seconds", "0.05", str(one_input), str(dst)])
    assert code == 130 and calls["n"] == 2
    assert _snapshot(tmp_path) == before


# --------------------------------------------------------------------------- processor choice


class ConstantMaskBackend:
    """Stand-in for a model backend: the same mask value everywhere."""

    def __init__(self, value: float, block_frames: int = 2) -> None:
        self.value = value
        self.block_frames, self.lookahead_frames = block_frames, 0

    def reset(self, channels: int) -> None:
        pass

    def step(self, spec_ri: np.ndarray) -> np.ndarray:
        return np.full(spec_ri.shape[:3], self.value, np.float32)


@pytest.fixture
def fake_backends(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str | None]]:
    """Replace rtdenoise.backends by a constant-mask stand-in; records load_backend calls."""
    built: list[tuple[str, str | None]] = []

    def load_backend(
        kind: str, model_path: str | None = None, block_frames: int | None = None
    ) -> ConstantMaskBackend:
        built.append((kind, model_path))
        blocks.append(block_frames)
        return ConstantMaskBackend(0.0)

    blocks: list[int | None] = []

    fake = types.ModuleType("rtdenoise.backends")
    fake.load_backend = load_backend  # type: ignore[attr-defined]
    fake.blocks = blocks  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "rtdenoise.backends", fake)
    return built


def test_build_processor_default_and_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_backends: list
) -> None:
    monkeypatch.setattr(file_mode, "DEFAULT_MODEL", tmp_path / "none.onnx")
    assert file_mode.build_processor() is None and fake_backends == []  # identity while no model
    assert file_mode.build_processor(passthrough=True) is None
    model = tmp_path / "m.onnx"
    model.write_bytes(b"x")
    p = file_mode.build_processor(model=str(model), wet=0.5, atten_lim_db=12.0)
    assert fake_backends == [("onnx", str(model))]
    assert (p.wet, p.atten_lim_db) == (0.5, 12.0)
    monkeypatch.setattr(file_mode, "DEFAULT_MODEL", model)  # a shipped model becomes the default
    assert file_mode.build_processor(backend="onnx") is not None
    assert fake_backends[-1] == ("onnx", str(model))
    # --block-frames reaches the backend (live mode defaults to 1), and is range-checked
    file_mode.build_processor(block_frames=1)
    assert sys.modules["rtdenoise.backends"].blocks[-1] == 1
    with pytest.raises(file_mode.UserError):
        file_mode.build_processor(block_frames=17)


def test_model_options_reach_the_mask(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fake_backends: list
) -> None:
    """Mask 0 limited to -6 dB, half wet: the output is the input times (0.5 * 10**-0.3 + 0.5)."""
    x = speechband(6000, 8000, 2)
    src, dst, model = tmp_path / "in.wav", tmp_path / "out.wav", tmp_path / "m.onnx"
    sf.write(src, x, 8000, subtype="FLOAT")
    model.write_bytes(b"x")
    args = ["--model", str(model), "--atten-lim-db", "6", "--wet", "0.5", str(src), str(dst)]
    code, _ = run_cli(args, capsys)
    assert code == 0 and fake_backends == [("onnx", str(model))]
    y, _ = sf.read(dst, dtype="float32", always_2d=True)
    assert_allclose(y, x * (0.5 * 10 ** (-6 / 20) + 0.5), atol=1e-5)


def test_every_entry_point_defaults_to_the_low_latency_model() -> None:
    """Issue #12: the low-latency model is the only default. File mode, eval, live, the Python
    API (streams and ``denoise()``) and the ONNX backend each load ``lowlat.*`` unless told
    (its framing: 123 samples of window latency; its limit: 40 dB, from ``lowlat.json``), and
    ``--latency-mode standard`` / ``latency_mode="standard"`` still pick ``default.*``."""
    import json

    import rtdenoise
    from rtdenoise.backends import DEFAULT_LATENCY_MODE, load_backend, shipped_model

    low_meta = json.loads((ROOT / "rtdenoise/models/lowlat.json").read_text())
    std_meta = json.loads((ROOT / "rtdenoise/models/default.json").read_text())
    assert DEFAULT_LATENCY_MODE == "low" and shipped_model().name == "lowlat.onnx"
    assert file_mode.DEFAULT_MODEL == ROOT / "rtdenoise/models/lowlat.onnx"
    assert low_meta["stft"]["latency_samples"] == 123 and low_meta["atten_lim_db"] == 40.0

    def framing(proc) -> tuple:
        return (proc.backend.meta["stft"], proc.stft.latency_samples, proc.atten_lim_db)

    low = (low_meta["stft"], 123, 40.0)
    std = (std_meta["stft"], 518, std_meta["atten_lim_db"])
    argv = {
        "file": ["file", "in.wav", "out.wav"],
        "eval": ["eval", "--pairs", "pairs.csv"],
        "live": ["live", "--input", "x", "--output", "y"],
    }
    for command, args in argv.items():
        parsed = cli.build_parser(command).parse_args(args)
        assert framing(file_mode.processor_from_args(parsed)) == low, command
        parsed = cli.build_parser(command).parse_args([*args, "--latency-mode", "standard"])
        assert framing(file_mode.processor_from_args(parsed)) == std, command
    for whole in (False, True):  # a stream, and denoise()'s whole-signal Denoiser
        d = rtdenoise.Denoiser(8000, _whole_signals=whole)
        assert framing(d._streamer.processor) == low
        d = rtdenoise.Denoiser(8000, latency_mode="standard", _whole_signals=whole)
        assert framing(d._streamer.processor) == std
    x = (0.1 * np.random.default_rng(3).standard_normal(2000)).astype(np.float32)
    picked = rtdenoise.Denoiser(8000, latency_mode="low", _whole_signals=True).denoise(x)
    assert_allclose(rtdenoise.denoise(x, 8000), picked, rtol=0, atol=0)
    assert load_backend("onnx").meta["stft"] == low_meta["stft"]


def test_latency_mode_picks_the_shipped_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--latency-mode low runs the shipped low-latency model on its own framing (123-sample
    window latency), the default; standard the design's; with --model it is refused in one
    line."""
    from rtdenoise.cli import build_parser

    low = file_mode.build_processor(latency_mode="low")
    std = file_mode.build_processor(latency_mode="standard")
    assert (low.stft.synthesis_len, low.stft.latency_samples) == (124, 123)
    assert std.stft.synthesis_len == 0 and file_mode.build_processor().stft == low.stft
    live = build_parser("live").parse_args(["live", "--input", "x", "--output", "y"])
    assert file_mode.processor_from_args(live).stft == low.stft
    x = speechband(8000, 16000)
    src = tmp_path / "in.wav"
    sf.write(src, x, 16000, subtype="FLOAT")
    outs = {}
    for mode in ("low", "standard", None):
        flags = [] if mode is None else ["--latency-mode", mode]
        code, _ = run_cli([*flags, str(src), str(tmp_path / f"{mode}.wav")], capsys)
        assert code == 0
        outs[mode], _ = sf.read(tmp_path / f"{mode}.wav", dtype="float32")
    assert outs["low"].shape == outs["standard"].shape == x.shape[:1]
    assert np.abs(outs["low"] - outs["standard"]).max() > 1e-3  # another model ran
    assert_allclose(outs[None], outs["low"], rtol=0, atol=0)  # the default is the low one
    code, err = run_cli(
        [
            "--latency-mode",
            "low",
            "--model",
            str(ROOT / "rtdenoise/models/default.onnx"),
            str(src),
            str(tmp_path / "x.wav"),
        ],
        capsys,
    )
    assert code != 0 and err.count("\n") == 1 and "--latency-mode" in err
    assert not (tmp_path / "x.wav").exists()


@pytest.mark.parametrize("sr", [22050, 48000])
def test_file_default_block_is_cheaper_with_the_same_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], sr: int
) -> None:
    """Files run FILE_BLOCK_FRAMES (16) frames per model call, against the model's own 4 before:
    the output must be today's, the shipped model at 4 frames per call, to float precision
    (bit for bit on ONNX Runtime here; 22.05 kHz needs the resampler alignment)."""
    x = 0.3 * speechband(int(0.6 * sr), sr, 1)[:, 0]
    x += 0.02 * np.random.default_rng(1).standard_normal(len(x)).astype(np.float32)
    src, dst = tmp_path / "in.wav", tmp_path / "out.wav"
    sf.write(src, x, sr, subtype="FLOAT")
    assert run_cli([str(src), str(dst)], capsys)[0] == 0
    y, _ = sf.read(dst, dtype="float32")
    proc = file_mode.build_processor(block_frames=4)
    assert proc.block_frames == 4 and file_mode.FILE_BLOCK_FRAMES == 16
    assert_allclose(y, Streamer(proc, sr).process(x), rtol=0, atol=1e-6)
    args = cli.build_parser("file").parse_args(["file", str(src), str(dst)])
    assert file_mode.processor_from_args(args).block_frames == 16
    live = cli.build_parser("live").parse_args(["live"])
    assert file_mode.processor_from_args(live).block_frames == 1
    assert "align_block_frames" not in file_mode.streamer_options(live, proc)


# --------------------------------------------------------------------------- library + property


@pytest.mark.parametrize("shape", [(3001,), (3001, 1), (2999, 2)])
def test_denoise_array_shapes(shape: tuple[int, ...]) -> None:
    x = np.random.default_rng(5).uniform(-0.5, 0.5, shape).astype(np.float32)
    y = denoise_array(x, 8000)
    assert y.shape == x.shape and y.dtype == np.float32
    assert_allclose(y, x, atol=1e-5)  # identity at 8 kHz: reconstruction


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    n=st.integers(0, 4000),
    sr=st.sampled_from(RATES),
    channels=st.integers(1, 3),
    block=st.integers(1, 2500),
    seed=st.integers(0, 1000),
)
def test_file_blocks_equal_whole_array(
    tmp_path: Path, n: int, sr: int, channels: int, block: int, seed: int
) -> None:
    """Streaming a file in any block size == the whole-array engine; same length, no drift."""
    x = np.random.default_rng(seed).uniform(-0.5, 0.5, (n, channels)).astype(np.float32)
    src, dst = tmp_path / f"p{seed}.wav", tmp_path / f"q{seed}.wav"
    sf.write(src, x, sr, subtype="FLOAT")
    code = cli.main(
        ["file", "-q", "--passthrough", "--block-seconds", str(block / sr), str(src), str(dst)]
    )
    assert code == 0
    y, _ = sf.read(dst, dtype="float32", always_2d=True)
    assert y.shape == x.shape
    assert_allclose(y, denoise_array(x, sr), atol=1e-5)
