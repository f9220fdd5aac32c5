"""Score a denoiser: STOI, PESQ-nb, SI-SDR and the seed's NSR, per file and in aggregate.

Inputs are either matching clean/noisy folders (``--clean DIR --noisy DIR``) or a pairs CSV
(``--pairs CSV``, mixed on the fly with the corpus recipe). The denoiser is ``none`` (score
the noisy input), ``rtdenoise`` (the streaming engine, exactly as ``rtdenoise file`` runs it:
the shipped low-latency model unless ``--latency-mode standard`` or ``--model`` says otherwise)
or ``--denoised DIR`` (any other system's outputs, matched by file name).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from .errors import UserError
from .file_mode import add_processing_arguments

SR = 8000
log = logging.getLogger(__name__)


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


# --------------------------------------------------------------------------- items


@dataclass
class Item:
    """One scored example: a name, its SNR group (if known) and how to get clean/noisy audio."""

    name: str
    group: str
    clean_path: Path | None = None
    noisy_path: Path | None = None
    pair: Pair | None = None


def items_from_pairs(csv_path: str | Path) -> list[Item]:
    return [Item(p.name, f"{p.snr_db:g} dB", pair=p) for p in read_pairs(csv_path)]


def _audio_files(d: Path) -> dict[str, Path]:
    return {
        str(p.relative_to(d).with_suffix("")): p
        for p in sorted(d.rglob("*"))
        if p.suffix.lower() in (".wav", ".flac", ".ogg")
    }


def items_from_dirs(clean: str | Path, noisy: str | Path) -> list[Item]:
    """Clean/noisy folders matched by relative path without extension (or two single files)."""
    clean, noisy = Path(clean), Path(noisy)
    if clean.is_file() and noisy.is_file():
        return [Item(noisy.stem, "all", clean, noisy)]
    for d in (clean, noisy):
        if not d.is_dir():
            raise UserError(f"not a directory (or both files): {d}")
    c, n = _audio_files(clean), _audio_files(noisy)
    common = sorted(set(c) & set(n))
    if not common:
        raise UserError(f"no matching file names between {clean} and {noisy}")
    missing = len(set(c) ^ set(n))
    if missing:
        log.warning("%d files have no counterpart and are skipped", missing)
    return [Item(k, "all", c[k], n[k]) for k in common]


def evenly_spaced(items: list, n: int | None) -> list:
    """``n`` items evenly spaced over the list (keeps sources and SNR groups represented)."""
    if n is None or n >= len(items):
        return items
    idx = np.unique(np.linspace(0, len(items) - 1, n).round().astype(int))
    return [items[i] for i in idx]


# --------------------------------------------------------------------------- scoring

METRICS = ("pesq", "stoi", "si_sdr", "nsr")


def aggregate(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Mean of each metric (nan-aware, with the count) overall and per group."""
    groups: dict[str, list[dict]] = {"all": rows}
    for r in rows:
        if r["group"] != "all":
            groups.setdefault(r["group"], []).append(r)

    def mean(rs: list[dict]) -> dict[str, float]:
        out: dict[str, float] = {"n": float(len(rs))}
        for m in METRICS + ("lag",):
            v = np.array([r[m] for r in rs], dtype=float)
            out[m] = float(np.nanmean(v)) if np.isfinite(v).any() else math.nan
        return out

    def order(k: str) -> tuple[int, float]:
        try:
            return (1, float(k.split()[0]))
        except ValueError:
            return (0, 0.0)

    return {k: mean(groups[k]) for k in sorted(groups, key=order)}


