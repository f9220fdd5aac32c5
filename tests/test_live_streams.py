"""The streams of live mode: a stream whose xruns repeat is reopened with a larger buffer,
and with its previous one again once it has been calm for a while.

A fake sounddevice module records what was opened; the engine's xrun counters and the clock
are driven by hand. Invariants: XRUN_REPEAT xruns of one direction within the window reopen
that stream (only that one) with twice the device latency (at least MIN_GROWN_LATENCY_S), up to
the cap; the replaced stream's finished callback does not stop the run, the new one's does; a
grown stream (or one opened for a busy machine) goes back one step at a time to the buffer
asked for after SHRINK_AFTER_S without xruns, and waits twice as long before the next try when
the xruns came back soon after a shrink; "busy" is the median runnable count filling the CPUs.
"""

from __future__ import annotations

import io

import pytest

from rtdenoise import live_streams
from rtdenoise.devices import Device
from rtdenoise.live_streams import (
    BUSY_LATENCY_S,
    MAX_DEVICE_LATENCY_S,
    MIN_GROWN_LATENCY_S,
    REOPEN_GRACE_S,
    SHRINK_AFTER_S,
    XRUN_REPEAT,
    XRUN_WINDOW_S,
    LiveStreams,
    machine_busy,
)
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


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """live_streams' monotonic clock, set by the test: ``clock[0] += seconds``."""
    now = [100.0]
    monkeypatch.setattr(live_streams.time, "monotonic", lambda: now[0])
    return now


def _grown(latency: float) -> float:
    return min(MAX_DEVICE_LATENCY_S, max(MIN_GROWN_LATENCY_S, 2 * latency))


def test_repeated_output_xruns_reopen_the_output_with_twice_the_buffer(clock: list[float]) -> None:
    streams, engine = _streams()
    first_in, first_out = streams.streams

    def xrun(name: str, gap: float) -> str | None:
        engine.stats.flags[name] = engine.stats.flags.get(name, 0) + 1
        clock[0] += gap
        return streams.check_xruns()

    apart = [xrun("output_underflow", XRUN_WINDOW_S + 1) for _ in range(XRUN_REPEAT + 1)]
    assert apart == [None] * (XRUN_REPEAT + 1)  # too far apart
    said = [xrun("output_underflow", 0.6) for _ in range(XRUN_REPEAT - 1)]
    want = _grown(0.015)
    assert f"output stream with a {1000 * want:.0f} ms device buffer" in said[-1]
    assert streams.streams[0] is first_in and streams.streams[1] is not first_out
    assert first_out.closed and streams.streams[1].started
    assert streams.streams[1].latency == pytest.approx(want) and streams.grown == [0, 1]
    assert not streams.ended and not engine.stop_event.is_set()  # the old one's end is ours
    grows = 1
    while want < MAX_DEVICE_LATENCY_S:
        want, grows = _grown(want), grows + 1
    for _ in range(8):  # more xruns: doubled each time, up to the cap, then left alone
        for _ in range(XRUN_REPEAT):
            xrun("output_underflow", 0.6)
    assert streams.streams[1].latency == pytest.approx(MAX_DEVICE_LATENCY_S)
    assert streams.grown[1] == grows
    streams.streams[1].finished()  # a device failure ends the current stream: the run stops
    assert streams.ended and engine.stop_event.is_set()


def test_repeated_input_overflows_reopen_the_input() -> None:
    streams, engine = _streams()
    for _ in range(XRUN_REPEAT):
        engine.stats.flags["input_overflow"] = engine.stats.flags.get("input_overflow", 0) + 1
        said = streams.check_xruns()
    assert "input stream" in said and streams.grown == [1, 0]


