"""The data sets the comparison scores, each at its own rate with its own metrics.

* ``seed``: the seed design's three triplets (clean, noisy, the original model's output), 8 kHz;
* ``test``: the corpus's fixed ``test/pairs.csv`` mixtures (README mixing recipe), 8 kHz;
* ``wideband16k``: 60 noisy/clean pairs at 16 kHz (``../shared/data/wideband16k``), scored with
  wideband PESQ: what the full-band output adds above 4 kHz.

An :class:`Item` is one scored file; ``SETS[item.dataset]`` says at which rate it is scored and
with which metrics. Selection helpers (``stratified``, ``balanced_order``, ``pick_examples``)
keep subsets spread over SNR and sources.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from training.data import data_root

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"
#: the corpus: --data-root / $RTDENOISE_DATA, else ../shared/data/corpus beside the repository
DEFAULT_PAIRS = data_root() / "test" / "pairs.csv"
SEED_DIR = SHARED / "seed_samples"
WIDEBAND_DIR = SHARED / "wideband16k"


@dataclass(frozen=True)
class SetSpec:
    """How a data set is scored."""

    name: str
    #: rate of its audio, of the systems' input and output, and of the scores
    rate: int
    #: the intrusive metrics (keys of ``rtdenoise.metrics.score``)
    metrics: tuple[str, ...]
    #: systems run on it (None: every requested one)
    systems: tuple[str, ...] | None = None
    description: str = ""


SETS = {
    "seed": SetSpec("seed", 8000, ("pesq", "stoi", "si_sdr", "nsr"), None, "seed sample files"),
    "test": SetSpec("test", 8000, ("pesq", "stoi", "si_sdr", "nsr"), None, "test/pairs.csv"),
    "wideband16k": SetSpec(
        "wideband16k",
        16000,
        ("pesq_wb", "stoi", "si_sdr", "nsr"),
        (
            "noisy",
            "rtdenoise-onnx-narrowband",
            "rtdenoise-onnx",
            "rnnoise",
            "dfn3",
            "dfn3-12db",
        ),
        "wideband16k (16 kHz pairs)",
    ),
}


@dataclass(frozen=True)
class Item:
    """One scored file: ``clean``/``noisy`` are float32 [n] at its set's rate (loaded lazily)."""

    dataset: str
    id: str
    snr: float | None
    clean_path: str
    noise_path: str = ""
    noise_offset: int = 0
    noisy_path: str = ""
    original_path: str = ""
    #: the speech's source corpus (``clean.csv``'s ``corpus`` column beside a ``pairs.csv``)
    source: str = ""

    @property
    def rate(self) -> int:
        return SETS[self.dataset].rate

    def load(self) -> tuple[np.ndarray, np.ndarray]:
        """-> (clean [n], noisy [n]) float32, mixed with the corpus README recipe if needed."""
        c, sr = sf.read(self.clean_path, dtype="float32")
        if sr != self.rate:
            raise ValueError(f"{self.clean_path}: {sr} Hz, expected {self.rate}")
        if self.noisy_path:
            y, _ = sf.read(self.noisy_path, dtype="float32")
            m = min(len(c), len(y))
            return c[:m], y[:m]
        n, _ = sf.read(self.noise_path, dtype="float32")
        off = self.noise_offset
        seg = np.resize(n[off : off + len(c)], len(c))  # tiles short noise
        g = np.sqrt((c**2).mean() / ((seg**2).mean() * 10 ** (self.snr / 10)))
        noisy = c + g * seg
        s = min(1, 0.98 / np.abs(noisy).max())
        return (c * s).astype(np.float32), (noisy * s).astype(np.float32)

    def original(self, n: int) -> np.ndarray:
        """The seed design's own output for this file, float32 [n]."""
        y, _ = sf.read(self.original_path, dtype="float32")
        out = np.zeros(n, dtype=np.float32)
        out[: min(n, len(y))] = y[:n]
        return out


def speech_sources(split: Path) -> dict[str, str]:
    """``{clean file: corpus}`` from a corpus split's ``clean.csv`` (empty without one): the
    comparison reports each source apart, since a set's mean hides which speech a system
    trails on (short words and continuous sentences differ)."""
    meta = split / "clean.csv"
    if not meta.exists():
        return {}
    with open(meta, newline="") as f:
        return {r["file"]: r["corpus"] for r in csv.DictReader(f) if r.get("corpus")}


def pair_id(base: Path, row: dict) -> str:
    """A pair's id (its cached scores' key): the speech file's stem and the SNR, readable, and
    a digest of the whole recipe (which speech and noise files, links followed, and the noise
    offset), so two pairs files that reuse a name for other audio (a variant of a split written
    beside it) never share cached scores, and two that name the same files do."""
    clean, noise = ((base / row[k]).resolve() for k in ("clean", "noise"))
    recipe = f"{clean}|{noise}|{row['noise_offset']}"
    digest = hashlib.sha1(recipe.encode()).hexdigest()[:8]
    return f"{Path(row['clean']).stem}@{float(row['snr_db']):g}-{digest}"


