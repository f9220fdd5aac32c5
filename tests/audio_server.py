"""A real PulseAudio server with two null sinks, for the live-mode tests and benchmarks.

Recipe: ``docs/AUDIO_SERVER.md`` of the shared docs. The server runs in user space with HOME and
XDG_RUNTIME_DIR inside a temporary folder (never the real home); PortAudio reaches it through
ALSA's pulse plugin and the ``.asoundrc`` written there, which names two devices:

* ``rtd_in``: playback goes into the null sink ``rtd_in``, capture reads its monitor;
* ``rtd_out``: the same for ``rtd_out``.

So a test plays into ``rtd_in``, runs ``rtdenoise live --input rtd_in --output rtd_out`` and
records ``rtd_out``. Every PortAudio client runs in a subprocess with :attr:`AudioServer.env`
(PortAudio reads the device list once per process, and must start after the server).

``python tests/audio_server.py playrec PLAY.wav REC.wav`` is the player/recorder: one duplex
stream that plays a file into one device and records another, sample-locked.
"""

from __future__ import annotations

import argparse
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

SINK_RATE = 48000

PA_SCRIPT = f"""\
load-module module-native-protocol-unix
load-module module-null-sink sink_name=rtd_in  rate={SINK_RATE} channels=1 \
sink_properties=device.description=rtd_in
load-module module-null-sink sink_name=rtd_out rate={SINK_RATE} channels=1 \
sink_properties=device.description=rtd_out
load-module module-null-sink sink_name=rtd_keepalive
load-module module-loopback source=rtd_in.monitor  sink=rtd_keepalive latency_msec=20 \
source_dont_move=1 sink_dont_move=1
load-module module-loopback source=rtd_out.monitor sink=rtd_keepalive latency_msec=20 \
source_dont_move=1 sink_dont_move=1
set-default-sink rtd_out
set-default-source rtd_in.monitor
"""

ASOUNDRC = """\
pcm.rtd_in  { type asym; playback.pcm { type pulse; device "rtd_in" }  \
capture.pcm { type pulse; device "rtd_in.monitor" } }
pcm.rtd_out { type asym; playback.pcm { type pulse; device "rtd_out" } \
capture.pcm { type pulse; device "rtd_out.monitor" } }
ctl.rtd_in  { type pulse }
ctl.rtd_out { type pulse }
"""


def missing_reason() -> str | None:
    """Why the server cannot run here (None if it can)."""
    for tool in ("pulseaudio", "pactl", "parec"):
        if shutil.which(tool) is None:
            return (
                f"{tool} not installed (Debian: apt-get install pulseaudio pulseaudio-utils "
                "libasound2-plugins libportaudio2, or `make system-deps`)"
            )
    return None


def say_if_missing() -> bool:
    """For a script: print why the server cannot run here and return True (else False)."""
    reason = missing_reason()
    if reason:
        print(f"cannot run: {reason}", file=sys.stderr)
    return reason is not None


class AudioServer:
    """Start/stop one PulseAudio server under ``root``; clients use :attr:`env`."""

    def __init__(self, root: Path) -> None:
        # the socket path must stay short (108 bytes): keep the run dir near the root
        self.root = Path(root)
        self.home = self.root / "home"
        self.runtime = self.root / "run"
        self.log = self.root / "pulse.log"
        self.proc: subprocess.Popen[bytes] | None = None
        env = dict(os.environ)
        env.update(HOME=str(self.home), XDG_RUNTIME_DIR=str(self.runtime))
        env.pop("PULSE_SERVER", None)
        env.pop("PULSE_SINK", None)
        env.pop("PULSE_SOURCE", None)
        self.env = env

    def pactl(self, *args: str, check: bool = True) -> str:
        res = subprocess.run(
            ["pactl", *args], env=self.env, capture_output=True, text=True, timeout=10
        )
        if check and res.returncode != 0:
            raise RuntimeError(f"pactl {' '.join(args)} failed: {res.stderr.strip()}")
        return res.stdout

    def start(self, timeout: float = 15.0) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.runtime.mkdir(parents=True, exist_ok=True)
        self.runtime.chmod(0o700)
        (self.home / ".asoundrc").write_text(ASOUNDRC)
        script = self.root / "rtd.pa"
        script.write_text(PA_SCRIPT)
        self.proc = subprocess.Popen(
            [
                "pulseaudio", "--daemonize=no", "-n", "-F", str(script),
                "--exit-idle-time=-1", "--realtime=yes", "--high-priority=yes",
                f"--log-target=file:{self.log}",
            ],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pulseaudio exited ({self.proc.returncode}); see {self.log}")
            if "rtd_out" in self.pactl("list", "short", "sinks", check=False):
                break
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"pulseaudio did not come up in {timeout} s; see {self.log}")
            time.sleep(0.05)
        # an idle null sink wakes only every 2 s: one suspend/resume cycle fixes it
        for sink in ("rtd_in", "rtd_out"):
            self.pactl("suspend-sink", sink, "1")
            self.pactl("suspend-sink", sink, "0")
        for source in ("rtd_in.monitor", "rtd_out.monitor"):
            self.probe(source)

    def probe(self, source: str, seconds: float = 0.1, timeout: float = 5.0) -> None:
        """Check that ``source`` delivers audio (raises if it stays silent-stalled)."""
        need = int(SINK_RATE * seconds) * 2
        proc = subprocess.Popen(
            ["parec", "-d", source, "--raw", "--format=s16le", "--channels=1",
             f"--rate={SINK_RATE}"],
            env=self.env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        got = 0
        deadline = time.monotonic() + timeout
        try:
            assert proc.stdout is not None
            fd = proc.stdout.fileno()
            while got < need and time.monotonic() < deadline:
                ready, _, _ = select.select([fd], [], [], 0.1)
                if ready:
                    chunk = os.read(fd, need - got)
                    if not chunk:
                        break
                    got += len(chunk)
        finally:
            proc.terminate()
            proc.wait(timeout=5)
        if got < need:
            raise RuntimeError(f"{source} delivered {got} of {need} bytes in {timeout} s")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.pactl("exit", check=False)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=5)
        self.proc = None

    def __enter__(self) -> AudioServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --------------------------------------------------------------------------- test signals


