"""Score a denoiser: STOI, PESQ-nb, SI-SDR and the seed's NSR, per file and in aggregate.

Inputs are either matching clean/noisy folders (``--clean DIR --noisy DIR``) or a pairs CSV
(``--pairs CSV``, mixed on the fly with the corpus recipe). The denoiser is ``none`` (score
the noisy input), ``rtdenoise`` (the streaming engine, exactly as ``rtdenoise file`` runs it) or
``--denoised DIR`` (any other system's outputs, matched by file name).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from .errors import UserError

SR = 8000


@dataclass(frozen=True)
class Pair:
    """One row of a pairs CSV (paths relative to the CSV's folder)."""

    clean: str
    noise: str
    noise_offset: int
    snr_db: float

    @property
    def name(self) -> str:
        return Path(self.clean).stem


def read_pairs(csv_path: str | Path) -> list[Pair]:
    """Rows of a ``pairs.csv`` (columns clean, noise, noise_offset, snr_db)."""
    path = Path(csv_path)
    if not path.is_file():
        raise UserError(f"pairs CSV not found: {path}")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    try:
        return [
            Pair(r["clean"], r["noise"], int(r["noise_offset"]), float(r["snr_db"])) for r in rows
        ]
    except (KeyError, ValueError) as exc:
        raise UserError(
            f"{path}: expected columns clean,noise,noise_offset,snr_db ({exc})"
        ) from exc


def _read_mono(path: Path) -> np.ndarray:
    x, sr = sf.read(str(path), dtype="float32", always_2d=True)
    if sr != SR:
        import soxr

        x = soxr.resample(x, sr, SR, quality="VHQ")
    return x.mean(axis=1).astype(np.float32)


def mix_pair(
    pair: Pair, root: str | Path, cache: dict[str, np.ndarray] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The corpus README's exact mixing recipe -> (clean [n], noisy [n]) float32, both scaled
    by the same factor so the noisy peak is at most 0.98."""
    root = Path(root)
    cache = {} if cache is None else cache
    if pair.noise not in cache:
        cache[pair.noise] = _read_mono(root / pair.noise)
    c = _read_mono(root / pair.clean)
    n = cache[pair.noise]
    off = pair.noise_offset
    seg = np.resize(n[off : off + len(c)], len(c))
    g = np.sqrt((c**2).mean() / ((seg**2).mean() * 10 ** (pair.snr_db / 10)))
    noisy = c + g * seg
    s = min(1, 0.98 / np.abs(noisy).max())
    return (c * s).astype(np.float32), (noisy * s).astype(np.float32)


def add_arguments(parser) -> None:  # filled in below; keeps the CLI importable meanwhile
    pass


def run(args) -> int:
    raise UserError("rtdenoise eval: not implemented yet")
