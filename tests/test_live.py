"""Live mode: the engine's timing invariants in-process, then end to end on a real audio server.

In-process tests drive :class:`LiveEngine` exactly as PortAudio would (callback by callback) with
the real :class:`Streamer`, and check sample-exact invariants: output = input delayed by
``engine.delay``; when the worker falls behind, the output is the equally delayed dry input,
crossfaded (every sample a convex mix of wet and dry); a worker exception stops the engine.

End-to-end tests (marker ``live``) run ``python -m rtdenoise live`` as a subprocess against the
PulseAudio server of ``tests/audio_server.py`` (session fixture ``audio_server``): a noisy,
speech-like signal is played into ``rtd_in`` and ``rtd_out`` is recorded by a separate duplex
stream; the recording is time-aligned by cross-correlation and compared.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from rtdenoise.errors import UserError
from rtdenoise.live import DRIFT_LIMIT_S, SOFT_KNEE, LiveConfig, LiveEngine, _soft_clip
from rtdenoise.streamer import Streamer
from tests.audio_server import SINK_RATE, LiveRun, add_noise, playrec_command, speech_like

#: silence before the clip: the recorder's own start-up glitches are over before it arrives
LEAD_S = 1.5
DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "rtdenoise" / "models" / "default.onnx"


# --------------------------------------------------------------------------- in-process engine


class _Time:
    """PortAudio's time info: 2 ms input, 5 ms output device latency."""

    currentTime = 10.0
    inputBufferAdcTime = 9.998
    outputBufferDacTime = 10.005


class _Halve:
    """Frame processor: wet = half the input, so wet and dry differ everywhere."""

    block_frames = 1
    lookahead_frames = 0

    def reset(self, channels: int) -> None:
        pass

    def process(self, frames: np.ndarray, out: np.ndarray) -> None:
        np.multiply(frames, 0.5, out=out)


def _duplex(engine: LiveEngine, indata: np.ndarray, outdata: np.ndarray, frames: int) -> None:
    """Both callbacks back to back, as a duplex device would call them."""
    engine.input_callback(indata, frames, _Time, 0)
    engine.output_callback(outdata, frames, _Time, 0)


def _engine(processor: object = None, sr: int = 8000, block: int = 64) -> LiveEngine:
    return LiveEngine(Streamer(processor, sample_rate=sr), LiveConfig(sr, block, 0.02))


def _drive(
    engine: LiveEngine, x: np.ndarray, block: int, stall: range = range(0), arm_after: int = 10
) -> tuple[np.ndarray, int, int]:
    """Feed x [n] callback by callback; the worker keeps up except during callbacks ``stall``.

    Returns (output in input indices ``q = o + out_map`` [n], arm start index, end index).
    """
    y = np.full(len(x), np.nan, np.float32)
    outdata = np.empty((block, 1), np.float32)
    start = None
    for i, a in enumerate(range(0, len(x) - block + 1, block)):
        _duplex(engine, x[a : a + block, None], outdata, block)
        y[a : a + block] = outdata[:, 0]
        if i == arm_after:
            prefill, lat_in, lat_out = engine.plan_prefill()
            assert (lat_in, lat_out) == pytest.approx((0.002, 0.005))
            engine.arm(prefill)
        elif engine.armed and start is None:
            start = engine._arm_start
        if engine.armed and i not in stall:
            engine.process_available()
    assert start is not None
    m = engine.out_map
    assert m is not None and 0 <= m <= 2 * block
    n = len(x) // block * block
    yq = np.full(len(x), np.nan, np.float32)
    yq[m:n] = y[: n - m]
    return yq, start, n


