"""A variant of a ``pairs.csv`` split whose speech has a strong fundamental.

The test split's IVR voice is where the model trails RNNoise most, and what predicted it per
utterance was the level of 80-250 Hz against 300-1000 Hz (model card). To test that as a cause
on held-out speech this writes every ``--every``-th pair of a split with its speech through one
fixed peaking filter (``training.augment.peaking``, default +9 dB at 140 Hz, Q 0.8, then scaled
back to the original RMS), the same noise, offset and SNR, so the variant and the original
compare pair by pair::

    python -m benchmarks.voice_variant --pairs ../shared/data/corpus/val2/pairs.csv --out runs/vb
    python -m benchmarks.paired shipped rnnoise --pairs runs/vb/pairs.csv

``--out`` gets ``clean/*.wav``, ``pairs.csv`` (the variant), ``original.csv`` (the same rows of
the split, readable from ``--out`` through the ``noise`` and ``clean_original`` links).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import lfilter

from training.augment import peaking


def write_variant(
    pairs: Path, out: Path, every: int = 2, f0_hz: float = 140.0, gain_db: float = 9.0,
    q: float = 0.8,
) -> int:  # fmt: skip
    """Write the variant of every ``every``-th row of ``pairs`` under ``out``; returns the rows."""
    base = pairs.parent.resolve()
    with open(pairs, newline="") as f:
        rows = list(csv.DictReader(f))[::every]
    if not rows:
        raise SystemExit(f"no pairs in {pairs}")
    (out / "clean").mkdir(parents=True, exist_ok=True)
    for name, target in (("noise", base / "noise"), ("clean_original", base / "clean")):
        link = out / name
        if not link.exists():
            link.symlink_to(target, target_is_directory=True)
    b, a = peaking(f0_hz, gain_db, q)
    variant, original = [], []
    for r in rows:
        x, sr = sf.read(base / r["clean"], dtype="float32")
        y = lfilter(b, a, x)
        y *= np.sqrt(np.mean(x.astype(np.float64) ** 2) / (np.mean(y**2) + 1e-20))
        y /= max(1.0, float(np.max(np.abs(y))) / 0.99)
        name = f"clean/{Path(r['clean']).stem}.wav"
        sf.write(out / name, y.astype(np.float32), sr)
        variant.append({**r, "clean": name})
        original.append({**r, "clean": "clean_original/" + r["clean"].split("/", 1)[-1]})
    for file, table in (("pairs.csv", variant), ("original.csv", original)):
        with open(out / file, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(table[0]))
            w.writeheader()
            w.writerows(table)
    return len(rows)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", type=Path, required=True, help="a split's pairs.csv")
    p.add_argument("--out", type=Path, required=True, help="folder to write the variant to")
    p.add_argument("--every", type=int, default=2, help="keep every N-th pair")
    p.add_argument("--f0", type=float, default=140.0, help="peak frequency, Hz")
    p.add_argument("--gain-db", type=float, default=9.0, help="peak gain, dB")
    p.add_argument("--q", type=float, default=0.8, help="peak Q")
    a = p.parse_args(argv)
    n = write_variant(a.pairs, a.out, a.every, a.f0, a.gain_db, a.q)
    print(f"{n} pairs -> {a.out / 'pairs.csv'} (originals: {a.out / 'original.csv'})")


if __name__ == "__main__":
    main()
