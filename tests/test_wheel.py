"""The wheel works on its own: built, installed into a fresh virtual environment without torch
(runtime dependencies from the package index), it denoises the demo clip from the console
script and from ``import rtdenoise``, with the same result.

Slow (about 30 s: most of it installing numpy, scipy, numba and onnxruntime into the venv);
it runs in ``make test`` like every other test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "examples" / "demo_noisy.wav"

API_CHECK = """
import sys
import numpy as np, soundfile as sf
import rtdenoise
assert "site-packages" in rtdenoise.__file__, rtdenoise.__file__  # the wheel, not the tree
x, sr = sf.read(sys.argv[1], dtype="int16")
y = rtdenoise.denoise(x, sr)
assert y.shape == x.shape and y.dtype == np.float32
cli, _ = sf.read(sys.argv[2], dtype="float32")
err = float(np.abs(y - cli).max())
assert err <= 1.5 / 32768, err  # the file output is PCM_16: equal up to its rounding
from rtdenoise.backends import load_backend
assert load_backend("onnx").network is not None  # the weights sidecar is in the wheel
assert "torch" not in sys.modules
print("api ok", len(x) / sr, "s")
"""


def _run(cmd: list[str | Path], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    res = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    assert res.returncode == 0, f"{cmd[:3]} failed:\n{res.stdout[-2000:]}\n{res.stderr[-4000:]}"
    return res


@pytest.mark.slow
def test_wheel_in_a_fresh_venv_without_torch(tmp_path: Path) -> None:
    # build from a copy of what the wheel is made of: nothing is written into the checkout
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(
        ROOT / "rtdenoise", src / "rtdenoise", ignore=shutil.ignore_patterns("__pycache__")
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    _run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", "dist", src], tmp_path, env
    )
    wheels = list((tmp_path / "dist").glob("rtdenoise-*.whl"))
    assert len(wheels) == 1, wheels

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", venv], tmp_path, env)  # no system site-packages
    py, bin_dir = venv / "bin" / "python", venv / "bin"
    _run([py, "-m", "pip", "install", "-q", wheels[0]], tmp_path, env)
    no_torch = subprocess.run([py, "-c", "import torch"], capture_output=True, env=env)
    assert no_torch.returncode != 0  # the venv really has no torch

    out = tmp_path / "demo_denoised.wav"
    res = _run([bin_dir / "rtdenoise", "file", DEMO, out], tmp_path, env)
    lines = res.stderr.splitlines()
    # a fresh install builds the compiled steps once and says so; numba caches them
    assert len(lines) in (1, 2) and "7.44 s of audio" in lines[-1], res.stderr
    assert len(lines) == 1 or "built the engine's compiled kernels" in lines[0], res.stderr
    again = _run([bin_dir / "rtdenoise", "file", DEMO, out], tmp_path, env)
    assert len(again.stderr.splitlines()) == 1, again.stderr  # loaded, not built again
    res = _run([py, "-c", API_CHECK, DEMO, out], tmp_path, env)
    assert res.stdout.startswith("api ok 7.44"), res.stdout
