"""Pack folders of speech and noise into pre-decoded shards that load in seconds.

``python -m training.pack --clean DIR [DIR ...] --noise DIR [DIR ...] --out SHARDS``

Decoding 12 k OGG/Opus and FLAC files and resampling them to 8 kHz takes about a minute on two
cores every time a run starts; a GPU run of 10 minutes cannot spend that. Packing does it once:

* ``SHARDS/speech-NNN.npz`` and ``SHARDS/noise-NNN.npz``, each at most ``--max-mb`` (default
  60 MB, so a shard travels as one file): ``audio`` int16 (all files of the shard end to end,
  each scaled to its own peak), ``offsets`` int64 ``[n + 1]``, ``scale`` float32 ``[n]`` (the
  factor back to the original level), ``keys`` (UTF-8, one line per file: the speaker of each
  speech file; noise: its index);
* ``SHARDS/manifest.json``: the folders packed, file and shard counts, minutes of audio.

Files are kept in the order :func:`training.data.load_dir` gives, with the same near-silence
filter, so a sampler built from shards draws exactly the mixtures of one built from the folders
(up to the 16-bit rounding, below -90 dB of each file's peak). Training reads shards with
``data.shards=SHARDS`` instead of ``data.train_clean`` / ``data.train_noise``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

from rtdenoise.errors import UserError

from .data import SR, load_dir

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"


def _write_shards(
    out: Path, kind: str, clips: list[np.ndarray], keys: list[str], max_mb: float
) -> int:
    """Write ``clips`` as ``{kind}-NNN.npz`` shards of at most ``max_mb`` (a clip larger than
    that alone gets a shard of its own); returns the count."""
    limit = int(max_mb * 1e6) - 4096  # bytes, room for the npz headers
    cost = [2 * len(c) + 12 + len(k.encode()) + 1 for c, k in zip(clips, keys, strict=True)]
    shards, start = 0, 0
    while start < len(clips):
        stop, size = start, 0
        while stop < len(clips) and (stop == start or size + cost[stop] <= limit):
            size += cost[stop]
            stop += 1
        part = clips[start:stop]
        peaks = np.array([max(float(np.abs(c).max()), 1e-9) for c in part], np.float32)
        audio = np.concatenate(
            [np.round(c / p * 32767).astype(np.int16) for c, p in zip(part, peaks, strict=True)]
        )
        offsets = np.concatenate([[0], np.cumsum([len(c) for c in part])]).astype(np.int64)
        names = np.frombuffer("\n".join(keys[start:stop]).encode(), np.uint8)
        path = out / f"{kind}-{shards:03d}.npz"
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, audio=audio, offsets=offsets, scale=peaks / 32767, keys=names)
        os.replace(tmp, path)
        shards += 1
        start = stop
    return shards


def pack(
    clean: list[str | Path], noise: list[str | Path], out: str | Path, max_mb: float = 60.0
) -> dict:
    """Decode, resample to 8 kHz and write the shards and manifest; returns the manifest."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.npz"):
        old.unlink()
    t0 = time.monotonic()
    keys: list[str] = []
    speech = load_dir(clean, min_len=int(0.1 * SR), desc="speech", keys=keys)
    noises = load_dir(noise, min_len=int(0.1 * SR), desc="noise") if noise else []
    manifest = {
        "sample_rate": SR,
        "clean": [str(d) for d in clean],
        "noise": [str(d) for d in noise],
        "speech_files": len(speech),
        "speech_minutes": round(sum(map(len, speech)) / SR / 60, 2),
        "speakers": len(set(keys)),
        "noise_files": len(noises),
        "noise_minutes": round(sum(map(len, noises)) / SR / 60, 2),
        "speech_shards": _write_shards(out, "speech", speech, keys, max_mb),
        "noise_shards": _write_shards(
            out, "noise", noises, [str(i) for i in range(len(noises))], max_mb
        ),
        "max_mb": max_mb,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1))
    log.info("packed in %.0f s: %s", time.monotonic() - t0, manifest)
    return manifest


def _read(out: Path, kind: str) -> tuple[list[np.ndarray], list[str]]:
    clips: list[np.ndarray] = []
    keys: list[str] = []
    for path in sorted(out.glob(f"{kind}-*.npz")):
        with np.load(path) as z:
            audio, off, scale = z["audio"], z["offsets"], z["scale"]
            keys += z["keys"].tobytes().decode().split("\n")
        for i in range(len(off) - 1):
            clips.append(audio[off[i] : off[i + 1]].astype(np.float32) * scale[i])
    return clips, keys


def load_shards(path: str | Path) -> tuple[list[np.ndarray], list[str], list[np.ndarray]]:
    """``(speech, speaker keys, noise)`` float32 clips at 8 kHz from a packed folder."""
    out = Path(path)
    if not (out / MANIFEST).is_file():
        raise UserError(f"no packed shards in {out} (make them with python -m training.pack)")
    speech, keys = _read(out, "speech")
    noise, _ = _read(out, "noise")
    return speech, keys, noise


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m training.pack",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--clean", nargs="+", required=True, help="folders of clean speech")
    p.add_argument("--noise", nargs="*", default=[], help="folders of noise recordings")
    p.add_argument("--out", required=True, help="folder for the shards (replaced)")
    p.add_argument("--max-mb", type=float, default=60.0, help="largest shard (default 60 MB)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        m = pack(args.clean, args.noise, args.out, args.max_mb)
    except UserError as exc:
        print(f"training.pack: error: {exc}", file=sys.stderr)
        return 2
    print(
        f"{m['speech_files']} speech files ({m['speech_minutes']} min, {m['speakers']} speakers) "
        f"in {m['speech_shards']} shards, {m['noise_files']} noise files "
        f"({m['noise_minutes']} min) in {m['noise_shards']} shards -> {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