def speech_like(sr: int, seconds: float, seed: int = 0) -> np.ndarray:
    """Vowel-like syllables: harmonics of a gliding f0 through two formants, with pauses.

    Band-limited below 3.4 kHz so that it passes the 8 kHz engine unchanged.
    """
    rng = np.random.default_rng(seed)
    n = int(sr * seconds)
    x = np.zeros(n)
    pos = int(0.1 * sr)
    while pos < n - int(0.3 * sr):
        dur = int(rng.uniform(0.15, 0.35) * sr)
        t = np.arange(dur) / sr
        f0 = rng.uniform(100, 200) * (1 + 0.15 * t / t[-1])
        phase = 2 * np.pi * np.cumsum(f0) / sr
        f1, f2 = rng.uniform(300, 800), rng.uniform(900, 2500)
        syl = np.zeros(dur)
        for h in range(1, int(3400 / f0.max())):
            fh = h * f0.mean()
            amp = np.exp(-(((fh - f1) / 150) ** 2)) + 0.5 * np.exp(-(((fh - f2) / 250) ** 2))
            syl += (amp + 0.02) / h * np.sin(h * phase)
        syl *= np.hanning(dur)
        x[pos : pos + dur] += syl
        pos += dur + int(rng.uniform(0.05, 0.2) * sr)
    return (0.3 * x / np.abs(x).max()).astype(np.float32)


def add_noise(clean: np.ndarray, sr: int, snr_db: float, seed: int = 1) -> np.ndarray:
    from scipy import signal

    rng = np.random.default_rng(seed)
    sos = signal.butter(8, 3400, fs=sr, output="sos")
    noise = signal.sosfilt(sos, rng.standard_normal(len(clean))).astype(np.float32)
    scale = np.sqrt(np.mean(clean**2) / np.mean(noise**2) / 10 ** (snr_db / 10))
    return (clean + scale * noise).astype(np.float32)


# --------------------------------------------------------------------------- player/recorder


def playrec_command(
    play_path: Path,
    rec_path: Path,
    play_device: str = "rtd_in",
    rec_device: str = "rtd_out",
    samplerate: int = SINK_RATE,
    latency: float = 0.2,
    lead: float = 0.3,
    tail: float = 1.0,
) -> list[str]:
    """The command line of the player/recorder subprocess (run it with AudioServer.env)."""
    return [
        sys.executable, str(Path(__file__).resolve()), "playrec", str(play_path), str(rec_path),
        "--play-device", play_device, "--rec-device", rec_device, "--samplerate", str(samplerate),
        "--latency", str(latency), "--lead", str(lead), "--tail", str(tail),
    ]  # fmt: skip


