"""Shared pytest fixtures."""

import os

# One thread per test process: tests assert invariants, not speed, and CI has two cores.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")


# --------------------------------------------------------------------------- live mode

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def audio_server(tmp_path_factory: pytest.TempPathFactory):
    """A private PulseAudio server with null sinks rtd_in / rtd_out (tests/audio_server.py).

    Started here and torn down at the end of the session; HOME and XDG_RUNTIME_DIR live in a
    temporary folder. Skips only when the pulseaudio binaries are not installed.
    """
    from tests.audio_server import AudioServer, missing_reason

    reason = missing_reason()
    if reason:
        pytest.skip(reason)
    server = AudioServer(tmp_path_factory.mktemp("pulse"))
    server.start()
    try:
        yield server
    finally:
        server.stop()
