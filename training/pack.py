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

**A budget for a GPU machine** (``--budget-mb 40``): what travels to a lent GPU machine is at
most 64 MiB with the repository, so the corpus (577 MB as 16-bit shards) cannot. With a budget
the shards hold *encoded* files instead (``blob`` uint8, ``offsets``, ``keys``): a file that is
already mono 8 kHz OGG travels as its own bytes (the corpus's v2 audio is Opus, ~13 MB per hour,
3.6x less than 16-bit: no second lossy generation), any other as OGG/Opus of its 8 kHz clip
(the v1 FLAC speech then takes one lossy generation, as v2's had at the source).
Files are chosen round-robin over speakers (noise: over files) in a seeded order
until the budget is spent, ``--noise-share`` of it (default 0.25) for noise, so every speaker
keeps a file before any keeps two. Reading them needs soundfile (carried there as a wheel:
``make gpu-bundle``); the decoded clips pass the same near-silence filter.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from rtdenoise.errors import UserError

from .data import SR, keep_clip, list_audio, load_audio, load_dir, speaker_of

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"


def _groups(cost: list[int], max_mb: float) -> list[tuple[int, int]]:
    """Consecutive ``(start, stop)`` runs of items whose costs (bytes) fit ``max_mb`` (an item
    larger than that alone gets a run of its own)."""
    limit = int(max_mb * 1e6) - 4096  # bytes, room for the npz headers
    runs, start = [], 0
    while start < len(cost):
        stop, size = start, 0
        while stop < len(cost) and (stop == start or size + cost[stop] <= limit):
            size += cost[stop]
            stop += 1
        runs.append((start, stop))
        start = stop
    return runs


def _save(path: Path, **arrays: np.ndarray) -> None:
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def _names(keys: list[str]) -> np.ndarray:
    return np.frombuffer("\n".join(keys).encode(), np.uint8)


def _write_shards(
    out: Path, kind: str, clips: list[np.ndarray], keys: list[str], max_mb: float
) -> int:
    """Write ``clips`` as 16-bit ``{kind}-NNN.npz`` shards of at most ``max_mb``; returns the
    count."""
    cost = [2 * len(c) + 12 + len(k.encode()) + 1 for c, k in zip(clips, keys, strict=True)]
    runs = _groups(cost, max_mb)
    for shard, (start, stop) in enumerate(runs):
        part = clips[start:stop]
        peaks = np.array([max(float(np.abs(c).max()), 1e-9) for c in part], np.float32)
        audio = np.concatenate(
            [np.round(c / p * 32767).astype(np.int16) for c, p in zip(part, peaks, strict=True)]
        )
        offsets = np.concatenate([[0], np.cumsum([len(c) for c in part])]).astype(np.int64)
        names = _names(keys[start:stop])
        _save(
            out / f"{kind}-{shard:03d}.npz",
            audio=audio,
            offsets=offsets,
            scale=peaks / 32767,
            keys=names,
        )
    return len(runs)


def _write_encoded(out: Path, kind: str, blobs: list[bytes], keys: list[str], max_mb: float) -> int:
    """Write encoded files as ``{kind}-NNN.npz`` shards (``blob``, ``offsets``, ``keys``)."""
    runs = _groups([len(b) + 9 + len(k.encode()) for b, k in zip(blobs, keys, strict=True)], max_mb)
    for shard, (start, stop) in enumerate(runs):
        part = blobs[start:stop]
        blob = np.frombuffer(b"".join(part), np.uint8)
        offsets = np.concatenate([[0], np.cumsum([len(b) for b in part])]).astype(np.int64)
        _save(
            out / f"{kind}-{shard:03d}.npz",
            blob=blob,
            offsets=offsets,
            keys=_names(keys[start:stop]),
        )
    return len(runs)


def _encode(path: Path, clip: np.ndarray) -> bytes:
    """The file's own bytes if it is mono 8 kHz OGG (the corpus's v2 audio: Opus), else ``clip``
    (its 8 kHz mono audio) as OGG/Opus at libsndfile's default rate (~22 kb/s for speech, 3.4x
    less than 16-bit FLAC)."""
    info = sf.info(str(path))
    if info.samplerate == SR and info.channels == 1 and info.format == "OGG":
        return path.read_bytes()
    buf = io.BytesIO()
    sf.write(buf, clip, SR, format="OGG", subtype="OPUS")
    return buf.getvalue()


def _round_robin(groups: list[str], sizes: list[int], budget: int, seed: int) -> list[int]:
    """Indices (sorted) chosen one per group in turn, groups and their files in a seeded order,
    while they fit ``budget`` bytes: every group keeps a file before any keeps two."""
    rng = np.random.default_rng(seed)
    members: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    queues = [
        [int(i) for i in rng.permutation(members[g])] for g in rng.permutation(sorted(members))
    ]
    chosen, spent = [], 0
    while queues:
        left = []
        for q in queues:
            i = q.pop(0)
            if spent + sizes[i] <= budget:
                chosen.append(i)
                spent += sizes[i]
            if q:
                left.append(q)
        queues = left
    return sorted(chosen)


def _candidates(
    dirs: list[str | Path], desc: str, speakers: bool
) -> tuple[list[bytes], list[str], list[float]]:
    """Every file under ``dirs`` that passes :func:`load_dir`'s filter: (encoded bytes, group
    key, seconds)."""
    blobs, keys, secs = [], [], []
    for p in tqdm(list_audio(dirs), desc=f"reading {desc}", leave=False, mininterval=2):
        x = load_audio(p)
        if keep_clip(x, int(0.1 * SR)):
            blobs.append(_encode(p, x))
            keys.append(speaker_of(p) if speakers else str(p))
            secs.append(len(x) / SR)
    return blobs, keys, secs


def pack_budget(
    clean: list[str | Path],
    noise: list[str | Path],
    out: str | Path,
    budget_mb: float,
    noise_share: float = 0.25,
    seed: int = 0,
    max_mb: float = 60.0,
) -> dict:
    """Encoded shards of a speaker-balanced subset that fits ``budget_mb``; returns the manifest."""
    if budget_mb <= 0 or not 0 <= noise_share < 1:
        raise UserError("--budget-mb must be > 0 and --noise-share in [0, 1)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.npz"):
        old.unlink()
    t0 = time.monotonic()
    budget = int(budget_mb * 1e6)
    manifest: dict = {
        "sample_rate": SR,
        "encoded": True,
        "budget_mb": budget_mb,
        "seed": seed,
        "clean": [str(d) for d in clean],
        "noise": [str(d) for d in noise],
    }
    share = noise_share if noise else 0.0
    for kind, dirs, part in (("speech", clean, 1 - share), ("noise", noise, share)):
        if not dirs:
            manifest.update({f"{kind}_files": 0, f"{kind}_minutes": 0.0, f"{kind}_shards": 0})
            continue
        blobs, keys, secs = _candidates(dirs, kind, speakers=kind == "speech")
        pick = _round_robin(keys, [len(b) for b in blobs], int(budget * part), seed)
        if not pick:
            raise UserError(f"no {kind} file fits a budget of {budget * part / 1e6:.2f} MB")
        names = [keys[i] if kind == "speech" else str(n) for n, i in enumerate(pick)]
        manifest.update(
            {
                f"{kind}_files": len(pick),
                f"{kind}_of": len(blobs),
                f"{kind}_minutes": round(sum(secs[i] for i in pick) / 60, 2),
                f"{kind}_mb": round(sum(len(blobs[i]) for i in pick) / 1e6, 2),
                f"{kind}_shards": _write_encoded(
                    out, kind, [blobs[i] for i in pick], names, max_mb
                ),
            }
        )
        if kind == "speech":
            manifest["speakers"] = len({keys[i] for i in pick})
            manifest["speakers_of"] = len(set(keys))
    manifest["max_mb"] = max_mb
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1))
    log.info("packed in %.0f s: %s", time.monotonic() - t0, manifest)
    return manifest


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


