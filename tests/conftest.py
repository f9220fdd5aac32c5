"""Shared pytest fixtures."""

import os

# One thread per test process: tests assert invariants, not speed, and CI has two cores.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")
