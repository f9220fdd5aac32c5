"""The console script: lazy subcommands, and the runtime path works without torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

from rtdenoise.cli import main

# Runs the CLI in a fresh interpreter where `import torch` fails, as on a runtime-only install.
# (An import hook, not sys.modules['torch'] = None: scipy probes sys.modules for torch arrays.)
NO_TORCH = """
import importlib.abc, sys
class _NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "torch":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, _NoTorch())
from rtdenoise.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _run_without_torch(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", NO_TORCH, *args], capture_output=True, text=True, timeout=300
    )


def test_top_level_help_lists_every_subcommand(capsys):
    try:
        main(["--help"])
    except SystemExit as exc:
        assert exc.code == 0
    out = capsys.readouterr().out
    for name in ("file", "live", "export", "eval"):
        assert name in out


def test_file_help_states_the_shipped_models_size(capsys):
    """`rtdenoise file --help` names the default model's parameter count: it must follow the
    shipped checkpoint when the network is widened again (it said 40 k long after 227 k)."""
    import re

    from rtdenoise.model import load_checkpoint, model_complexity

    try:
        main(["file", "--help"])
    except SystemExit as exc:
        assert exc.code == 0
    said = int(re.search(r"(\d+) k parameters", capsys.readouterr().out).group(1))
    root = Path(__file__).resolve().parent.parent
    params = model_complexity(load_checkpoint(root / "rtdenoise/models/lowlat.pt").cfg)["params"]
    assert said == round(params / 1000)


def test_no_command_prints_help_and_fails(capsys):
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().out


def test_file_mode_runs_without_torch(tmp_path: Path):
    rng = np.random.default_rng(0)
    x = (0.1 * rng.standard_normal(8000)).astype(np.float32)
    src, dst = tmp_path / "in.wav", tmp_path / "out.wav"
    sf.write(src, x, 8000, subtype="FLOAT")
    # default processing: the shipped model through ONNX Runtime (identity if none is shipped)
    proc = _run_without_torch("file", "-q", str(src), str(dst))
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    y, sr = sf.read(dst, dtype="float32")
    assert sr == 8000 and y.shape == x.shape
    assert np.all(np.isfinite(y))


def test_torch_subcommand_without_torch_is_one_clear_line(tmp_path: Path):
    proc = _run_without_torch("export", str(tmp_path / "missing.pt"), "-o", str(tmp_path))
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert "rtdenoise[train]" in proc.stderr
