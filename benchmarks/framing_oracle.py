"""Oracle study of the STFT framing: what a framing costs before any network is trained for it.

For every pair of a ``pairs.csv`` (default: ``val2``, the model-selection split) and every
framing, the noisy mixture is analysed with that framing, multiplied by a mask and resynthesised
with the framing's own synthesis window, then scored against the clean speech (PESQ-nb, STOI,
SI-SDR; ``rtdenoise.metrics``):

* ``irm``: the ideal ratio mask ``sqrt(|S|^2 / (|S|^2 + |N|^2))`` of that framing's STFT of the
  clean speech ``S`` and the noise ``N`` (an upper bound: a perfect network);
* ``model-err``: the same ideal mask times the multiplicative error that the current shipped
  model actually makes on this pair (its mask over the ideal one, both in the symmetric framing,
  each clipped to [-40, 0] dB): an estimate of what the framing costs at today's error level.

``python -m benchmarks.framing_oracle [--pairs CSV] [--limit N] [--json OUT]`` prints the table
(latency beside quality) that ``docs/FRAMING.md`` records.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from rtdenoise import metrics
from rtdenoise.evaluate import evenly_spaced, mix_pair, read_pairs
from rtdenoise.stft import StftConfig, istft, stft
from training.data import data_root

ROOT = Path(__file__).resolve().parents[1]
PAIRS = data_root() / "val2" / "pairs.csv"  # --data-root / RTDENOISE_DATA / ../shared/...

#: (label, framing) in the order of the table
FRAMINGS: list[tuple[str, StftConfig]] = [
    ("symmetric Hann 519 (the design)", StftConfig()),
    ("asym sqrt-Hann, S=248", StftConfig(synthesis_len=248)),
    ("asym sqrt-Hann, S=124", StftConfig(synthesis_len=124)),
    ("asym Hann^0.75 rise, S=124", StftConfig(window="hann^0.75", synthesis_len=124)),
    ("asym Hann rise, S=124", StftConfig(window="hann^1", synthesis_len=124)),
    ("asym Hann^1.5 rise, S=124", StftConfig(window="hann^1.5", synthesis_len=124)),
    ("asym Hann^2 rise, S=124", StftConfig(window="hann^2", synthesis_len=124)),
    ("asym Hann^3 rise, S=124 (chosen)", StftConfig(window="hann^3", synthesis_len=124)),
    ("asym Hann^4 rise, S=124", StftConfig(window="hann^4", synthesis_len=124)),
    ("asym Hann rise, S=248", StftConfig(window="hann^1", synthesis_len=248)),
    ("asym Hann rise, S=62", StftConfig(window="hann^1", synthesis_len=62)),
    ("asym sqrt-Hann, S=62", StftConfig(synthesis_len=62)),
]

_FLOOR = 10 ** (-40 / 20)


def ideal_mask(clean: np.ndarray, noisy: np.ndarray, cfg: StftConfig) -> np.ndarray:
    """IRM ``[T, F]`` of one pair in framing ``cfg``."""
    s2 = np.abs(stft(clean.astype(np.float64), cfg)) ** 2
    n2 = np.abs(stft((noisy - clean).astype(np.float64), cfg)) ** 2
    return np.sqrt(s2 / (s2 + n2 + 1e-20))


def model_mask(noisy: np.ndarray, model) -> np.ndarray:  # model: rtdenoise.model.DenoiserNet
    """The shipped model's mask ``[T, F]`` on the symmetric framing (offline forward)."""
    import torch

    z = stft(noisy.astype(np.float32), StftConfig())
    spec = torch.from_numpy(np.stack([z.real, z.imag], -1)[None].astype(np.float32))
    with torch.no_grad():
        return model(spec)[0][0].numpy().astype(np.float64)


def apply(noisy: np.ndarray, mask: np.ndarray, cfg: StftConfig) -> np.ndarray:
    z = stft(noisy.astype(np.float64), cfg)
    return istft(z * mask, cfg, length=len(noisy))


