"""Ablations: the same short run under several recipes, scored pair by pair on validation.

``python -m training.ablate --config training/configs/rt_low.json --out runs/abl --steps 500
--val-pairs 100 ARM [ARM ...]`` where each ARM is one string ``"NAME [key.sub=value ...]"``
(the overrides of ``python -m training.train``; ``config=PATH`` swaps the base config for this
arm). Every arm starts from the same place (the config's ``train.init``, or from scratch), sees
the same batches (same seed) for its ``train.steps``, and is then scored on the same evenly
spaced ``val_pairs`` pairs (PESQ-nb / STOI / SI-SDR per pair, offline forward). The first arm is
the reference: each other arm's row carries its mean paired difference to it with a 95 %
interval, so a row says whether the change is larger than the pair-to-pair noise.

Arms already finished in ``OUT`` are read back, not rerun: an interrupted ablation continues.
Results: ``OUT/ablation.json`` (per-pair scores) and ``OUT/ablation.md`` (the table); each
arm's weights: ``OUT/NAME/final.pt``.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from rtdenoise import metrics
from rtdenoise.errors import UserError

from . import train as T

log = logging.getLogger(__name__)

KEYS = ("pesq", "stoi", "si_sdr")


def parse_arm(spec: str) -> tuple[str, str | None, list[str]]:
    """``"NAME [config=PATH] [k=v ...]"`` -> (name, config path or None, overrides)."""
    words = shlex.split(spec)
    if not words or "=" in words[0]:
        raise UserError(f"an arm starts with its name, got {spec!r}")
    config = None
    overrides = []
    for w in words[1:]:
        if w.startswith("config="):
            config = w.split("=", 1)[1]
        else:
            overrides.append(w)
    return words[0], config, overrides


def run_arm(
    name: str, cfg: dict, out: Path, val_pairs: int
) -> dict[str, list[float] | float | int]:
    """Train one arm to its steps (resuming ``out/last.pt``), then score it pair by pair."""
    done = out / "scores.json"
    if done.exists():
        return json.loads(done.read_text())
    t0 = time.monotonic()
    trainer = T.Trainer(cfg, out)
    trainer.run()
    if trainer.step < int(cfg["train"]["steps"]):  # stopped early (signal): no row yet
        raise KeyboardInterrupt
    minutes = (time.monotonic() - t0) / 60
    # the arm's weights as a model checkpoint (``rtdenoise export``, ``benchmarks.compare``):
    # the trainer wrote them as stepN.pt at the schedule's end
    (out / f"step{trainer.step}.pt").replace(out / "final.pt")
    trainer.t_cfg["val_pairs"] = val_pairs
    trainer._load_val()
    assert trainer.val_set is not None
    rows = [metrics.score(c, trainer.enhance(n), max_lag=0) for _, _, c, n in trainer.val_set]
    res: dict = {k: [float(r[k]) for r in rows] for k in KEYS}
    res.update(
        steps=trainer.step,
        train_minutes=minutes,
        pairs=[p for p, *_ in trainer.val_set],
        snr=[float(s) for _, s, *_ in trainer.val_set],
    )
    done.write_text(json.dumps(res))
    return res


def paired(a: list[float], b: list[float]) -> tuple[float, float]:
    """Mean of b - a over pairs both score, and the half-width of its 95 % interval."""
    d = np.asarray(b, float) - np.asarray(a, float)
    d = d[np.isfinite(d)]
    if d.size < 2:
        return float("nan"), float("nan")
    return float(d.mean()), float(1.96 * d.std(ddof=1) / np.sqrt(d.size))


#: the low-SNR column: pairs mixed at or below this SNR (where STOI is lost)
LOW_SNR_DB = 0.0


def _low(r: dict) -> list[float]:
    """STOI of the arm's pairs at or below LOW_SNR_DB (NaN elsewhere, so pairs stay aligned)."""
    pairs = zip(r["stoi"], r["snr"], strict=True)
    return [s if snr <= LOW_SNR_DB else float("nan") for s, snr in pairs]


def table(results: dict[str, dict], notes: dict[str, str]) -> str:
    names = list(results)
    ref = results[names[0]]
    low = all("snr" in r for r in results.values())  # rows written before the SNR was kept
    lines = [
        "| arm | change | steps | train min | PESQ-nb | STOI | SI-SDR (dB) | "
        "dPESQ | dSTOI | dSI-SDR |" + (" STOI <= 0 dB | dSTOI <= 0 dB |" if low else ""),
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|" + ("--:|--:|" if low else ""),
    ]
    for n in names:
        r = results[n]
        means = [float(np.nanmean(r[k])) for k in KEYS]
        if n == names[0]:
            deltas = ["ref"] * 3
        else:
            deltas = []
            fmts = ("{:+.3f} ± {:.3f}", "{:+.4f} ± {:.4f}", "{:+.2f} ± {:.2f}")
            for k, fmt in zip(KEYS, fmts, strict=True):
                m, h = paired(ref[k], r[k])
                deltas.append(fmt.format(m, h))
        if low:
            lo = _low(r)
            deltas.append(f"{float(np.nanmean(lo)):.4f}")
            deltas.append(
                "ref" if n == names[0] else "{:+.4f} ± {:.4f}".format(*paired(_low(ref), lo))
            )
        lines.append(
            f"| {n} | {notes.get(n, '')} | {r['steps']} | {r['train_minutes']:.1f} | "
            f"{means[0]:.3f} | {means[1]:.4f} | {means[2]:.2f} | " + " | ".join(deltas) + " |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m training.ablate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", required=True, help="base JSON config of every arm")
    p.add_argument("--out", required=True, help="folder: one sub-folder per arm + the table")
    p.add_argument("--steps", type=int, required=True, help="training steps of every arm")
    p.add_argument("--val-pairs", type=int, default=100, help="validation pairs scored per arm")
    p.add_argument("--data-root", metavar="DIR", help="corpus folder (as for training.train)")
    p.add_argument("arms", nargs="+", help='"NAME [config=PATH] [key.sub=value ...]"; first = ref')
    args = p.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict] = {}
    notes: dict[str, str] = {}
    try:
        arms = [parse_arm(a) for a in args.arms]
        if len({a[0] for a in arms}) != len(arms):
            raise UserError("arm names must differ")
        for name, config, overrides in arms:
            base = [f"train.steps={args.steps}", "train.val_every=0"]
            cfg = T.load_config(config or args.config, base + overrides)
            if args.data_root:
                cfg["data"]["root"] = args.data_root
            notes[name] = " ".join(([f"config={config}"] if config else []) + overrides)
            log.info("arm %s: %s", name, notes[name] or "(reference)")
            results[name] = run_arm(name, cfg, out / name, args.val_pairs)
            (out / "ablation.json").write_text(json.dumps({"notes": notes, "arms": results}))
            (out / "ablation.md").write_text(table(results, notes))
    except UserError as exc:
        print(f"{p.prog}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{p.prog}: stopped; rerun the same command to continue", file=sys.stderr)
        return 130
    print(table(results, notes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
