"""Audio devices for live mode: PortAudio import, listing, selection and error messages.

Everything here turns PortAudio's failures into one-line :class:`UserError` messages that say
what to do (install PortAudio, list the devices, pick another rate...). ``sounddevice`` is
imported lazily so that ``rtdenoise file`` never needs PortAudio.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from types import ModuleType
from typing import Literal

from .errors import UserError

log = logging.getLogger(__name__)

Kind = Literal["input", "output"]

#: names that mean "the system default device" for each direction
DEFAULT_ALIASES: dict[str, tuple[str, ...]] = {
    "input": ("mic", "default"),
    "output": ("speakers", "default"),
}

LIST_HINT = "run 'rtdenoise live -l' to list the devices"

# PortAudio error codes (portaudio.h, PaErrorCode)
_PA_INVALID_CHANNEL_COUNT = -9998
_PA_INVALID_SAMPLE_RATE = -9997
_PA_INVALID_DEVICE = -9996
_PA_SAMPLE_FORMAT_NOT_SUPPORTED = -9994
_PA_BAD_IO_DEVICE_COMBINATION = -9993
_PA_DEVICE_UNAVAILABLE = -9985


def import_sounddevice() -> ModuleType:
    """``import sounddevice``, or a UserError that names the system package to install."""
    try:
        import sounddevice
    except OSError as exc:  # the Python package is there, the PortAudio library is not
        raise UserError(
            f"PortAudio is not available ({exc}); install the system package libportaudio2 "
            "(Debian/Ubuntu: apt-get install libportaudio2; Fedora: dnf install portaudio; "
            "macOS: brew install portaudio)"
        ) from exc
    except ImportError as exc:
        raise UserError(
            f"the Python package sounddevice is missing ({exc}); pip install sounddevice"
        ) from exc
    return sounddevice


@dataclass(frozen=True)
class Device:
    """One PortAudio device as chosen for one direction."""

    index: int
    name: str
    hostapi: str
    channels: int  # max channels in the chosen direction
    default_samplerate: float


def list_devices() -> str:
    """The device table as ``sounddevice`` prints it (``>``/``<`` mark default in/out)."""
    sd = import_sounddevice()
    devices = sd.query_devices()
    if len(devices) == 0:
        raise UserError(_no_devices_message())
    return str(devices)


def _no_devices_message() -> str:
    return (
        "no audio devices found (no sound card, or the sound server is not running or not "
        "reachable from this process)"
    )


def _device(sd: ModuleType, index: int, kind: Kind) -> Device:
    info = sd.query_devices(index)
    hostapi = sd.query_hostapis(info["hostapi"])["name"]
    return Device(
        index=index,
        name=info["name"],
        hostapi=hostapi,
        channels=int(info[f"max_{kind}_channels"]),
        default_samplerate=float(info["default_samplerate"]),
    )


def resolve_device(spec: str | int, kind: Kind) -> Device:
    """Pick a device for ``kind`` from a CLI spec.

    ``spec``: ``mic``/``speakers``/``default`` (system default), an index, or a case-insensitive
    substring of the device name (an exact name wins over substrings; several substring matches
    are an error that names them).
    """
    sd = import_sounddevice()
    devices = sd.query_devices()
    if len(devices) == 0:
        raise UserError(_no_devices_message())
    key = f"max_{kind}_channels"
    text = str(spec).strip()

    if text.lower() in DEFAULT_ALIASES[kind]:
        index = sd.default.device[0 if kind == "input" else 1]
        if index is None or index < 0:
            try:
                index = sd.query_devices(kind=kind)["index"]
            except (sd.PortAudioError, ValueError, KeyError) as exc:
                raise UserError(
                    f"there is no default {kind} device; {LIST_HINT} and pick one with --{kind}"
                ) from exc
    elif text.lstrip("-").isdigit():
        index = int(text)
        if not 0 <= index < len(devices):
            raise UserError(f"no audio device with index {index}; {LIST_HINT}")
    else:
        lowered = text.lower()
        capable = [d for d in devices if d[key] > 0]
        exact = [d for d in capable if d["name"].lower() == lowered]
        matches = exact or [d for d in capable if lowered in d["name"].lower()]
        if not matches:
            raise UserError(f"no {kind} device matches {text!r}; {LIST_HINT}")
        if len(matches) > 1:
            names = ", ".join(f"{d['index']}: {d['name']!r}" for d in matches)
            raise UserError(
                f"{text!r} matches several {kind} devices ({names}); "
                "give an index or a longer part of the name"
            )
        index = matches[0]["index"]

    device = _device(sd, int(index), kind)
    if device.channels < 1:
        raise UserError(f"device {device.index} ({device.name!r}) has no {kind} channels")
    return device


def check_settings(
    input_device: Device, output_device: Device, samplerate: float, channels: int = 1
) -> None:
    """Ask PortAudio whether both devices accept ``samplerate`` (a UserError if not)."""
    sd = import_sounddevice()
    for device, check, kind in (
        (input_device, sd.check_input_settings, "input"),
        (output_device, sd.check_output_settings, "output"),
    ):
        try:
            check(device=device.index, samplerate=samplerate, channels=channels, dtype="float32")
        except sd.PortAudioError as exc:
            raise portaudio_user_error(exc, device, samplerate, kind) from exc


#: the rate live mode opens its streams at unless told otherwise, where the devices accept it:
#: the native rate of PipeWire, of PulseAudio's sinks on most hardware and of most codecs (no
#: resampling in the sound server, whose ALSA plugin reports 44100 Hz as its default), and 6x
#: the engine's 8 kHz (one STFT hop is exactly 186 samples)
PREFERRED_RATE = 48000


def default_rate(devices_: list[tuple[Device, Kind]]) -> int:
    """PREFERRED_RATE if every ``(device, kind)`` accepts it, else the first device's default
    rate (each device is checked at the rate it is opened with later)."""
    sd = import_sounddevice()
    checks = {"input": sd.check_input_settings, "output": sd.check_output_settings}
    try:
        for device, kind in devices_:
            checks[kind](device=device.index, samplerate=PREFERRED_RATE, channels=1,
                         dtype="float32")  # fmt: skip
    except sd.PortAudioError:
        return int(devices_[0][0].default_samplerate)
    return PREFERRED_RATE


def portaudio_user_error(
    exc: Exception, device: Device | None, samplerate: float | None, kind: str = "device"
) -> UserError:
    """One line for a PortAudio failure while checking or opening a stream."""
    code = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], int) else None
    what = f"{kind} device {device.index} ({device.name!r})" if device else f"the {kind} device"
    if code == _PA_INVALID_SAMPLE_RATE:
        return UserError(
            f"{what} does not support a sample rate of {samplerate:.0f} Hz "
            f"(its default is {device.default_samplerate:.0f} Hz; omit --samplerate to use it)"
            if device
            else f"unsupported sample rate {samplerate:.0f} Hz"
        )
    if code == _PA_DEVICE_UNAVAILABLE:
        return UserError(f"{what} is busy (another program is using it); close it or pick another")
    if code in (_PA_INVALID_CHANNEL_COUNT, _PA_SAMPLE_FORMAT_NOT_SUPPORTED):
        return UserError(f"{what} does not support mono float32 audio ({exc.args[0]})")
    if code in (_PA_INVALID_DEVICE, _PA_BAD_IO_DEVICE_COMBINATION):
        return UserError(f"{what} cannot be used here ({exc.args[0]}); {LIST_HINT}")
    return UserError(f"audio error on {what}: {exc.args[0] if exc.args else exc}")
