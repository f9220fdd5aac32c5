"""``rtdenoise live --virtual-mic``: a microphone any app can pick, and nothing left behind.

End to end on the PulseAudio server of ``tests/audio_server.py`` (marker ``live``): noisy
speech is played into ``rtd_in`` while ``rtdenoise live --input rtd_in --virtual-mic NAME``
runs, and a recorder opened on the virtual source (``parec -d NAME``, as a call app would open
a microphone) must get denoised speech. The modules it loads must be gone after a normal exit,
after SIGTERM, and after SIGKILL once the next run has started. Without a sound server or
without ``pactl`` the error is one clear line.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from rtdenoise.virtual_mic import TAG
from tests.audio_server import SINK_RATE, LiveRun, add_noise, speech_like
from tests.test_live import DEFAULT_MODEL, _lag, _one_error_line, _si_sdr, _with_one_retry

LEAD_S = 1.0
#: the recorder's join changes the virtual source's latency, which live answers with realigns
#: (crossfaded jumps of the timeline): the noisy speech is played after they have settled...
SETTLE_S = 3.0
#: ...and the recording is lined up piece by piece, each piece within this of the first lag, so
#: that a later realign (a jump of a few ms under load) does not read as lost denoising
PIECE_S, JUMP_S = 0.5, 0.15


def _align_pieces(ref: np.ndarray, rec: np.ndarray, sr: int) -> np.ndarray:
    """rec lined up with ref: the lag of the whole, then each PIECE_S piece's own lag within
    JUMP_S of it (realigns move the timeline by whole jumps between pieces)."""
    lag0 = _lag(ref, rec, max_lag=len(rec) - len(ref))
    piece, jump = int(PIECE_S * sr), int(JUMP_S * sr)
    out = np.empty_like(ref)
    for a in range(0, len(ref), piece):
        r = ref[a : a + piece]
        lo = max(0, lag0 + a - jump)
        seg = rec[lo : lag0 + a + len(r) + jump]
        corr = np.correlate(seg, r, mode="valid")
        k = lo + int(np.argmax(corr))
        out[a : a + len(r)] = rec[k : k + len(r)]
    return out


def _ours(server: object) -> list[str]:
    """The server's modules that carry the virtual mic's tag."""
    out = server.pactl("list", "short", "modules")  # type: ignore[attr-defined]
    return [line for line in out.splitlines() if TAG in line]


def _live(server: object, name: str, *args: str) -> LiveRun:
    return LiveRun(
        server.env,  # type: ignore[attr-defined]
        ["--input", "rtd_in", "--virtual-mic", name, "-r", str(SINK_RATE), "--latency", "0.2",
         "--margin-ms", "30", *args],
    )  # fmt: skip


@pytest.mark.live
@pytest.mark.slow
@pytest.mark.skipif(not DEFAULT_MODEL.exists(), reason="no shipped model (lowlat.onnx)")
def test_a_recorder_on_the_virtual_mic_gets_denoised_speech(
    audio_server: object, tmp_path: Path
) -> None:
    sr = SINK_RATE
    clean = speech_like(sr, 4.0, seed=7)
    noisy = add_noise(clean, sr, snr_db=0, seed=8)
    lead, tail = np.zeros(int(LEAD_S * sr), np.float32), np.zeros(int(1.5 * sr), np.float32)
    play = tmp_path / "play.wav"
    sf.write(play, np.concatenate([lead, noisy, tail]), sr, subtype="FLOAT")
    env = audio_server.env  # type: ignore[attr-defined]

    def check() -> float:
        live = _live(audio_server, "rtdtest_mic", "--duration", "60")
        raw = tmp_path / "rec.f32"
        try:
            live.wait_started(timeout=90)
            # the server has just loaded the virtual mic's modules: let the streams settle
            # (in the full suite the first seconds could bring realigns that shift the recording)
            time.sleep(3.0)
            with open(raw, "wb") as f:
                rec = subprocess.Popen(
                    ["parec", "-d", "rtdtest_mic", "--raw", "--format=float32le",
                     "--channels=1", f"--rate={sr}", "--latency-msec=50"],
                    env=env, stdout=f, stderr=subprocess.DEVNULL,
                )  # fmt: skip
                try:
                    time.sleep(SETTLE_S)
                    seconds = LEAD_S + len(noisy) / sr + 1.5
                    subprocess.run(
                        [sys.executable, "tests/audio_server.py", "play", str(play),
                         "--device", "rtd_in", "--seconds", f"{seconds:.3f}"],
                        env=env, check=True, capture_output=True, timeout=60,
                    )  # fmt: skip
                    time.sleep(0.5)
                finally:
                    rec.terminate()
                    rec.wait(10)
        finally:
            summary = live.stop()
        y = np.fromfile(raw, np.float32)
        aligned = _align_pieces(noisy, y, sr)  # at the device rate
        gain = _si_sdr(clean, aligned) - _si_sdr(clean, noisy)
        assert gain >= 3.0, (gain, live.output)
        assert summary["xruns"] == 0, live.output
        print(f"virtual mic: SI-SDR {gain:+.1f} dB over the noisy input")
        return gain

    _with_one_retry(check)
    assert _ours(audio_server) == []


@pytest.mark.live
def test_no_module_is_left_after_exit_sigterm_or_sigkill(audio_server: object) -> None:
    env = audio_server.env  # type: ignore[attr-defined]
    assert _ours(audio_server) == []
    # a normal exit (--duration)
    res = subprocess.run(
        [sys.executable, "-m", "rtdenoise", "live", "--input", "rtd_in", "--virtual-mic",
         "rtdtest_exit", "--latency", "0.2", "--passthrough", "--duration", "1", "-q"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "rtdtest_exit (denoised microphone)" in res.stderr
    assert _ours(audio_server) == []
    # SIGTERM while running: the source was there, then nothing is
    live = _live(audio_server, "rtdtest_term", "--passthrough")
    live.wait_started(timeout=90)
    sources = audio_server.pactl("list", "short", "sources")  # type: ignore[attr-defined]
    assert "rtdtest_term\t" in sources and len(_ours(audio_server)) == 2
    live.stop()
    assert "stopped by SIGTERM" in live.output
    assert _ours(audio_server) == []
    # SIGKILL: the modules stay until the next run starts (and that one cleans up after itself)
    live = _live(audio_server, "rtdtest_kill", "--passthrough")
    live.wait_started(timeout=90)
    live.kill()
    assert len(_ours(audio_server)) == 2
    res = subprocess.run(
        [sys.executable, "-m", "rtdenoise", "live", "--input", "rtd_in", "--virtual-mic",
         "rtdtest_kill", "--latency", "0.2", "--passthrough", "--duration", "1", "-q", "-v"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "killed rtdenoise" in res.stderr  # it found and unloaded the stale ones
    assert _ours(audio_server) == []


def test_no_sound_server_is_one_clear_line(tmp_path: Path) -> None:
    env = dict(os.environ, HOME=str(tmp_path), XDG_RUNTIME_DIR=str(tmp_path))
    env["PULSE_SERVER"] = f"unix:{tmp_path / 'nothing-here'}"
    res = subprocess.run(
        [sys.executable, "-m", "rtdenoise", "live", "--virtual-mic"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    if "needs pactl" in res.stderr:
        pytest.skip("pactl not installed")
    assert "PulseAudio or PipeWire" in _one_error_line(res)


def test_pactl_missing_is_one_clear_line(tmp_path: Path) -> None:
    env = dict(os.environ, PATH=str(tmp_path))  # no pactl on it
    res = subprocess.run(
        [sys.executable, "-m", "rtdenoise", "live", "--virtual-mic", "x"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert "needs pactl" in _one_error_line(res)


def test_virtual_mic_and_output_together_is_one_clear_line() -> None:
    res = subprocess.run(
        [sys.executable, "-m", "rtdenoise", "live", "--virtual-mic", "--output", "x"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert "not both" in _one_error_line(res)
