"""No tracked file names a folder of the machine it was written on.

Paths in configs, docs and results are relative to the repository (``../shared/data/corpus``)
or come from a setting (``--data-root``, ``RTDENOISE_DATA``); an absolute path such as the
checkout's parent folder, the home folder or a temporary folder works on one machine only.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def machine_folders() -> list[str]:
    """This machine's folders that must not appear in tracked files (never "/" itself)."""
    found = {str(ROOT.parent), os.path.expanduser("~"), tempfile.gettempdir(), "/tmp", "/var/tmp"}
    return sorted(f.rstrip("/") for f in found if len(Path(f).parts) > 1)


def machine_path_pattern() -> re.Pattern[bytes]:
    """One of :func:`machine_folders` followed by "/", not inside a longer path or a URL."""
    alternatives = b"|".join(re.escape(f.encode()) for f in machine_folders())
    return re.compile(rb"(?<![\w./:~-])(?:" + alternatives + rb")/")


def tracked_files() -> list[Path]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    out = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    return [ROOT / name for name in out.decode().split("\0") if name]


def test_no_tracked_file_holds_a_machine_path() -> None:
    pattern = machine_path_pattern()
    hits = []
    for path in tracked_files():
        if not path.is_file():  # deleted in the working tree
            continue
        data = path.read_bytes()
        for m in pattern.finditer(data):
            line = data.count(b"\n", 0, m.start()) + 1
            end = data.find(b"\n", m.start())
            text = data[m.start() : end if end >= 0 else None][:80].decode(errors="replace")
            hits.append(f"{path.relative_to(ROOT)}:{line}: {text}")
    assert not hits, "machine paths in tracked files:\n" + "\n".join(hits)


def test_the_check_sees_a_machine_path() -> None:
    """The pattern catches what it is for and leaves URLs and relative paths alone."""
    folder = machine_folders()[0].encode()
    pattern = machine_path_pattern()
    assert pattern.search(b'"val_pairs": "' + folder + b'/shared/x.csv"')
    assert not pattern.search(b'"val_pairs": "../shared/data/corpus/val/pairs.csv"')
    assert not pattern.search(b"see https://example.org" + folder + b"/page")