def _table(rows: dict[str, list[dict]], n: int, pairs_csv: Path) -> dict[str, dict]:
    """Print and return the per-framing means (latency beside quality)."""
    lat = {label: cfg.latency_samples / cfg.sample_rate * 1000 for label, cfg in FRAMINGS}
    table = {}
    print(f"\n{n} pairs of {pairs_csv.name} ({pairs_csv.parent.name})")
    print(f"{'framing | mask':58s} {'ms':>6s} {'PESQ-nb':>8s} {'STOI':>6s} {'SI-SDR':>7s}")
    for key, rs in rows.items():
        mean = {k: float(np.nanmean([r[k] for r in rs])) for k in ("pesq", "stoi", "si_sdr")}
        ms = lat.get(key.split(" | ")[0], 0.0)
        table[key] = {"latency_ms": ms, **mean, "n": len(rs)}
        print(f"{key:58s} {ms:6.2f} {mean['pesq']:8.3f} {mean['stoi']:6.3f} {mean['si_sdr']:7.2f}")
    print(flush=True)
    return table


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.framing_oracle", description=__doc__)
    p.add_argument("--pairs", default=str(PAIRS), help="pairs.csv (default: val2)")
    p.add_argument("--limit", type=int, default=None, help="evenly spaced subset of the pairs")
    p.add_argument("--model", default=str(ROOT / "rtdenoise/models/default.pt"))
    p.add_argument("--no-model", action="store_true", help="only the ideal mask")
    p.add_argument("--json", default=None, help="write per-framing means here (merged into it)")
    p.add_argument(
        "--only",
        nargs="*",
        default=None,
        metavar="TEXT",
        help="only the framings whose label contains one of these",
    )
    args = p.parse_args(argv)

    framings = [f for f in FRAMINGS if not args.only or any(t in f[0] for t in args.only)]
    pairs_csv = Path(args.pairs)
    pairs = evenly_spaced(read_pairs(pairs_csv), args.limit)
    model = None
    if not args.no_model:
        from rtdenoise.model import load_checkpoint

        model = load_checkpoint(args.model)
    kinds = ["irm"] + ([] if model is None else ["model-err"])
    rows: dict[str, list[dict]] = {"noisy": []}
    for label, _ in framings:
        for k in kinds:
            rows[f"{label} | {k}"] = []
    cache: dict[str, np.ndarray] = {}
    t0 = time.monotonic()
    for i, pair in enumerate(pairs):
        clean, noisy = mix_pair(pair, pairs_csv.parent, cache)
        rows["noisy"].append(metrics.score(clean, noisy, max_lag=0))
        err = None
        if model is not None:
            m_sym = np.clip(model_mask(noisy, model), _FLOOR, 1.0)
            err = m_sym / np.clip(ideal_mask(clean, noisy, StftConfig()), _FLOOR, 1.0)
        for label, cfg in framings:
            irm = ideal_mask(clean, noisy, cfg)
            rows[f"{label} | irm"].append(metrics.score(clean, apply(noisy, irm, cfg), max_lag=0))
            if err is not None:
                n = min(len(irm), len(err))
                m = np.clip(np.clip(irm[:n], _FLOOR, 1.0) * err[:n], 0.0, 1.0)
                m = np.concatenate([m, irm[n:]])
                out = apply(noisy, m, cfg)
                rows[f"{label} | model-err"].append(metrics.score(clean, out, max_lag=0))
        if (i + 1) % 25 == 0:
            print(f"{i + 1}/{len(pairs)} pairs, {time.monotonic() - t0:.0f} s", flush=True)
        if (i + 1) % 50 == 0 or i + 1 == len(pairs):
            table = _table(rows, i + 1, pairs_csv)

    if args.json:
        meta = {"pairs": os.path.relpath(pairs_csv.resolve(), ROOT), "n": len(pairs)}
        old = json.loads(Path(args.json).read_text()) if Path(args.json).is_file() else {}
        if old.get("meta", meta) != meta:
            old = {}  # other pairs: start afresh
        merged = {**old.get("table", {}), **table}
        Path(args.json).write_text(json.dumps({"meta": meta, "table": merged}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