def _signal(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 8000
    return (0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(n)).astype(np.float32)


def test_output_is_input_delayed_by_the_reported_delay() -> None:
    block = 64
    engine = _engine(block=block)
    x = _signal(8000 * 2)
    y, start, n = _drive(engine, x, block)
    d = engine.delay
    assert d == engine.prefill + engine.streamer.latency_samples
    assert engine.prefill >= engine.chunk + 2 * block + engine.fade  # never waits on the worker
    np.testing.assert_array_equal(y[start : start + engine.prefill], 0.0)  # silence first
    np.testing.assert_allclose(y[start + d : n], x[start : n - d], atol=1e-5)
    assert engine.stats.underruns == 0 and engine.stats.xruns == 0


def test_worker_behind_plays_the_delayed_dry_input_without_a_gap() -> None:
    block = 64
    engine = _engine(block=block)
    x = _signal(8000 * 2, seed=1)
    stall = range(100, 140)  # 40 callbacks (320 ms) without the worker
    y, start, n = _drive(engine, x, block, stall=stall)
    d = engine.delay
    # identity processing: wet == dry, so the fallback must be seamless and exact
    np.testing.assert_allclose(y[start + d : n], x[start : n - d], atol=1e-5)
    assert engine.stats.underruns == 1
    assert engine.stats.dry_samples >= (len(stall) - 2) * block - engine.prefill


def test_fallback_crossfades_between_wet_and_dry() -> None:
    block = 64
    engine = _engine(_Halve(), block=block)
    x = np.abs(_signal(8000 * 2, seed=2)) + 0.1  # positive: wet (x/2) < dry (x) everywhere
    stall = range(100, 140)
    y, start, n = _drive(engine, x, block, stall=stall)
    d, f = engine.delay, engine.fade
    dry = x[start : n - d]
    out = y[start + d : n]
    wet = 0.5 * dry
    # every sample is a convex mix of wet and dry at its own time index: no click, no gap
    assert np.all(out >= wet - 1e-5) and np.all(out <= dry + 1e-5)
    is_dry = np.isclose(out, dry, atol=1e-5)
    is_wet = np.isclose(out, wet, atol=1e-5)
    mixed = ~(is_dry | is_wet)
    # the stall (minus what the prefill bridged) was bridged with the dry signal
    assert is_dry.sum() >= len(stall) * block - engine.prefill - 2 * block - 2 * f
    assert 0 < mixed.sum() <= 2 * f  # exactly two short crossfades
    # wet, fade out, dry, fade in, wet: nothing else
    label = np.where(is_wet, 0, np.where(is_dry, 2, 1))
    runs = label[np.r_[0, np.flatnonzero(np.diff(label)) + 1]]
    assert runs.tolist() == [0, 1, 2, 1, 0]


def test_worker_exception_stops_the_engine() -> None:
    engine = _engine(block=64)

    def broken(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        raise ValueError("model exploded")

    engine.streamer.feed = broken  # type: ignore[method-assign]
    worker = threading.Thread(target=engine.worker, daemon=True)
    worker.start()
    x = _signal(8000)
    outdata = np.empty((64, 1), np.float32)
    for i, a in enumerate(range(0, len(x) - 64, 64)):
        _duplex(engine, x[a : a + 64, None], outdata, 64)
        if i == 2:
            engine.arm(engine.plan_prefill()[0])
        if engine.stop_event.wait(0.002):
            break
    assert engine.stop_event.wait(5.0)
    worker.join(5.0)
    assert not worker.is_alive()
    assert isinstance(engine.error, ValueError)


def test_soft_clip_is_identity_below_the_knee_and_bounded_above() -> None:
    y = np.linspace(-3, 3, 6001, dtype=np.float32)
    ref = y.copy()
    tmp, tmp2 = np.empty_like(y), np.empty_like(y)
    _soft_clip(y, tmp, tmp2)
    low = np.abs(ref) <= SOFT_KNEE
    np.testing.assert_array_equal(y[low], ref[low])
    assert np.all(np.abs(y) <= 1.0)
    assert np.all(np.diff(y) >= -1e-6)  # monotonic (to float32 rounding): no fold-over
    assert np.all(np.abs(y[np.abs(ref) <= 1.1]) < 0.999)  # soft: not a hard clip at 1
    np.testing.assert_allclose(y, -y[::-1], atol=1e-6)


def _bursty(
    engine: LiveEngine,
    x: np.ndarray,
    phase: float,
    at: dict[int, object],
    skip_worker: range = range(0),
    block: int = 64,
    burst: int = 4,
    worker_s: float = 0.002,
) -> tuple[np.ndarray, np.ndarray]:
    """Callbacks in bursts of ``burst`` both ways, the output ``phase`` of a period behind, the
    worker ``worker_s`` after each input burst (not after input callbacks ``skip_worker``);
    ``at[i]()`` runs after input callback i. -> (output [n], out_map per output callback)."""
    period = block * burst / 8000
    nb = len(x) // block
    events = []
    for i in range(nb):
        t_in = (i // burst) * period + (i % burst) * 1e-4
        events += [(t_in, 0, i), (t_in + phase * period, 1, i)]
        if i % burst == burst - 1 and i not in skip_worker:
            events.append((t_in + worker_s, 2, i))
    events.sort()
    outdata = np.empty((block, 1), np.float32)
    y = np.full(nb * block, np.nan, np.float32)
    maps = np.zeros(nb, np.int64)
    for t, side, i in events:
        engine._clock = lambda t=t: t
        if side == 0:
            engine.input_callback(x[i * block : (i + 1) * block, None], block, _Time, 0)
            if i in at:
                at[i]()  # type: ignore[operator]
        elif side == 1:
            engine.output_callback(outdata, block, _Time, 0)
            y[i * block : (i + 1) * block] = outdata[:, 0]
            maps[i] = engine.out_map or 0
        elif engine._armed:
            engine.process_available()
    return y, maps


@pytest.mark.parametrize("phase", [0.0, 0.3, 0.7])
@pytest.mark.parametrize("block", [31, 64])  # one chunk (the default) and not
def test_prefill_covers_callback_bursts(block: int, phase: float) -> None:
    """Input and output callbacks each in bursts of 4, the output ``phase`` of a period behind;
    the worker runs only after an input burst. Never an underrun, output = delayed input."""
    engine = _engine(block=block)
    x = _signal(8000 * 2, seed=3)

    def arm() -> None:
        prefill = engine.plan_prefill()[0]
        assert prefill >= 2 * 4 * block + engine.fade
        engine.arm(prefill)

    y, maps = _bursty(engine, x, phase, {40: arm}, block=block, worker_s=1e-6)
    assert engine.stats.underruns == 0
    d, start, m = engine.delay, engine._arm_start, engine.out_map
    assert m is not None and np.all(maps[maps != 0] == m)
    yq = y[start + d - m :]  # output sample o plays input o + m - d
    np.testing.assert_allclose(yq, x[start : start + len(yq)], atol=1e-5)


def _trim_schedule(engine: LiveEngine) -> dict[int, object]:
    """Arm, record 35 bursts (every remainder of 4 x 64 samples in chunks of 31), trim,
    record again."""

    def stop_and_trim() -> None:
        engine.record_timeline(False)
        engine.trim(engine.plan_trim())

    return {
        40: lambda: engine.arm(engine.plan_prefill()[0]),
        60: lambda: engine.record_timeline(True),
        200: stop_and_trim,
        220: lambda: engine.record_timeline(True),
    }


def _check_jumps(engine: LiveEngine, x: np.ndarray, y: np.ndarray, maps: np.ndarray) -> int:
    """Output block i plays input ``o + map - delay``; where the map jumped, the block starts
    on the old timeline and crossfades into the new one. -> number of jumps after arming."""
    block = len(y) // len(maps)
    d, start, f = engine.delay, engine._arm_start, engine.fade
    jumps = 0
    for i in range(1, len(maps)):
        src = np.arange(i * block, (i + 1) * block) + maps[i] - d
        if src[0] < start:
            continue
        yi = y[i * block : (i + 1) * block]
        if maps[i] == maps[i - 1]:
            np.testing.assert_allclose(yi, x[src], atol=1e-5)
            continue
        jumps += 1
        old, new = x[src - maps[i] + maps[i - 1]], x[src]
        assert np.all(yi >= np.minimum(old, new) - 1e-5)
        assert np.all(yi <= np.maximum(old, new) + 1e-5)
        np.testing.assert_allclose(yi[f:], new[f:], atol=1e-5)
        assert abs(yi[0] - old[0]) <= abs(new[0] - old[0]) / 2 + 1e-5  # starts on the old one
    return jumps


@pytest.mark.parametrize("phase", [0.05, 0.3, 0.7])
def test_trim_keeps_the_margin_and_drops_the_rest(phase: float) -> None:
    """After the start-up trim every read finds its data made >= margin before it asks, with
    less than one burst period to spare beyond that (no cheaper plan exists); never an
    underrun; the output is the input delayed, and the one jump is a crossfade."""
    engine = _engine(block=64)
    x = _signal(8000 * 4, seed=5)
    y, maps = _bursty(engine, x, phase, _trim_schedule(engine))
    engine.record_timeline(False)
    st, margin, period = engine.stats, engine.cfg.margin_ms / 1000, 4 * 64 / 8000
    assert st.underruns == 0
    assert 0 < engine.trimmed < engine.prefill
    assert margin <= engine.timeline_spare(0) < margin + period
    assert engine.timeline_spare(1) < margin  # one sample more and a read would be too early
    assert _check_jumps(engine, x, y, maps) == 1


def test_a_late_read_after_the_trim_gives_the_buffering_back() -> None:
    """The worker misses one burst after the trim: instead of going dry, the output steps
    back (crossfaded) by what was missing + the margin, each step counted as an underrun, and
    runs on with part of the trim kept."""
    x = _signal(8000 * 4, seed=6)
    calm = _engine(block=64)
    _bursty(calm, x, 0.3, _trim_schedule(calm))
    engine = _engine(block=64)
    y, maps = _bursty(engine, x, 0.3, _trim_schedule(engine), skip_worker=range(300, 304))
    st = engine.stats
    assert st.untrims >= 1 and st.underruns == st.untrims and st.dry_samples == 0
    assert 0 <= engine.trimmed < calm.trimmed
    assert _check_jumps(engine, x, y, maps) == 1 + st.untrims  # the trim, then the steps back
    # after the steps the worker keeps up again: nothing more is given back
    assert np.count_nonzero(np.diff(maps[320:])) == 0


@pytest.mark.parametrize("extra", [+1, -1])
def test_clock_drift_is_absorbed_by_sample_slips(extra: int) -> None:
    """Output clock 0.5% fast (an extra output callback) or slow (a skipped one) every 200
    callbacks: the output slips single samples, the latency stays put, no underrun, no gap."""
    block = 64
    engine = _engine(block=block)
    x = _signal(8000 * 40, seed=4)  # 40 s
    indata = x[:, None]
    outdata = np.empty((block, 1), np.float32)
    played = []
    nb = len(x) // block
    for i in range(nb):
        engine.input_callback(indata[i * block : (i + 1) * block], block, _Time, 0)
        if i == 10:
            engine.arm(engine.plan_prefill()[0])
        if engine._armed:
            engine.process_available()
        n_out = 1 + (extra if i % 200 == 199 and i > 20 else 0)
        for _ in range(n_out):
            engine.output_callback(outdata, block, _Time, 0)
            played.append(outdata[:, 0].copy())
        if i == 10 + int(3 * 8000 / block):
            engine.hold_latency(engine.stats.loop_ema)
    y = np.concatenate(played)
    st = engine.stats
    assert st.underruns == 0
    drift = 1000 * engine.drift_seconds()
    expected = -extra * (nb - 400) // 200 * block / 8  # ms of output clock drift
    assert abs(drift - expected) < 10, (drift, expected)
    limit_ms = 1000 * DRIFT_LIMIT_S
    assert abs(st.slips) >= (abs(expected) - 2 * limit_ms) * 8  # 8 samples per ms at 8 kHz
    assert abs(st.loop_ema - engine._loop_ref) <= DRIFT_LIMIT_S + 1 / 8000  # latency held
    assert np.isfinite(y).all() and np.count_nonzero(y[len(y) // 2 :] == 0) == 0  # no gap


def test_portaudio_missing_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from rtdenoise import devices

    class _NoPortAudio:
        def find_spec(self, name: str, *args: object) -> None:
            if name == "sounddevice":
                raise OSError("PortAudio library not found")

    monkeypatch.delitem(sys.modules, "sounddevice", raising=False)
    monkeypatch.setattr(sys, "meta_path", [_NoPortAudio(), *sys.meta_path])
    with pytest.raises(UserError, match="libportaudio2"):
        devices.import_sounddevice()


# --------------------------------------------------------------------------- real audio server


def _cli(server: object, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rtdenoise", "live", *args],
        env=server.env,  # type: ignore[attr-defined]
        capture_output=True,
        text=True,
        timeout=120,
    )


def _one_error_line(res: subprocess.CompletedProcess[str]) -> str:
    assert res.returncode != 0
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("rtdenoise: error: ")]
    assert len(errors) == 1 and "Traceback" not in res.stderr, res.stderr
    return errors[0]


def test_no_devices_is_one_clear_line(tmp_path: Path) -> None:
    """No sound card and no sound server reachable (a fresh HOME and runtime dir)."""
    env = dict(os.environ, HOME=str(tmp_path / "home"), XDG_RUNTIME_DIR=str(tmp_path / "run"))
    env.pop("PULSE_SERVER", None)
    (tmp_path / "home").mkdir()
    (tmp_path / "run").mkdir(mode=0o700)
    res = subprocess.run(
        [sys.executable, "-m", "rtdenoise", "live", "-l"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if res.returncode == 0:
        pytest.skip("this machine has audio devices without a sound server")
    assert "no audio devices found" in _one_error_line(res)


@pytest.mark.live
def test_list_devices(audio_server: object) -> None:
    res = _cli(audio_server, "-l")
    assert res.returncode == 0, res.stderr
    assert "rtd_in" in res.stdout and "rtd_out" in res.stdout


@pytest.mark.live
def test_unknown_device_says_how_to_list(audio_server: object) -> None:
    line = _one_error_line(_cli(audio_server, "--input", "no_such_device_xyz"))
    assert "no_such_device_xyz" in line and "rtdenoise live -l" in line


@pytest.mark.live
def test_unsupported_sample_rate(audio_server: object) -> None:
    line = _one_error_line(
        _cli(audio_server, "--input", "rtd_in", "--output", "rtd_out", "-r", "1000000")
    )
    assert "sample rate" in line and "1000000 Hz" in line


def _align(ref: np.ndarray, rec: np.ndarray, max_lag: int) -> np.ndarray:
    """rec shifted so that it lines up with ref (cross-correlation peak), cut to len(ref)."""
    n = len(ref) + len(rec)
    corr = np.fft.irfft(np.fft.rfft(rec, n) * np.conj(np.fft.rfft(ref, n)), n)
    lag = int(np.argmax(corr[:max_lag]))
    out = rec[lag : lag + len(ref)]
    assert len(out) == len(ref), f"recording too short for lag {lag}"
    return out


def _window_correlations(a: np.ndarray, b: np.ndarray, win: int) -> np.ndarray:
    return np.array(
        [np.corrcoef(a[i : i + win], b[i : i + win])[0, 1] for i in range(0, len(a) - win, win)]
    )


def _si_sdr(ref: np.ndarray, est: np.ndarray) -> float:
    ref = ref - ref.mean()
    est = est - est.mean()
    target = (est @ ref) / (ref @ ref) * ref
    return float(10 * np.log10((target @ target) / np.sum((est - target) ** 2)))


def _through_live(server: object, tmp: Path, x: np.ndarray, live_args: list[str]) -> tuple:
    """Play x into rtd_in while live runs, record rtd_out -> (recording, summary, stdout)."""
    play, rec = tmp / "play.wav", tmp / "rec.wav"
    sf.write(play, x, SINK_RATE, subtype="FLOAT")
    # large device buffers and worker margin: robust on a loaded 2-core CI box
    args = ["--input", "rtd_in", "--output", "rtd_out", "--latency", "0.2", "--margin-ms", "30"]
    args += ["--duration", "60"]
    live = LiveRun(server.env, [*args, *live_args])  # type: ignore[attr-defined]
    try:
        live.wait_started(timeout=90)
        subprocess.run(
            playrec_command(play, rec, latency=0.2, lead=LEAD_S, tail=1.5),
            env=server.env,  # type: ignore[attr-defined]
            check=True,
            capture_output=True,
            timeout=120,
        )
    finally:
        summary = live.stop()
    y, sr = sf.read(rec, dtype="float32")
    assert sr == SINK_RATE
    return y, summary, live.output


def _with_one_retry(check, *args):  # noqa: ANN001, ANN202 - test helper
    """Run a live check; on failure (a load spike on a shared 2-core box) retry once."""
    try:
        return check(*args)
    except (AssertionError, RuntimeError) as first:
        print(f"live check failed once, retrying: {first}")
        return check(*args)


@pytest.mark.live
@pytest.mark.slow
def test_passthrough_end_to_end_matches_the_input(audio_server: object, tmp_path: Path) -> None:
    sr = SINK_RATE
    noisy = add_noise(speech_like(sr, 3.0), sr, snr_db=10)

    def check() -> dict:
        rec, summary, text = _through_live(audio_server, tmp_path, noisy, ["--passthrough"])
        aligned = _align(noisy, rec, max_lag=int((LEAD_S + 1.5) * sr))
        corr = _window_correlations(noisy, aligned, win=sr // 4)
        assert corr.min() > 0.95, (corr, text)
        assert summary["xruns"] == 0 and summary["underruns"] == 0, text
        assert "stopped by SIGTERM" in text
        return summary

    summary = _with_one_retry(check)
    assert summary["latency_ms"] > 0


@pytest.mark.live
def test_duration_stops_by_itself(audio_server: object) -> None:
    args = ["--input", "rtd_in", "--output", "rtd_out", "--latency", "0.2"]
    res = _cli(audio_server, *args, "--passthrough", "--duration", "1.5", "-q")
    assert res.returncode == 0, res.stderr
    summary = [ln for ln in res.stderr.splitlines() if "stopped after" in ln]
    assert len(summary) == 1, res.stderr
    seconds = float(summary[0].split("stopped after ")[1].split(" s")[0])
    assert 1.5 <= seconds < 2.5


@pytest.mark.live
@pytest.mark.slow
@pytest.mark.skipif(not DEFAULT_MODEL.exists(), reason="no shipped model yet (default.onnx)")
def test_model_end_to_end_improves_si_sdr(audio_server: object, tmp_path: Path) -> None:
    sr = SINK_RATE
    clean = speech_like(sr, 4.0, seed=3)
    noisy = add_noise(clean, sr, snr_db=0, seed=4)
    baseline = _si_sdr(clean, noisy)

    def check() -> float:
        rec, summary, text = _through_live(audio_server, tmp_path, noisy, [])
        aligned = _align(noisy, rec, max_lag=int((LEAD_S + 1.5) * sr))
        gain = _si_sdr(clean, aligned) - baseline
        assert gain >= 5.0, (baseline, gain, text)
        assert summary["xruns"] == 0, text
        return gain

    _with_one_retry(check)
