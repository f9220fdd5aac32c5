"""A virtual microphone on the sound server, for ``rtdenoise live --virtual-mic [NAME]``.

Call apps pick a microphone; they cannot read from "speakers". Through ``pactl`` (PulseAudio,
or PipeWire through its PulseAudio interface) this loads two modules:

* ``module-null-sink`` ``NAME_sink``: the sink the engine writes the denoised audio to;
* ``module-remap-source`` ``NAME`` over its monitor, described as "NAME (denoised microphone)":
  the source any app lists as a microphone.

Both carry the properties ``rtdenoise.virtual_mic=NAME`` and ``rtdenoise.pid=PID``.
:class:`VirtualMic` unloads them on exit (also after Ctrl-C/SIGTERM, which ``live`` turns into
a normal stop); modules of a run that was killed are found by those properties at the next
start and unloaded. The engine reaches the sink through PortAudio's ALSA ``pulse`` device with
``PULSE_SINK`` set (``output_device``).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
from pathlib import Path

from .errors import UserError

log = logging.getLogger(__name__)

DEFAULT_NAME = "rtdenoise"
#: the module property every module of ours carries
TAG = "rtdenoise.virtual_mic"
#: the PortAudio (ALSA) device that goes through the sound server, honouring PULSE_SINK
PULSE_DEVICE = "pulse"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_OURS_RE = re.compile(rf"{re.escape(TAG)}=([^\s'\"]+).*?rtdenoise\.pid=(\d+)")


def check_name(name: str) -> str:
    if not _NAME_RE.match(name):
        raise UserError(
            f"--virtual-mic name {name!r}: use letters, digits, '_', '.' or '-' (at most 64)"
        )
    return name


def pactl(*args: str) -> str:
    """Run ``pactl ARGS``; its stdout, or a UserError with its message."""
    if shutil.which("pactl") is None:
        raise UserError(
            "--virtual-mic needs pactl, which is not installed (Debian/Ubuntu: apt-get install "
            "pulseaudio-utils; Fedora: dnf install pulseaudio-utils)"
        )
    try:
        res = subprocess.run(
            ["pactl", *args], capture_output=True, text=True, timeout=10, check=False
        )
    except subprocess.TimeoutExpired:
        raise UserError(f"pactl {args[0]} did not answer in 10 s (sound server hung?)") from None
    if res.returncode != 0:
        msg = (res.stderr.strip() or res.stdout.strip() or "failed").splitlines()[-1]
        raise UserError(f"pactl {' '.join(args[:2])}: {msg}")
    return res.stdout


def check_server() -> None:
    """A one-line UserError unless a PulseAudio or PipeWire server answers."""
    try:
        pactl("info")
    except UserError as exc:
        if "pactl, which is not installed" in str(exc):
            raise
        raise UserError(
            f"--virtual-mic needs a running PulseAudio or PipeWire (pipewire-pulse) sound "
            f"server, and none is reachable ({exc})"
        ) from None


def our_modules() -> list[tuple[int, str, int]]:
    """Modules loaded by any rtdenoise virtual mic: (index, name, pid), newest first."""
    found = []
    for line in pactl("list", "short", "modules").splitlines():
        parts = line.split("\t")
        if len(parts) >= 3:
            m = _OURS_RE.search(parts[2])
            if m and parts[0].isdigit():
                found.append((int(parts[0]), m.group(1), int(m.group(2))))
    return sorted(found, reverse=True)


def _alive(pid: int) -> bool:
    """True if ``pid`` is a running rtdenoise (as far as this machine can tell)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    cmdline = Path(f"/proc/{pid}/cmdline")
    try:
        return b"rtdenoise" in cmdline.read_bytes()
    except OSError:
        return True


def unload(index: int) -> None:
    try:
        pactl("unload-module", str(index))
    except UserError as exc:  # already gone (server restarted, someone else unloaded it)
        log.debug("unload-module %d: %s", index, exc)


class VirtualMic:
    """Context manager: the modules of one virtual microphone, unloaded on exit."""

    def __init__(self, name: str = DEFAULT_NAME, rate: int = 48000) -> None:
        self.name = check_name(name)
        self.sink = f"{name}_sink"
        self.rate = rate
        self.modules: list[int] = []

    def __enter__(self) -> VirtualMic:
        check_server()
        self.clean_stale()
        props = f"{TAG}={self.name} rtdenoise.pid={os.getpid()}"
        try:
            self.modules.append(self._load(
                "module-null-sink", f"sink_name={self.sink}", f"rate={self.rate}",
                "channels=1", "format=float32le",
                f"sink_properties='device.description=\"{self.name} (rtdenoise output: pick "
                f"the {self.name} microphone instead)\" {props}'",
            ))  # fmt: skip
            self.modules.append(self._load(
                "module-remap-source", f"source_name={self.name}",
                f"master={self.sink}.monitor", "channels=1",
                f"source_properties='device.description=\"{self.name} (denoised microphone)\" "
                f"device.icon_name=audio-input-microphone {props}'",
            ))  # fmt: skip
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _load(self, module: str, *args: str) -> int:
        out = pactl("load-module", module, *args).strip()
        if not out.isdigit():
            raise UserError(f"pactl load-module {module}: unexpected answer {out!r}")
        log.info("loaded %s #%s", module, out)
        return int(out)

    def clean_stale(self) -> None:
        """Unload the modules of earlier runs that were killed; refuse a name in use."""
        for index, name, pid in our_modules():
            if not _alive(pid):
                log.info("unloading module #%d of a killed rtdenoise (pid %d)", index, pid)
                unload(index)
            elif name == self.name:
                raise UserError(
                    f"a virtual microphone named {name!r} is in use by rtdenoise (pid {pid}); "
                    "stop it or pick another name: --virtual-mic NAME"
                )

    def close(self) -> None:
        """Unload what this instance loaded (the source first), once."""
        while self.modules:
            unload(self.modules.pop())

    def output_device(self) -> str:
        """Point the server's clients in this process at our sink; -> PortAudio device."""
        os.environ["PULSE_SINK"] = self.sink
        return PULSE_DEVICE
