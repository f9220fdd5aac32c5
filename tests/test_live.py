"""Live mode from the command line, end to end on a real audio server.

The engine's invariants are tested in-process in ``test_live_engine.py`` and the latency
planning in ``test_live_timing.py``. Here ``python -m rtdenoise live`` runs as a subprocess
against the PulseAudio server of ``tests/audio_server.py`` (session fixture ``audio_server``,
marker ``live``): a noisy, speech-like signal is played into ``rtd_in`` and ``rtd_out`` is
recorded by a separate duplex stream; the recording is time-aligned by cross-correlation and
compared. Errors the user can fix are one clear line.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from rtdenoise.errors import UserError
from tests.audio_server import SINK_RATE, LiveRun, add_noise, playrec_command, speech_like

#: silence before the clip: the recorder's own start-up glitches are over before it arrives
LEAD_S = 1.5
#: the model live mode runs by default (the low-latency one, as every entry point)
DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "rtdenoise" / "models" / "lowlat.onnx"


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


@pytest.mark.parametrize("rejects", [(), (48000,), ("output", 48000)])
def test_default_rate_is_48k_where_both_devices_take_it(
    monkeypatch: pytest.MonkeyPatch, rejects: tuple
) -> None:
    """48 kHz (the sound servers' native rate, 6x the engine's) unless a device refuses it;
    then the input device's default rate."""
    from rtdenoise import devices

    class _SoundDevice:
        class PortAudioError(Exception):
            pass

        @staticmethod
        def _check(kind: str, samplerate: float, **_: object) -> None:
            if samplerate in rejects and (len(rejects) == 1 or kind in rejects):
                raise _SoundDevice.PortAudioError("Invalid sample rate")

        check_input_settings = staticmethod(lambda **kw: _SoundDevice._check("input", **kw))
        check_output_settings = staticmethod(lambda **kw: _SoundDevice._check("output", **kw))

    monkeypatch.setattr(devices, "import_sounddevice", lambda: _SoundDevice)
    mic = devices.Device(1, "mic", "ALSA", 1, 44100.0)
    out = devices.Device(2, "out", "ALSA", 1, 22050.0)
    rate = devices.default_rate([(mic, "input"), (out, "output")])
    assert rate == (devices.PREFERRED_RATE if not rejects else 44100)


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


def _lag(ref: np.ndarray, rec: np.ndarray, max_lag: int) -> int:
    """Where ref starts in rec (cross-correlation peak), at most max_lag samples in."""
    n = len(ref) + len(rec)
    corr = np.fft.irfft(np.fft.rfft(rec, n) * np.conj(np.fft.rfft(ref, n)), n)
    return int(np.argmax(corr[:max_lag]))


def _align(ref: np.ndarray, rec: np.ndarray, max_lag: int) -> np.ndarray:
    """rec shifted so that it lines up with ref (cross-correlation peak), cut to len(ref)."""
    lag = _lag(ref, rec, max_lag)
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
@pytest.mark.skipif(not DEFAULT_MODEL.exists(), reason="no shipped model yet (lowlat.onnx)")
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
