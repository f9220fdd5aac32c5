"""Checkpoints hold data only: a file that would run code on load is refused, nothing runs."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from rtdenoise.checkpoint import read_checkpoint, to_plain
from rtdenoise.errors import UserError
from rtdenoise.model import DenoiserNet, ModelConfig, load_checkpoint, save_checkpoint

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PT = ROOT / "rtdenoise" / "models" / "default.pt"


class _CreatesFile:
    """Pickles as ``open(target, "w")``: loading it unsafely creates ``target``."""

    def __init__(self, target: Path) -> None:
        self.target = str(target)

    def __reduce__(self) -> tuple:
        return (open, (self.target, "w"))


def malicious_checkpoint(path: Path, target: Path) -> Path:
    """A checkpoint-shaped pickle whose loading (weights_only=False) creates ``target``."""
    torch.save({"config": {}, "state_dict": {}, "extra": _CreatesFile(target)}, path)
    return path


@pytest.fixture
def evil(tmp_path: Path) -> tuple[Path, Path]:
    target = tmp_path / "pwned"
    return malicious_checkpoint(tmp_path / "evil.pt", target), target


def test_the_malicious_file_is_live(tmp_path: Path, evil: tuple[Path, Path]) -> None:
    """Proof that the payload works: the unsafe load the code used to do creates the file."""
    path, _ = evil
    other = tmp_path / "created-by-unsafe-load"
    malicious_checkpoint(path, other)
    torch.load(path, weights_only=False)
    assert other.exists()


def test_read_refuses_code_in_one_line(evil: tuple[Path, Path]) -> None:
    path, target = evil
    for load in (read_checkpoint, load_checkpoint):
        with pytest.raises(UserError) as exc:
            load(path)
        msg = str(exc.value)
        assert "\n" not in msg and "refusing to load" in msg and "calls io.open" in msg
        assert not target.exists()


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "rtdenoise", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=120,
    )


@pytest.mark.parametrize("command", ["file", "export"])
def test_cli_refuses_code_one_line_nothing_created(
    tmp_path: Path, evil: tuple[Path, Path], command: str
) -> None:
    path, target = evil
    src = tmp_path / "in.wav"
    sf.write(src, np.zeros(800, np.float32), 8000)
    before = sorted(os.listdir(tmp_path))
    if command == "file":
        args = ["file", "--backend", "torch", "--model", str(path), str(src), "out.wav"]
    else:
        args = ["export", str(path), "-o", "exported"]
    res = _cli(*args, cwd=tmp_path)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode != 0
    assert len(lines) == 1 and lines[0].startswith("rtdenoise: error: refusing to load"), lines
    assert "Traceback" not in res.stderr
    assert not target.exists()
    assert sorted(os.listdir(tmp_path)) == before  # no output, no folder, no temporary file


def test_garbage_and_missing_files_are_one_line_errors(tmp_path: Path) -> None:
    (tmp_path / "junk.pt").write_bytes(b"\x00not a zip, not a pickle")
    for p in (tmp_path / "junk.pt", tmp_path / "missing.pt"):
        with pytest.raises(UserError) as exc:
            read_checkpoint(p)
        assert "\n" not in str(exc.value)


@dataclasses.dataclass(frozen=True)
class _Cfg:
    sizes: tuple[int, ...] = (1, 2)
    gain: float = 0.5


def test_to_plain_and_saved_extras_load_weights_only(tmp_path: Path) -> None:
    extra = {
        "cfg": _Cfg(),
        "pair": (1, 2.5),
        "np": np.float32(0.25),
        "arr": np.arange(3, dtype=np.float32),
        "run": Path("runs") / "rt",
        "nested": {"a": [np.int64(3), None, True]},
    }
    plain = to_plain(extra)
    assert plain["cfg"] == {"sizes": [1, 2], "gain": 0.5} and plain["pair"] == [1, 2.5]
    assert type(plain["np"]) is float and plain["run"] == os.path.join("runs", "rt")
    assert plain["nested"] == {"a": [3, None, True]} and type(plain["nested"]["a"][0]) is int
    assert torch.equal(plain["arr"], torch.arange(3, dtype=torch.float32))
    with pytest.raises(TypeError, match="cannot store a object"):
        to_plain({"x": object()})

    cfg = ModelConfig(widths=(4, 6), bottleneck_dilations=(1,), codebook_size=8, code_dim=4)
    model = DenoiserNet(cfg)
    save_checkpoint(tmp_path / "m.pt", model, **extra)
    payload = torch.load(tmp_path / "m.pt", weights_only=True)  # would raise on any object
    assert payload["config"]["widths"] == [4, 6]  # lists, as JSON would have them
    back = load_checkpoint(tmp_path / "m.pt")
    assert back.cfg == cfg and back.extra["cfg"] == plain["cfg"]


def test_shipped_checkpoint_loads_weights_only() -> None:
    payload = torch.load(DEFAULT_PT, weights_only=True)
    model = load_checkpoint(DEFAULT_PT)
    state = model.state_dict()
    assert set(state) == set(payload["state_dict"])
    assert all(torch.equal(state[k], v) for k, v in payload["state_dict"].items())
