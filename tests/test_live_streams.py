"""The streams of live mode: a stream whose xruns repeat is reopened with a larger buffer.

A fake sounddevice module records what was opened; the engine's xrun counters are driven by
hand. Invariants: three xruns of one direction within the window reopen that stream (only
that one) with twice the device latency, up to the cap; the replaced stream's finished
callback does not stop the run, the new one's does.
"""

from __future__ import annotations

import pytest

from rtdenoise import live_streams
from rtdenoise.devices import Device
from rtdenoise.live_streams import MAX_DEVICE_LATENCY_S, LiveStreams
from tests.live_sim import make_engine


class _Stream:
    def __init__(self, latency: float | str, finished_callback, **kwargs: object) -> None:
        self.latency = 0.015 if isinstance(latency, str) else float(latency)
        self.finished = finished_callback
        self.kwargs = kwargs
        self.started = self.closed = False

    def start(self) -> None:
        self.started = True

    def abort(self, ignore_errors: bool = True) -> None:
        self.started = False

    def close(self, ignore_errors: bool = True) -> None:
        self.closed = True
        self.finished()  # PortAudio calls it when a stream ends, also when we end it


class _SoundDevice:
    class PortAudioError(Exception):
        pass

    InputStream = OutputStream = _Stream


def _streams() -> tuple[LiveStreams, object]:
    engine = make_engine()
    devs = (Device(1, "in", "ALSA", 1, 8000.0), Device(2, "out", "ALSA", 1, 8000.0))
    streams = LiveStreams(_SoundDevice, engine, devs, 8000, 64, 0.015)
    streams.start()
    return streams, engine


def test_repeated_output_xruns_reopen_the_output_with_twice_the_buffer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [100.0]
    monkeypatch.setattr(live_streams.time, "monotonic", lambda: clock[0])
    streams, engine = _streams()
    first_in, first_out = streams.streams

    def xrun(name: str, gap: float) -> str | None:
        engine.stats.flags[name] = engine.stats.flags.get(name, 0) + 1
        clock[0] += gap
        return streams.check_xruns()

    assert [xrun("output_underflow", 6.0) for _ in range(3)] == [None] * 3  # too far apart
    said = [xrun("output_underflow", 0.5) for _ in range(2)]
    assert said[0] is None and "output stream with a 30 ms device buffer" in said[1]
    assert streams.streams[0] is first_in and streams.streams[1] is not first_out
    assert first_out.closed and streams.streams[1].started
    assert streams.streams[1].latency == pytest.approx(0.030) and streams.grown == [0, 1]
    assert not streams.ended and not engine.stop_event.is_set()  # the old one's end is ours
    for _ in range(8):  # more xruns: doubled each time, up to the cap, then left alone
        for _ in range(3):
            xrun("output_underflow", 0.1)
    assert streams.streams[1].latency == pytest.approx(MAX_DEVICE_LATENCY_S)
    assert streams.grown[1] == 4  # 15 -> 30 -> 60 -> 120 -> 200 ms
    streams.streams[1].finished()  # a device failure ends the current stream: the run stops
    assert streams.ended and engine.stop_event.is_set()


def test_repeated_input_overflows_reopen_the_input() -> None:
    streams, engine = _streams()
    for _ in range(3):
        engine.stats.flags["input_overflow"] = engine.stats.flags.get("input_overflow", 0) + 1
        said = streams.check_xruns()
    assert "input stream" in said and streams.grown == [1, 0]
