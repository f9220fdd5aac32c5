"""The GPU recipe as a lent machine runs it: budgeted, encoded shards that travel with the
repository (64 MiB in all) and ``training/gpu_run.sh`` on an image without soundfile's peers
(no soxr, pesq, pystoi or sounddevice there), rehearsed on the CPU with a tiny setting."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from training import pack

ROOT = Path(__file__).resolve().parent.parent

#: what the GPU image lacks (training/gpu_run.sh): an import of any of them fails there
ABSENT = ("soxr", "pesq", "pystoi", "sounddevice")


def _voice(n: int, f0: float, seed: int) -> np.ndarray:
    t = np.arange(n) / 8000
    ph = 2 * np.pi * np.cumsum(f0 + 8 * np.sin(2 * np.pi * 3 * t)) / 8000
    x = sum(np.sin(k * ph) / k for k in range(1, 12)) * (np.sin(2 * np.pi * 2 * t) > -0.3)
    x = x + 0.01 * np.random.default_rng(seed).standard_normal(n)
    return (0.1 * x).astype(np.float32)


def _corpus(root: Path) -> tuple[Path, Path]:
    """3 speakers x 3 utterances (OGG at 8 kHz, FLAC at 8 kHz, WAV at 16 kHz) and 3 noises."""
    clean, noise = root / "clean", root / "noise"
    clean.mkdir(parents=True)
    noise.mkdir(parents=True)
    for s in range(3):
        for u in range(3):
            x = _voice(6000 + 1500 * u, 100 + 40 * s, 10 * s + u)
            name = clean / f"spk{s}__u{u}"
            if u == 0:
                sf.write(f"{name}.ogg", x, 8000, format="OGG", subtype="OPUS")
            elif u == 1:
                sf.write(f"{name}.flac", x, 8000)
            else:
                sf.write(f"{name}.wav", np.repeat(x, 2), 16000)
    rng = np.random.default_rng(1)
    for i in range(3):
        sf.write(noise / f"n{i}.flac", 0.2 * rng.standard_normal(12000).astype(np.float32), 8000)
    return clean, noise


def test_budgeted_shards_pick_every_speaker_first_and_keep_the_files(tmp_path):
    clean, noise = _corpus(tmp_path / "data")
    # the whole set: every file, its OGG bytes untouched, the others as 8 kHz Opus
    m = pack.pack_budget([clean], [noise], tmp_path / "all", budget_mb=10)
    assert m["encoded"] and m["speech_files"] == 9 and m["noise_files"] == 3
    speech, keys, noises = pack.load_shards(tmp_path / "all")
    assert sorted(keys) == sorted(f"spk{s}" for s in range(3) for _ in range(3))
    assert len(noises) == 3 and all(len(n) == 12000 for n in noises)
    own, _ = sf.read(clean / "spk1__u0.ogg", dtype="float32")  # travelled as its own bytes
    assert any(len(x) == len(own) and np.array_equal(x, own) for x in speech)
    for s in range(3):  # the 16 kHz WAV came back at 8 kHz, its length kept
        assert any(
            len(x) == 6000 + 1500 * 2 for x, k in zip(speech, keys, strict=True) if k == f"spk{s}"
        )
    z = np.load(next((tmp_path / "all").glob("speech-*.npz")))
    assert "blob" in z.files and "audio" not in z.files

    # a budget for about one file per speaker: all three speakers, none twice
    sizes = [len(pack._encode(p, np.zeros(1, np.float32))) for p in sorted(clean.glob("*.ogg"))]
    budget = sum(sizes) * 1.3 / 1e6  # speech only: no noise folders, the whole budget
    m = pack.pack_budget([clean], [], tmp_path / "few", budget_mb=budget, seed=3)
    _, keys, _ = pack.load_shards(tmp_path / "few")
    assert m["speakers"] == 3 and sorted(set(keys)) == ["spk0", "spk1", "spk2"]
    assert len(keys) < 6  # a second file for at most some of them
    total = sum(p.stat().st_size for p in (tmp_path / "few").glob("*.npz"))
    assert total <= budget * 1e6 + 2 * 4096  # the npz headers beside the budget
    # the same seed, the same choice; pure round-robin rule: every group once before twice
    picks = pack._round_robin(["a", "a", "a", "b", "c", "c"], [1] * 6, budget=4, seed=5)
    groups = ["a", "a", "a", "b", "c", "c"]
    assert len(picks) == 4 and {groups[i] for i in picks} == {"a", "b", "c"}
    assert picks == pack._round_robin(groups, [1] * 6, budget=4, seed=5)


@pytest.mark.parametrize("config", ["gpu.json", "gpu_wide3.json"])
def test_gpu_run_script_trains_from_budgeted_shards_without_the_absent_packages(tmp_path, config):
    """``training/gpu_run.sh`` end to end with a tiny model: it trains from the carried shards
    with every package the GPU image lacks made unimportable, and leaves in OUT what comes back
    (resume state, losses, snapshots) for the next session to continue from; ``CONFIG`` picks
    the recipe (the shipped network's, or the third widening's)."""
    clean, noise = _corpus(tmp_path / "data")
    pack.pack_budget([clean], [noise], tmp_path / "shards", budget_mb=1)
    block = tmp_path / "block"
    block.mkdir()
    (block / "sitecustomize.py").write_text(
        "import sys\n"
        f"for name in {ABSENT!r}:\n"
        "    sys.modules[name] = None  # import fails, as on the GPU image\n"
    )
    out, run = tmp_path / "out", tmp_path / "run"
    env = {
        **os.environ,
        "PYTHONPATH": str(block),
        "OUT": str(out),
        "RUN": str(run),
        "MINUTES": "5",
        "WHEELS": str(tmp_path / "no-wheels"),
        "CONFIG": f"training/configs/{config}",
    }
    tiny = [
        f"data.shards={tmp_path / 'shards'}",
        "data.mix.crop_s=0.5",
        "model.widths=[4,6]",
        "model.bottleneck_dilations=[1]",
        "model.codebook_size=16",
        "model.code_dim=4",
        "model.context_frames=16",
        "model.se_min_hidden=2",
        "train.init=null",
        "train.steps=6",
        "train.batch_size=2",
        "train.workers=2",
        "train.stats_examples=2",
        "train.snapshot_every=3",
        "train.log_every=2",
        "train.threads=1",
    ]
    r = subprocess.run(
        ["bash", str(ROOT / "training" / "gpu_run.sh"), *tiny],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    log = (out / "train.log").read_text() if (out / "train.log").exists() else ""
    assert r.returncode == 0, r.stdout + r.stderr + log
    assert {"last.pt", "train.csv", "config.json", "snaps.tar", "train.log"} <= {
        p.name for p in out.iterdir()
    }
    state = torch.load(out / "last.pt", map_location="cpu", weights_only=True)
    assert state["step"] == 6
    with tarfile.open(out / "snaps.tar") as t:
        names = sorted(t.getnames())
    # the snapshots, and the schedule's last step with the average of the snapshots
    assert names == ["avg.pt", "snaps", "snaps/step3.pt", "snaps/step6.pt", "step6.pt"]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["train"]["workers"] == 2 and cfg["data"]["shards"].endswith("shards")
    recipe = json.loads((ROOT / "training" / "configs" / config).read_text())
    assert cfg["loss"] == recipe["loss"] and cfg["seed"] == recipe["seed"]
    # the blocker really blocks: the same interpreter setting cannot import them
    probe = subprocess.run(
        [sys.executable, "-c", "import soxr"], env=env, capture_output=True, text=True
    )
    assert probe.returncode != 0


def test_what_travels_to_the_gpu_machine_fits_its_limit():
    """The repository's tracked files, the budgeted shards of ``make gpu-bundle`` and the wheels
    stay under the 64 MiB that travel with a call (a growing repository would crowd them out)."""
    make = (ROOT / "Makefile").read_text()
    budget_mb = float(make.split("--budget-mb", 1)[1].split()[0])
    tracked = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split("\0")
    repo = sum((ROOT / f).stat().st_size for f in tracked if f and (ROOT / f).is_file())
    wheels = 2e6  # soundfile (with libsndfile), cffi, pycparser: 1.6 MB
    assert repo + budget_mb * 1e6 + wheels + 2 * 4096 < 64 * 2**20 - 2e6, repo / 1e6