def _playrec(args: argparse.Namespace) -> int:
    """Play PLAY (after ``lead`` s of silence) into one device, record another, sample-locked."""
    import sounddevice as sd
    import soundfile as sf

    play, sr = sf.read(args.play, dtype="float32", always_2d=True)
    play = play[:, 0]
    if sr != args.samplerate:
        raise SystemExit(f"{args.play} is {sr} Hz, expected {args.samplerate}")
    lead = int(args.lead * sr)
    total = lead + len(play) + int(args.tail * sr)
    src = np.zeros(total, np.float32)
    src[lead : lead + len(play)] = play
    rec = np.zeros(total, np.float32)
    state = {"pos": 0, "xruns": 0}

    def callback(indata, outdata, frames, t, status):  # noqa: ANN001 - sounddevice signature
        if status:
            state["xruns"] += 1
        i = state["pos"]
        n = max(0, min(frames, total - i))
        outdata.fill(0)
        outdata[:n, 0] = src[i : i + n]
        rec[i : i + n] = indata[:n, 0]
        state["pos"] = i + frames
        if i + frames >= total:
            raise sd.CallbackStop

    with sd.Stream(
        device=(args.rec_device, args.play_device),
        samplerate=sr,
        channels=1,
        dtype="float32",
        latency=args.latency,
        callback=callback,
    ) as stream:
        while stream.active:
            time.sleep(0.05)
    sf.write(args.rec, rec, sr, subtype="FLOAT")
    print(f"playrec: {total / sr:.2f} s, lead {lead} samples, status flags {state['xruns']}")
    return 0


def _play(args: argparse.Namespace) -> int:
    """Play a WAV into a device in a loop for ``seconds`` (continuous input for soak runs)."""
    import sounddevice as sd
    import soundfile as sf

    x, sr = sf.read(args.play, dtype="float32", always_2d=True)
    x = np.ascontiguousarray(x[:, 0])
    total = int(args.seconds * sr)
    state = {"pos": 0}

    def callback(outdata, frames, t, status):  # noqa: ANN001 - sounddevice signature
        i = state["pos"]
        outdata[:, 0] = np.take(x, np.arange(i, i + frames), mode="wrap")
        state["pos"] = i + frames
        if i + frames >= total:
            raise sd.CallbackStop

    with sd.OutputStream(
        device=args.device, samplerate=sr, channels=1, dtype="float32", latency=0.1,
        blocksize=1024, callback=callback,
    ) as stream:  # fmt: skip
        while stream.active:
            time.sleep(0.2)
    return 0


# --------------------------------------------------------------------------- rtdenoise live

REPO = Path(__file__).resolve().parents[1]
START_RE = re.compile(r"latency ([\d.]+) ms \(")
SUMMARY_RE = re.compile(
    r"stopped.* after ([\d.]+) s, RTF ([\d.]+), xruns (\d+) after start-up \((\d+) during\), "
    r"underruns (\d+) \(([\d.]+) s dry\), latency ([\d.]+) ms"
)


class LiveRun:
    """``python -m rtdenoise live ARGS`` as a subprocess, its stderr collected by a thread."""

    def __init__(self, env: dict[str, str], args: list[str]) -> None:
        self.args = args
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rtdenoise", "live", *args],
            env=env,
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_started(self, timeout: float = 60.0) -> float:
        """Wait for the start line; return the latency it prints (ms)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines:
                m = START_RE.search(line)
                if m:
                    return float(m.group(1))
            if self.proc.poll() is not None:
                self._reader.join(2)
                raise RuntimeError(f"live exited ({self.proc.returncode}):\n{self.output}")
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"live did not start in {timeout} s:\n{self.output}")

    def stop(self, timeout: float = 30.0) -> dict[str, float]:
        """SIGTERM, wait, and parse the summary line (raises if it is missing)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def wait(self, timeout: float = 30.0) -> dict[str, float]:
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise RuntimeError(f"live did not stop in {timeout} s:\n{self.output}") from None
        self._reader.join(5)
        m = SUMMARY_RE.search(self.output)
        if self.proc.returncode != 0 or not m:
            raise RuntimeError(f"live failed ({self.proc.returncode}):\n{self.output}")
        keys = ("seconds", "rtf", "xruns", "xruns_startup", "underruns", "dry_s", "latency_ms")
        return dict(zip(keys, (float(g) for g in m.groups()), strict=True))

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("playrec", help="play a WAV into one device while recording another")
    p.add_argument("play", type=Path)
    p.add_argument("rec", type=Path)
    p.add_argument("--play-device", default="rtd_in")
    p.add_argument("--rec-device", default="rtd_out")
    p.add_argument("--samplerate", type=int, default=SINK_RATE)
    p.add_argument("--latency", type=float, default=0.2)
    p.add_argument("--lead", type=float, default=0.3)
    p.add_argument("--tail", type=float, default=1.0)
    q = sub.add_parser("play", help="play a WAV into a device in a loop")
    q.add_argument("play", type=Path)
    q.add_argument("--device", default="rtd_in")
    q.add_argument("--seconds", type=float, default=60.0)
    s = sub.add_parser("serve", help="run a server under ROOT until Ctrl-C (for experiments)")
    s.add_argument("root", type=Path)
    args = parser.parse_args(argv)
    if args.cmd == "playrec":
        return _playrec(args)
    if args.cmd == "play":
        return _play(args)
    with AudioServer(args.root) as server:
        print(f"export HOME={server.home} XDG_RUNTIME_DIR={server.runtime}", flush=True)
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
