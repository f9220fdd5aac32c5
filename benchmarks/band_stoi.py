"""Where intelligibility is lost: STOI per one-third-octave band, rtdenoise next to its peers.

STOI (Taal et al. 2011) is the mean, over 15 one-third-octave bands (150 Hz to 3.8 kHz) and over
384 ms segments, of the correlation between the clean and the processed band envelopes. This
keeps the band axis: for each system, the mean correlation per band (the bands' mean is STOI,
as pystoi computes it), and the processed level per band relative to the clean speech (dB).
A system that trails another in a few bands says which cues it lacks (e.g. the mid band, where
the second formant lies, at low SNR).

Usage (validation pairs only; ``test`` is for reporting)::

    python -m benchmarks.band_stoi --pairs ../shared/data/corpus/val2/pairs.csv --snr -5 \\
        [--systems rtdenoise-onnx-low rnnoise] [--model-dir DIR] [--json PATH]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from rtdenoise.errors import UserError  # noqa: E402

from .peers import Missing, build_systems  # noqa: E402
from .sets import load_pairs  # noqa: E402


def band_scores(clean: np.ndarray, y: np.ndarray, rate: int) -> tuple[np.ndarray, np.ndarray]:
    """-> (correlation per band [15], processed level minus clean level per band [15], dB);
    empty arrays where pystoi would return its 1e-5 (fewer than 30 speech frames)."""
    from pystoi import utils
    from pystoi.stoi import BETA, DYN_RANGE, FS, N_FRAME, NFFT, OBM, N

    x = utils.resample_oct(clean, FS, rate)
    y = utils.resample_oct(y, FS, rate)
    x, y = utils.remove_silent_frames(x, y, DYN_RANGE, N_FRAME, N_FRAME // 2)
    xs = utils.stft(x, N_FRAME, NFFT, overlap=2).transpose()
    ys = utils.stft(y, N_FRAME, NFFT, overlap=2).transpose()
    if xs.shape[-1] < N:
        return np.zeros(0), np.zeros(0)
    xt = np.sqrt(OBM @ np.abs(xs) ** 2)
    yt = np.sqrt(OBM @ np.abs(ys) ** 2)
    seg_x = np.stack([xt[:, m - N : m] for m in range(N, xt.shape[1] + 1)])
    seg_y = np.stack([yt[:, m - N : m] for m in range(N, xt.shape[1] + 1)])
    eps = np.finfo(np.float64).eps
    scale = np.linalg.norm(seg_x, axis=2, keepdims=True) / (
        np.linalg.norm(seg_y, axis=2, keepdims=True) + eps
    )
    seg_y = np.minimum(seg_y * scale, seg_x * (1 + 10 ** (-BETA / 20)))
    seg_y = seg_y - seg_y.mean(2, keepdims=True)
    seg_x = seg_x - seg_x.mean(2, keepdims=True)
    seg_y /= np.linalg.norm(seg_y, axis=2, keepdims=True) + eps
    seg_x /= np.linalg.norm(seg_x, axis=2, keepdims=True) + eps
    corr = (seg_x * seg_y).sum(2).mean(0)
    level = 10 * np.log10(((yt**2).sum(1) + 1e-12) / ((xt**2).sum(1) + 1e-12))
    return corr, level


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.band_stoi",
        description="STOI per one-third-octave band for rtdenoise and its peers on a pairs file.",
    )
    p.add_argument("--pairs", type=Path, required=True, help="a pairs.csv (validation)")
    p.add_argument("--snr", type=float, nargs="*", help="only pairs at these input SNRs (dB)")
    p.add_argument("--systems", nargs="+", default=["rtdenoise-onnx-low", "rnnoise"])
    p.add_argument("--model-dir", type=Path, help="rtdenoise models from here (default: shipped)")
    p.add_argument("--limit", type=int, help="at most this many pairs")
    p.add_argument("--json", type=Path, help="write the table here")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from pystoi.stoi import CF

    try:
        items = load_pairs(args.pairs, None)
    except (OSError, ValueError, KeyError) as exc:
        raise UserError(f"cannot read pairs {args.pairs}: {exc}") from exc
    if args.snr:
        items = [it for it in items if it.snr in args.snr]
    items = items[: args.limit] if args.limit else items
    systems = [s for s in build_systems(args.systems, args.model_dir) if not isinstance(s, Missing)]
    names = ["noisy"] + [s.name for s in systems]
    corr: dict[str, list[np.ndarray]] = {n: [] for n in names}
    level: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for it in items:
        clean, noisy = it.load()
        outs = {"noisy": noisy} | {s.name: s.process(noisy)[: len(clean)] for s in systems}
        for n, y in outs.items():
            c, lv = band_scores(clean, y, it.rate)
            if c.size:
                corr[n].append(c)
                level[n].append(lv)
    table = {
        n: {
            "corr": np.mean(corr[n], 0).round(4).tolist(),
            "level_db": np.mean(level[n], 0).round(2).tolist(),
            "stoi": round(float(np.mean(corr[n])), 4),
            "files": len(corr[n]),
        }
        for n in names
        if corr[n]
    }
    print(f"{len(items)} pairs; band centres (Hz): " + " ".join(f"{c:5.0f}" for c in CF))
    for n, row in table.items():
        print(f"{n:20s} " + " ".join(f"{v:5.3f}" for v in row["corr"]) + f"  STOI {row['stoi']}")
        print(f"{'  level (dB)':20s} " + " ".join(f"{v:5.1f}" for v in row["level_db"]))
    if args.json:
        out = {"pairs": str(args.pairs), "snr": args.snr, "bands_hz": [float(c) for c in CF]}
        out["systems"] = table
        args.json.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