def test_a_calm_grown_stream_shrinks_back_step_by_step_and_backs_off(clock: list[float]) -> None:
    streams, engine = _streams()

    def wait(seconds: float) -> str | None:  # the main loop checks every 50 ms
        said = None
        end = clock[0] + seconds
        while clock[0] < end and said is None:
            clock[0] += 0.05
            said = streams.check_xruns()
        return said

    def burst() -> str | None:  # output xruns, enough to grow, 0.3 s apart
        said = None
        for _ in range(XRUN_REPEAT):
            flags = engine.stats.flags
            flags["output_underflow"] = flags.get("output_underflow", 0) + 1
            said = wait(0.3) or said
        return said

    def latency() -> float:
        return streams.streams[1].latency

    one, two = _grown(0.015), _grown(_grown(0.015))
    assert f"{1000 * one:.0f} ms" in burst()
    wait(1.0)
    assert f"{1000 * two:.0f} ms" in burst()  # 15 -> one -> two
    # the new stream's start-up flags are not load
    engine.stats.flags["output_underflow"] += XRUN_REPEAT + 1
    clock[0] += REOPEN_GRACE_S / 2
    assert streams.check_xruns() is None
    assert wait(SHRINK_AFTER_S - 1) is None and latency() == pytest.approx(two)
    said = wait(2)
    assert f"{1000 * one:.0f} ms device buffer again" in said and latency() == pytest.approx(one)
    assert wait(SHRINK_AFTER_S - 1) is None
    assert "15 ms" in wait(2) and latency() == pytest.approx(0.015)
    assert streams.grown == [0, 2] and streams.shrunk == [0, 2]
    # xruns again soon after the shrink: grow, and wait twice as long before trying again
    assert wait(SHRINK_AFTER_S / 2) is None
    assert f"{1000 * one:.0f} ms" in burst()
    assert wait(2 * SHRINK_AFTER_S - 1) is None and latency() == pytest.approx(one)
    said = wait(2)
    assert "15 ms" in said and "again" in said
    assert wait(5 * SHRINK_AFTER_S) is None  # as asked for: stays
    assert streams.grown == [0, 3] and streams.shrunk == [0, 3]
    assert not streams.ended and not engine.stop_event.is_set()
    assert streams.streams[0].latency == pytest.approx(0.015)  # the input was never touched


def test_a_busy_start_goes_back_to_the_latency_asked_for_once_calm(clock: list[float]) -> None:
    """Opened with the busy machine's buffers, each stream goes back to the calm latency
    after SHRINK_AFTER_S without an xrun (as if it had grown from there), not before."""
    engine = make_engine()
    devs = (Device(1, "in", "ALSA", 1, 8000.0), Device(2, "out", "ALSA", 1, 8000.0))
    busy = (BUSY_LATENCY_S, BUSY_LATENCY_S)
    streams = LiveStreams(_SoundDevice, engine, devs, 8000, 64, busy, (0.005, 0.015))
    streams.start()
    assert [s.latency for s in streams.streams] == pytest.approx([BUSY_LATENCY_S] * 2)
    said = []
    while clock[0] < 100.0 + 2 * SHRINK_AFTER_S:
        clock[0] += 0.05
        said.append(streams.check_xruns())
        if clock[0] < 100.0 + SHRINK_AFTER_S - 0.1:
            assert said[-1] is None
    assert [s.latency for s in streams.streams] == pytest.approx([0.005, 0.015])
    assert streams.shrunk == [1, 1] and streams.grown == [0, 0]


@pytest.mark.parametrize(("running", "cpus", "busy"), [([1, 1, 9, 1, 1], 2, False),
                                                       ([3, 3, 1, 3, 4], 2, True),
                                                       ([3, 3, 3, 3, 3], 4, False)])  # fmt: skip
def test_the_machine_is_busy_when_the_other_runnable_tasks_fill_every_cpu(
    monkeypatch: pytest.MonkeyPatch, running: list[int], cpus: int, busy: bool
) -> None:
    """The median of the kernel's runnable count, less the thread asking (one spike does
    not make a machine busy)."""
    readings = iter(running)

    def fake_open(path: str, *args: object, **kwargs: object) -> object:
        assert path == "/proc/stat"
        return io.StringIO(f"cpu  1 2 3\nprocs_running {next(readings)}\nprocs_blocked 0\n")

    monkeypatch.setattr("builtins.open", fake_open)
    monkeypatch.setattr(live_streams.os, "cpu_count", lambda: cpus)
    assert machine_busy(samples=len(running), interval=0.0)[0] == busy