def format_table(agg: dict[str, dict[str, float]], title: str) -> str:
    lines = [
        title,
        f"{'group':>10} {'n':>5} {'PESQ-nb':>8} {'STOI':>7} {'SI-SDR':>8} {'NSR dB':>8}",
    ]
    for k, a in agg.items():
        lines.append(
            f"{k:>10} {int(a['n']):>5} {a['pesq']:>8.3f} {a['stoi']:>7.3f} "
            f"{a['si_sdr']:>8.2f} {a['nsr']:>8.2f}"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_argument_group("input (one of)")
    src.add_argument("--pairs", metavar="CSV", help="pairs CSV (clean,noise,noise_offset,snr_db)")
    src.add_argument("--clean", metavar="DIR", help="clean references (folder or one file)")
    src.add_argument("--noisy", metavar="DIR", help="noisy inputs matching --clean by name")
    den = parser.add_argument_group("denoiser")
    den.add_argument(
        "--denoiser",
        choices=("none", "rtdenoise"),
        default="rtdenoise",
        help="none: score the noisy input; rtdenoise: the streaming engine (default)",
    )
    den.add_argument(
        "--denoised",
        metavar="DIR",
        help="score another system's outputs: DIR/<name>.{wav,flac,ogg} (overrides --denoiser)",
    )
    add_processing_arguments(den, passthrough=False)
    parser.add_argument("--with-noisy", action="store_true", help="also score the noisy input")
    parser.add_argument("--limit", type=int, metavar="N", help="N evenly spaced items only")
    parser.add_argument("--max-lag", type=int, default=800, help="alignment search, samples")
    parser.add_argument("--json", metavar="PATH", help="write per-file and aggregate results")
    parser.add_argument("--write-noisy", metavar="DIR", help="also save the noisy inputs (wav)")
    parser.add_argument("--write-denoised", metavar="DIR", help="also save the outputs (wav)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    parser.add_argument("-v", "--verbose", action="count", default=0)


def _load_denoised(d: Path, name: str) -> np.ndarray:
    for ext in (".wav", ".flac", ".ogg"):
        p = d / f"{name}{ext}"
        if p.is_file():
            return _read_mono(p)
    raise UserError(f"no denoised file for {name!r} in {d}")


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from . import metrics

    if args.pairs:
        if args.clean or args.noisy:
            raise UserError("use either --pairs or --clean/--noisy, not both")
        items, root = items_from_pairs(args.pairs), Path(args.pairs).parent
    elif args.clean and args.noisy:
        items, root = items_from_dirs(args.clean, args.noisy), None
    else:
        raise UserError("give --pairs CSV, or --clean and --noisy")
    items = evenly_spaced(items, args.limit)
    processor = None
    system = args.denoiser
    if args.denoised:
        system = f"outputs in {args.denoised}"
        if not Path(args.denoised).is_dir():
            raise UserError(f"not a directory: {args.denoised}")
    elif args.denoiser == "rtdenoise":
        from .backends import DEFAULT_LATENCY_MODE
        from .file_mode import DEFAULT_MODEL, processor_from_args

        processor = processor_from_args(args)
        if processor is None:
            raise UserError(f"no trained model to evaluate ({DEFAULT_MODEL} missing)")
        mode = args.latency_mode or DEFAULT_LATENCY_MODE
        shipped = "low-latency model" if mode == "low" else f"{mode} model"
        system = f"rtdenoise ({args.backend}: {args.model or shipped})"
    for d in (args.write_noisy, args.write_denoised):
        if d:
            Path(d).mkdir(parents=True, exist_ok=True)

    cache: dict[str, np.ndarray] = {}
    rows: list[dict] = []
    noisy_rows: list[dict] = []
    for it in tqdm(items, desc="eval", disable=args.quiet, mininterval=2):
        if it.pair is not None:
            clean, noisy = mix_pair(it.pair, root, cache)
        else:
            clean, noisy = _read_mono(it.clean_path), _read_mono(it.noisy_path)
        if args.write_noisy:
            sf.write(Path(args.write_noisy) / f"{it.name}.wav", noisy, SR, subtype="FLOAT")
        if args.denoised:
            out = _load_denoised(Path(args.denoised), it.name)
        elif processor is not None:
            from .file_mode import denoise_array

            out = denoise_array(noisy, SR, processor)
        else:
            out = noisy
        if args.write_denoised:
            sf.write(Path(args.write_denoised) / f"{it.name}.wav", out, SR, subtype="FLOAT")
        rows.append(
            {"name": it.name, "group": it.group, **metrics.score(clean, out, SR, args.max_lag)}
        )
        if args.with_noisy and out is not noisy:
            s = metrics.score(clean, noisy, SR, args.max_lag)
            noisy_rows.append({"name": it.name, "group": it.group, **s})

    result: dict = {"system": system, "files": rows, "aggregate": aggregate(rows)}
    print(format_table(result["aggregate"], f"{system}: {len(rows)} files"))
    if noisy_rows:
        result["noisy"] = {"files": noisy_rows, "aggregate": aggregate(noisy_rows)}
        print()
        print(format_table(result["noisy"]["aggregate"], "noisy input"))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1, allow_nan=True))
    return 0
