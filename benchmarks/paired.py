"""Paired comparison of two denoisers (or two checkpoints) on the same mixtures.

Model selection needs differences far smaller than the spread of per-file scores: two
checkpoints that differ by 0.002 STOI on 400 files cannot be told apart from their means and
95 % intervals, but can from the mean of their per-file differences (paired standard error).
This scores both on every file of a ``pairs.csv`` (through the streaming engine, with the cache
of :mod:`benchmarks.scoring`, so a second comparison only scores what is new) and prints
``d = A - B`` with its standard error, overall, per SNR and per speech source. Usage::

    python -m benchmarks.paired runs/x/best.pt shipped --pairs ../shared/data/corpus/val2/pairs.csv
    python -m benchmarks.paired shipped rnnoise --pairs ../shared/data/corpus/val/pairs.csv

A side is ``shipped`` (the package's low-latency model), a peer system name of
:mod:`benchmarks.peers`, a checkpoint ``.pt`` (exported once to ONNX under the cache), or a
folder holding ``lowlat.onnx``.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from benchmarks import peers  # noqa: E402
from benchmarks.scoring import CACHE, run_quality  # noqa: E402
from benchmarks.sets import DEFAULT_PAIRS, load_pairs  # noqa: E402

log = logging.getLogger(__name__)

METRICS = ("pesq", "stoi", "si_sdr")
SHIPPED = "shipped"


def export_candidate(ckpt: Path, atten_lim_db: float | None, postfilter: float | None) -> Path:
    """A checkpoint's ONNX export (as ``lowlat``), made once and kept under the cache."""
    from rtdenoise.export import export_all

    tag = peers._file_digest(ckpt)[:12] + ("" if atten_lim_db is None else f"-att{atten_lim_db:g}")
    tag += "" if postfilter is None else f"-pf{postfilter:g}"
    out = CACHE / "models" / tag
    if not (out / "lowlat.onnx").exists():
        tmp = out.with_name(f"{out.name}.tmp{os.getpid()}")  # two comparisons may export at once
        export_all(
            ckpt,
            tmp,
            "lowlat",
            torchscript=False,
            atten_lim_db=atten_lim_db,
            pitch_postfilter=postfilter,
        )
        try:
            tmp.replace(out)
        except OSError:  # the other one was first: same files
            shutil.rmtree(tmp)
    return out


def build(spec: str, atten_lim_db: float | None, postfilter: float | None) -> peers.System:
    """One side of the comparison -> a system whose ``version`` keys its cached scores."""
    if spec == SHIPPED:
        return peers.RtDenoise("onnx", None, latency_mode="low")
    path = Path(spec)
    if path.suffix == ".pt" and path.is_file():
        path = export_candidate(path, atten_lim_db, postfilter)
    if path.is_dir():
        if not (path / "lowlat.onnx").exists():
            raise SystemExit(f"{spec}: no lowlat.onnx in this folder")
        return peers.RtDenoise("onnx", path, latency_mode="low")
    if spec in peers.FACTORIES:
        (system,) = peers.build_systems([spec])
        if not isinstance(system, peers.System):
            raise SystemExit(f"{spec}: not available ({system.reason})")
        return system
    raise SystemExit(
        f"{spec}: not a checkpoint, a model folder or a system ({SHIPPED}, "
        f"{', '.join(peers.FACTORIES)})"
    )


def paired_stats(a: dict[str, dict], b: dict[str, dict], ids: list[str]) -> dict[str, dict]:
    """Per metric: mean of A, of B, of d = A - B and d's standard error over ``ids``."""
    out = {}
    for m in METRICS:
        pa = np.array([a[i].get(m, np.nan) for i in ids], dtype=np.float64)
        pb = np.array([b[i].get(m, np.nan) for i in ids], dtype=np.float64)
        ok = np.isfinite(pa) & np.isfinite(pb)
        d = pa[ok] - pb[ok]
        se = d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else float("nan")
        out[m] = {
            "a": float(pa[ok].mean()) if ok.any() else float("nan"),
            "b": float(pb[ok].mean()) if ok.any() else float("nan"),
            "d": float(d.mean()) if len(d) else float("nan"),
            "se": float(se),
            "n": int(ok.sum()),
        }
    return out


def _line(label: str, st: dict[str, dict]) -> str:
    n = st[METRICS[0]]["n"]
    parts = [f"{label:<16} n={n:<4}"]
    for m in METRICS:
        s = st[m]
        parts.append(f"{m} {s['a']:.4f} {s['b']:.4f} d {s['d']:+.4f}±{s['se']:.4f}")
    return "  ".join(parts)


def compare(
    rows_a: list[dict], rows_b: list[dict]
) -> tuple[dict[str, dict], dict[str, dict], dict[str, dict]]:
    """-> (overall, per SNR, per source) paired statistics on the files both sides have."""
    a = {r["id"]: r for r in rows_a}
    b = {r["id"]: r for r in rows_b}
    ids = sorted(set(a) & set(b))
    overall = paired_stats(a, b, ids)
    snrs = sorted({a[i]["snr"] for i in ids if a[i].get("snr") is not None})
    per_snr = {f"{s:g}": paired_stats(a, b, [i for i in ids if a[i].get("snr") == s]) for s in snrs}
    sources = sorted({a[i].get("source", "") for i in ids} - {""})
    per_source = {
        s: paired_stats(a, b, [i for i in ids if a[i].get("source") == s]) for s in sources
    }
    return overall, per_snr, per_source


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.paired", description=__doc__.split("\n")[0]
    )
    p.add_argument("a", help=f"first side: checkpoint .pt, model folder, '{SHIPPED}' or a system")
    p.add_argument("b", help="second side (the reference; d = A - B)")
    p.add_argument("--pairs", type=Path, default=DEFAULT_PAIRS, help="pairs.csv to mix and score")
    p.add_argument("--limit", type=int, default=None, help="N files spread evenly over SNR")
    p.add_argument(
        "--atten-lim-db",
        type=float,
        default=None,
        help="attenuation limit for checkpoint sides (default: what their export stores)",
    )
    p.add_argument(
        "--pitch-postfilter",
        type=float,
        default=None,
        help="pitch post-filter strength for checkpoint sides (default: none stored, i.e. off)",
    )
    p.add_argument("--json", type=Path, default=None, help="also write the statistics here")
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore", message="Not enough STFT frames")
    logging.basicConfig(level=logging.WARNING, format="%(name)s %(levelname)s %(message)s")
    items = load_pairs(args.pairs, args.limit)
    sides = [build(s, args.atten_lim_db, args.pitch_postfilter) for s in (args.a, args.b)]
    rows = []
    for s in sides:
        out = run_quality([(s, s.name, s.version)], {"test": items}, set(), set())
        rows.append(out["test"][s.name])
    overall, per_snr, per_source = compare(*rows)
    print(f"A = {args.a}\nB = {args.b}\non {args.pairs} (A, B, d = A - B ± standard error)")
    print(_line("overall", overall))
    for k, st in per_snr.items():
        print(_line(f"snr {k}", st))
    for k, st in per_source.items():
        print(_line(k, st))
    if args.json:
        args.json.write_text(
            json.dumps({"overall": overall, "per_snr": per_snr, "per_source": per_source}, indent=1)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