def readable_id(item_id: str) -> str:
    """An id without the recipe digest :func:`pair_id` appends (titles, file names)."""
    return re.sub(r"-[0-9a-f]{8}$", "", item_id)


def load_pairs(path: Path, limit: int | None) -> list[Item]:
    """Rows of a ``pairs.csv``; ``limit`` picks rows evenly spread within each SNR."""
    if not path.exists():
        raise SystemExit(f"pairs file {path} not found")
    base = path.parent
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    sources = speech_sources(base)
    items = [
        Item(
            dataset="test",
            id=pair_id(base, r),
            snr=float(r["snr_db"]),
            clean_path=str(base / r["clean"]),
            noise_path=str(base / r["noise"]),
            noise_offset=int(r["noise_offset"]),
            source=sources.get(r["clean"], ""),
        )
        for r in rows
    ]
    if limit is None or limit >= len(items):
        return items
    return stratified(items, limit)


def wideband_items(folder: Path, limit: int | None = None) -> list[Item]:
    """The pairs of ``folder/manifest.csv`` (wideband16k); ``limit`` as for :func:`load_pairs`."""
    manifest = folder / "manifest.csv"
    if not manifest.exists():
        raise SystemExit(f"wideband manifest {manifest} not found")
    with open(manifest, newline="") as f:
        rows = list(csv.DictReader(f))
    items = [
        Item(
            dataset="wideband16k",
            id=r["pair_id"],
            snr=float(r["snr_db"]),
            clean_path=str(folder / r["clean"]),
            noisy_path=str(folder / r["noisy"]),
        )
        for r in rows
    ]
    return items if limit is None or limit >= len(items) else stratified(items, limit)


def wideband_example(folder: Path, items: list[Item]) -> Item | None:
    """The wideband pair to show as a spectrogram: 5 dB SNR, the most energy above 4 kHz."""
    with open(folder / "manifest.csv", newline="") as f:
        hf = {r["pair_id"]: float(r["clean_hf_db"]) for r in csv.DictReader(f)}
    cand = [i for i in items if i.snr == 5.0] or items
    return max(cand, key=lambda i: (hf.get(i.id, -99.0), i.id)) if cand else None


def stratified(items: list[Item], n: int) -> list[Item]:
    """``n`` items spread evenly over each SNR group (order of the CSV kept)."""
    groups: dict[float | None, list[int]] = {}
    for i, it in enumerate(items):
        groups.setdefault(it.snr, []).append(i)
    per = {k: n // len(groups) + (j < n % len(groups)) for j, k in enumerate(sorted(groups))}
    keep: set[int] = set()
    for k, idx in groups.items():
        take = min(per[k], len(idx))
        if take:
            pos = np.linspace(0, len(idx) - 1, take).round().astype(int)
            keep.update(idx[p] for p in pos)
    return [items[i] for i in sorted(keep)]


def pick_examples(items: list[Item], n: int) -> list[Item]:
    """Up to ``n`` sentence-length clips for spectrograms: SNR 0/5/10 dB, LibriSpeech and
    Asterisk speech alternating (the FSDD digits are too short to look at)."""
    out = []
    for k, (snr, src) in enumerate(
        zip((0.0, 5.0, 10.0, -5.0, 15.0), ("libri", "ast", "libri", "ast", "libri"), strict=True)
    ):
        if k >= n:
            break
        cand = [i for i in items if i.snr == snr and i.id.startswith(src)]
        cand = cand or [i for i in items if i.snr == snr] or items
        # a sentence of ~3.5 s: long enough to see onsets and pauses, short enough to plot
        out.append(min(cand, key=lambda i: (abs(sf.info(i.clean_path).duration - 3.5), i.id)))
    return out


def seed_items() -> list[Item]:
    """The seed design's three triplets (clean, noisy, the original model's output)."""
    noisy = {1: "noisy_audio1.wav", 2: "noised_audio2.wav", 3: "noised_audio3.wav"}
    out = []
    for k, name in noisy.items():
        paths = [
            SEED_DIR / f"good_audio{k}.wav",
            SEED_DIR / name,
            SEED_DIR / f"denoised_audio{k}.wav",
        ]
        if not all(p.exists() for p in paths):
            log.warning("seed triplet %d incomplete under %s; skipped", k, SEED_DIR)
            continue
        out.append(
            Item(
                dataset="seed",
                id=f"audio{k}",
                snr=None,
                clean_path=str(paths[0]),
                noisy_path=str(paths[1]),
                original_path=str(paths[2]),
            )
        )
    return out


def balanced_order(items: list[Item], seed: int = 0) -> list[Item]:
    """The same items, ordered so that every prefix is spread over SNR and sources (a run cut
    short by ``--deadline`` still scores a balanced subset)."""
    rng = np.random.default_rng(seed)
    groups: dict[float | None, list[Item]] = {}
    for it in items:
        groups.setdefault(it.snr, []).append(it)
    perm = {k: [g[i] for i in rng.permutation(len(g))] for k, g in sorted(groups.items())}
    out = []
    for j in range(max((len(g) for g in perm.values()), default=0)):
        out += [g[j] for g in perm.values() if j < len(g)]
    return out
