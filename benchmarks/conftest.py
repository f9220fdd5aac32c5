"""Benchmarks run on one thread; the results carry the thread settings and library versions.

Run with ``python -m pytest benchmarks --benchmark-only -s`` (add ``--benchmark-autosave`` or
``--benchmark-json PATH`` to keep the results: pytest-benchmark stores machine_info with them).
"""

from __future__ import annotations

import importlib.metadata
import os

THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS")
for _var in THREAD_VARS:
    os.environ.setdefault(_var, "1")

PACKAGES = ("rtdenoise", "numpy", "scipy", "numba", "onnxruntime", "torch", "soxr", "soundfile")


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "missing"


def pytest_benchmark_update_machine_info(config, machine_info):  # noqa: ARG001
    machine_info["threads"] = {v: os.environ.get(v) for v in THREAD_VARS}
    machine_info["cpu_count"] = os.cpu_count()
    machine_info["load_avg"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    machine_info["versions"] = {p: _version(p) for p in PACKAGES}