def _decode(blob: bytes) -> np.ndarray:
    x, sr = sf.read(io.BytesIO(blob), dtype="float32", always_2d=True)
    if sr != SR:
        raise UserError(f"an encoded shard holds a {sr} Hz file (packing writes 8 kHz only)")
    return x.mean(axis=1)


def _read(out: Path, kind: str) -> tuple[list[np.ndarray], list[str]]:
    clips: list[np.ndarray] = []
    keys: list[str] = []
    for path in sorted(out.glob(f"{kind}-*.npz")):
        with np.load(path) as z:
            keys += z["keys"].tobytes().decode().split("\n")
            off = z["offsets"]
            if "blob" in z.files:  # encoded files (a budgeted pack): decode them here
                blob = z["blob"].tobytes()
                with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
                    clips += pool.map(
                        _decode, [blob[off[i] : off[i + 1]] for i in range(len(off) - 1)]
                    )
                continue
            audio, scale = z["audio"], z["scale"]
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
    p.add_argument(
        "--budget-mb",
        type=float,
        help="all shards together at most this (MB): encoded files, a speaker-balanced subset "
        "(for a GPU machine, where 64 MiB travel with the repository: 40)",
    )
    p.add_argument(
        "--noise-share", type=float, default=0.25, help="of the budget, for noise (default 0.25)"
    )
    p.add_argument("--seed", type=int, default=0, help="order of the budgeted choice")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        if args.budget_mb is None:
            m = pack(args.clean, args.noise, args.out, args.max_mb)
        else:
            m = pack_budget(
                args.clean,
                args.noise,
                args.out,
                args.budget_mb,
                args.noise_share,
                args.seed,
                args.max_mb,
            )
    except UserError as exc:
        print(f"training.pack: error: {exc}", file=sys.stderr)
        return 2
    speakers = f"{m['speakers']} speakers" if "speakers" in m else "no speech"
    print(
        f"{m['speech_files']} speech files ({m['speech_minutes']} min, {speakers}) "
        f"in {m['speech_shards']} shards, {m['noise_files']} noise files "
        f"({m['noise_minutes']} min) in {m['noise_shards']} shards -> {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
