"""Scoring: run a system on a set's files, score each output, cache the rows, summarise.

* :func:`score_item`: one system on one file -> intrusive scores at the set's rate (aligned
  first, the lag reported: PESQ-nb at 8 kHz, PESQ-wb at 16 kHz, STOI, SI-SDR, NSR) and DNSMOS
  (speechmos, at 16 kHz);
* :func:`run_quality`: every system on every file of every set, cached per file under
  ``benchmarks/results/cache/`` (keyed by the system's version, so a new model invalidates
  only its own rows): restartable, and a second run only scores what is new;
* :func:`aggregate`: means with 95 % CIs over the files every system has, overall, per SNR
  and (seed set) per file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
from tqdm import tqdm

from benchmarks.sets import SETS, Item, balanced_order
from rtdenoise import metrics

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
CACHE = RESULTS / "cache"
#: bump when the scoring procedure changes (invalidates every cached score)
SCORE_VERSION = 2
INTRUSIVE = ("pesq", "pesq_wb", "stoi", "si_sdr", "nsr")
DNSMOS_KEYS = ("ovrl", "sig", "bak")
DNSMOS_RATE = 16000
#: every system is delay-compensated, so alignment only searches +-20 ms: a wide search finds
#: spurious peaks on heavily suppressed outputs. A nonzero measured lag flags a latency bug.
MAX_LAG_S = 0.02
STOI_UNDEFINED = 1e-4
#: pseudo-systems: the original design's outputs (seed files only), the clean reference
SEED_ORIGINAL = "seed-original"
CLEAN = "clean"


# ----------------------------------------------------------------------------- DNSMOS


class Dnsmos:
    """DNSMOS P.835 (speechmos models) on one thread; scored at 16 kHz (other rates resampled)."""

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

    def __call__(self, y: np.ndarray, rate: int = 8000) -> dict[str, float]:
        """y: float [n] at ``rate`` -> {'ovrl', 'sig', 'bak'} MOS (nan on silence)."""
        if not np.any(y):
            return {k: math.nan for k in DNSMOS_KEYS}
        y = np.asarray(y, dtype=np.float32)
        if rate != DNSMOS_RATE:
            y = soxr.resample(y, rate, DNSMOS_RATE, quality="HQ")
        y = np.clip(y, -1.0, 1.0)
        r = self._m(y, DNSMOS_RATE, False)
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
    return system.process(noisy, item.rate)


def score_item(system, name: str, item: Item, dnsmos: Dnsmos | None, examples: set[str]) -> dict:
    """Run one system on one item and score it -> row dict (also saves example audio)."""
    sr = item.rate
    clean, noisy = item.load()
    t0 = time.perf_counter()
    y = _system_output(system, item, clean, noisy)
    dt = time.perf_counter() - t0
    row: dict = {"id": item.id, "snr": item.snr, "dur_s": len(noisy) / sr, "proc_s": dt}
    if name != CLEAN:
        lag = int(round(MAX_LAG_S * sr))
        row.update(metrics.score(clean, y, sr, max_lag=lag, metrics=SETS[item.dataset].metrics))
        if row["stoi"] <= STOI_UNDEFINED:
            # pystoi returns 1e-5 when the clean reference has < 30 non-silent frames (the
            # FSDD digits): undefined, not "unintelligible". Same files for every system.
            row["stoi"] = math.nan
    if dnsmos is not None:
        row.update(dnsmos(y, sr))
    if item.id in examples:
        d = CACHE / "examples" / item.dataset / item.id
        d.mkdir(parents=True, exist_ok=True)
        sf.write(d / f"{name}.flac", np.clip(y, -1, 1), sr, subtype="PCM_16")
    return row


def runs_on(name: str, system, ds: str) -> bool:
    """Whether a (pseudo-)system is scored on data set ``ds`` at all."""
    if name == SEED_ORIGINAL:
        return ds == "seed"
    if name == CLEAN:
        return True
    spec = SETS[ds]
    if spec.systems is not None and name not in spec.systems:
        return False
    return spec.rate > 8000 or not getattr(system, "wideband_only", False)


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
                sf.write(d / "input-noisy.flac", noisy, it.rate, subtype="PCM_16")
                sf.write(d / "input-clean.flac", clean, it.rate, subtype="PCM_16")
    out: dict[str, dict[str, list[dict]]] = {}
    for ds, items in items_by_ds.items():
        out[ds] = {}
        for sysobj, name, version in systems:
            if not runs_on(name, sysobj, ds):
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
            src = {it.id: it.source for it in items if it.source}
            rows = [{**r, "source": src[r["id"]]} if r["id"] in src else r for r in have.values()]
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
    """rows[dataset][system] -> ({dataset: {system: {overall, per_snr, per_source | per_file}}},
    coverage).

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
            sources = sorted({r["source"] for r in rs if r.get("source")})
            if len(sources) > 1:
                entry["per_source"] = {
                    s: summarize([r for r in rs if r.get("source") == s]) for s in sources
                }
            if ds == "seed":
                entry["per_file"] = {
                    r["id"]: {k: r.get(k) for k in ("lag", *INTRUSIVE, *DNSMOS_KEYS) if k in r}
                    for r in rs
                }
            out[ds][name] = entry
    return out, coverage
