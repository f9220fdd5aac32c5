"""Denoise audio files through the same block-by-block engine that live mode uses.

  rtdenoise file IN OUT                  one file (OUT may be an existing folder)
  rtdenoise file IN [IN ...] -o OUT      OUT is a file for one input, an existing folder otherwise
  rtdenoise file - - < noisy.wav > clean.wav

Any format, sample rate and channel count that soundfile reads (wav, flac, ogg, ...). The output
has the input's rate, channels and length, time-aligned with it (the engine's latency is
removed), and by default the input's format and sample type; the format follows OUT's extension
when it has a known one (stdout is always wav). Files are streamed in blocks, never loaded
whole. Output goes to a temporary file beside OUT that is renamed when complete, so a failure or
Ctrl-C never leaves a half-written file, and the input is never touched.

The default model is the shipped low-latency one, rtdenoise/models/lowlat.onnx on ONNX Runtime
(no torch): a causal VQ-VAE SE-U-Net for 8 kHz telephone-band speech, 227 k parameters, on the
15.4 ms low-latency STFT framing, run on 16 frames per model call (its cheapest; the latency
this adds is removed from files), gain never below -40 dB (--atten-lim-db changes that).
--latency-mode standard runs the standard-framing model instead (rtdenoise/models/default.onnx,
a name from before it stopped being the default: 64.75 ms, -40 dB). How they were trained and
their limits: docs/MODEL_CARD.md. The model
denoises the band up to 4 kHz; at higher rates the output is full band, the band above following
the model's gain (--narrowband: the telephone band only, 0-3.4 kHz, as before). --passthrough
runs only the engine (resampling, STFT, overlap-add) and returns the input, full band.

Unless -q is given, one line per file on stderr tells what was done (input -> output, seconds of
audio, x real time), after a progress bar where stderr is a terminal.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import soundfile as sf

from .backends import DEFAULT_LATENCY_MODE, LATENCY_MODES
from .errors import UserError

log = logging.getLogger(__name__)

MODELS_DIR = Path(__file__).resolve().parent / "models"
#: the model every entry point runs unless told (--latency-mode, --model): the low-latency one
DEFAULT_MODEL = MODELS_DIR / f"{LATENCY_MODES[DEFAULT_LATENCY_MODE]}.onnx"
#: STFT frames per model call for files (and eval): the most the exported step takes. Offline,
#: the latency it adds is removed anyway, and the output is the same as at any other K (the
#: step is block-size invariant: bit-identical to K = 4 on the shipped models), while ONNX
#: Runtime's fixed cost per call (~200 us: state copies, ~200 nodes) is paid 4x less often:
#: the model's CPU per second of audio falls from ~26 ms at K = 4 to ~15 ms
#: (``benchmarks/cost48k.py``). Live mode and the Python API's streams keep their own default.
FILE_BLOCK_FRAMES = 16
#: the block size of a model whose metadata does not say (backends.DEFAULT_BLOCK_FRAMES)
MODEL_BLOCK_FRAMES = 4
STDIO = "-"
#: a warm-up longer than this that compiled the model's steps is announced (see ``_warm_up``)
WARM_UP_NOTE_S = 3.0
#: output extension -> soundfile format (anything else keeps the input's format)
EXT_FORMATS = {
    ".wav": "WAV",
    ".flac": "FLAC",
    ".ogg": "OGG",
    ".oga": "OGG",
    ".opus": "OGG",
    ".mp3": "MP3",
    ".aif": "AIFF",
    ".aiff": "AIFF",
    ".au": "AU",
    ".caf": "CAF",
    ".w64": "W64",
    ".rf64": "RF64",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="IN OUT, or with -o: one or more inputs ('-' = stdin/stdout, wav)",
    )
    parser.add_argument(
        "-o",
        "--output",
        metavar="OUT",
        help="output file (one input) or existing folder (outputs keep the input file names)",
    )
    add_processing_arguments(parser.add_argument_group("processing"))
    out = parser.add_argument_group("output")
    out.add_argument(
        "--subtype",
        metavar="TYPE",
        help="sample type, e.g. PCM_16, PCM_24, FLOAT (default: the input's, if the format has it)",
    )
    out.add_argument(
        "--block-seconds",
        type=float,
        default=1.0,
        metavar="S",
        help="seconds of audio per engine call (default: 1.0)",
    )
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="no progress bar and no line per file"
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")


# --------------------------------------------------------------------------- processor


def add_processing_arguments(group: Any, passthrough: bool = True) -> None:
    """The processing options shared by ``file``, ``live`` and ``eval``."""
    if passthrough:
        group.add_argument(
            "--passthrough",
            action="store_true",
            help="identity processing: only the engine (resampling, STFT, overlap-add)",
        )
    group.add_argument(
        "--backend",
        choices=("onnx", "torchscript", "torch"),
        default="onnx",
        help="model runtime (default: onnx; the others need torch)",
    )
    group.add_argument(
        "--model",
        metavar="PATH",
        help="model file (default: the shipped low-latency model, rtdenoise/models/lowlat.onnx; "
        "see --latency-mode)",
    )
    group.add_argument(
        "--latency-mode",
        choices=tuple(sorted(LATENCY_MODES)),
        help="which shipped model: 'low' (15.4 ms algorithmic latency, asymmetric STFT windows, "
        "lowlat.onnx; the better one on quality) or 'standard' (64.75 ms, the design's "
        f"symmetric window, default.onnx) (default: {DEFAULT_LATENCY_MODE}; not with --model: "
        "a model runs on the framing it was trained for)",
    )
    group.add_argument(
        "--atten-lim-db",
        type=float,
        metavar="DB",
        help="most attenuation the mask may apply, in dB: lower keeps more of the speech and "
        "more of the noise (default: the model's own, 40 dB for both shipped models; "
        "100 = no limit)",
    )
    group.add_argument(
        "--wet",
        type=float,
        metavar="W",
        help="dry/wet mix, 0 (input) .. 1 (denoised) (default: 1)",
    )
    group.add_argument(
        "--pitch-postfilter",
        type=float,
        metavar="S",
        help="strength 0..1 of the pitch comb on the denoised output (removes what is left "
        "between the harmonics of voiced speech; no added latency; 0 = off) (default: the "
        "model's own, 0.5 for the low-latency model, 0 for the standard one)",
    )
    group.add_argument(
        "--narrowband",
        action="store_true",
        help="above 8 kHz, return only the telephone band the 8 kHz model denoises (0-3.4 kHz) "
        "(default: full band, the band above 4 kHz gated by the model's output)",
    )
    group.add_argument(
        "--block-frames",
        type=int,
        metavar="K",
        help="STFT frames per model call, 1..16: each frame more adds 3.9 ms of latency and "
        f"lowers the CPU cost (default: {FILE_BLOCK_FRAMES} for files, where the latency is "
        "removed, with the same output as the model's own block size; 1 in live mode)",
    )


def processor_from_args(args: argparse.Namespace) -> Any | None:
    """build_processor from the options of add_processing_arguments."""
    return build_processor(
        passthrough=getattr(args, "passthrough", False),
        backend=args.backend,
        model=args.model,
        atten_lim_db=args.atten_lim_db,
        wet=args.wet,
        pitch_postfilter=getattr(args, "pitch_postfilter", None),
        block_frames=_block_frames(args),
        latency_mode=getattr(args, "latency_mode", None),
    )


def _block_frames(args: argparse.Namespace) -> int:
    """--block-frames, or for files (no default set by the command) FILE_BLOCK_FRAMES."""
    k = getattr(args, "block_frames", None)
    return FILE_BLOCK_FRAMES if k is None else k


def streamer_options(args: argparse.Namespace, processor: Any = None) -> dict[str, Any]:
    """The ``Streamer`` keyword arguments chosen by the options of add_processing_arguments
    (and, for files at the default block size, by the processor: the output is the one at the
    model's own block size, see ``Streamer``'s ``align_block_frames``)."""
    options: dict[str, Any] = {"full_band": not getattr(args, "narrowband", False)}
    if getattr(args, "block_frames", None) is None and processor is not None:
        options["align_block_frames"] = model_block_frames(processor)
    return options


def model_block_frames(processor: Any) -> int:
    """The block size the processor's model was exported for (its metadata's, else 4): the
    one whose output files and ``denoise()`` reproduce at FILE_BLOCK_FRAMES."""
    meta = getattr(getattr(processor, "backend", None), "meta", None) or {}
    return int(meta.get("block_frames", MODEL_BLOCK_FRAMES))


def build_processor(
    passthrough: bool = False,
    backend: str = "onnx",
    model: str | None = None,
    atten_lim_db: float | None = None,
    wet: float | None = None,
    block_frames: int | None = None,
    latency_mode: str | None = None,
    pitch_postfilter: float | None = None,
) -> Any | None:
    """The frame processor for the streamer; None means identity.

    ``latency_mode`` (``low`` | ``standard``) picks one of the shipped models, ``low`` when
    neither it nor ``model`` is given; a ``model`` file brings its own framing, so the two
    together are refused.

    The one place that decides what the default processing is (file, eval, live and the Python
    API all come here): identity while the default model file is missing (with a warning), the
    mask processor on the chosen backend otherwise.
    """
    if atten_lim_db is not None and not atten_lim_db >= 0:
        raise UserError(f"--atten-lim-db must be >= 0, got {atten_lim_db}")
    if wet is not None and not 0.0 <= wet <= 1.0:
        raise UserError(f"--wet must be between 0 and 1, got {wet}")
    if pitch_postfilter is not None and not 0.0 <= pitch_postfilter <= 1.0:
        raise UserError(f"--pitch-postfilter must be between 0 and 1, got {pitch_postfilter}")
    if block_frames is not None and not 1 <= block_frames <= 16:
        raise UserError(f"--block-frames must be between 1 and 16, got {block_frames}")
    if passthrough:
        return None
    backends = importlib.import_module(".backends", __package__)  # ONNX path: no torch
    if latency_mode is not None and model is not None:
        raise UserError(
            "--latency-mode picks a shipped model; --model brings its own framing: use one"
        )
    if latency_mode is not None and latency_mode not in LATENCY_MODES:
        raise UserError(f"unknown latency mode {latency_mode!r} (choose from low, standard)")
    if model is None:
        mode = latency_mode or DEFAULT_LATENCY_MODE
        if backend == "onnx" and mode == DEFAULT_LATENCY_MODE:
            default = DEFAULT_MODEL
        else:
            default = backends.shipped_model(backend, mode)
        if not Path(default).is_file():
            if latency_mode is not None:
                raise UserError(f"no {mode}-latency model is installed ({default} is missing)")
            log.warning("no trained model at %s yet: identity processing", default)
            return None
        model = str(default)
    if not Path(model).is_file():
        raise UserError(f"model file not found: {model}")
    from .processor import MaskProcessor

    kwargs: dict[str, float] = {}
    if atten_lim_db is not None:
        kwargs["atten_lim_db"] = atten_lim_db
    if wet is not None:
        kwargs["wet"] = wet
    if pitch_postfilter is not None:
        kwargs["pitch_postfilter"] = pitch_postfilter
    try:
        return MaskProcessor(backends.load_backend(backend, model, block_frames), **kwargs)
    except UserError:
        raise
    except ImportError as exc:
        raise UserError(f"the {backend} backend needs {exc.name or 'torch'} installed") from None
    except Exception as exc:  # a broken model file: one line; -v shows the traceback
        log.debug("loading the %s model failed", backend, exc_info=True)
        raise UserError(f"cannot load the {backend} model {model}: {exc}") from None


# --------------------------------------------------------------------------- library


def denoise_array(
    x: np.ndarray, sample_rate: int, processor: Any | None = None, full_band: bool = True
) -> np.ndarray:
    """Whole signal through the streaming engine: x float32 ``[n]`` or ``[n, C]`` -> same shape.

    Time-aligned with the input (latency removed) and the same length. ``processor`` None is
    identity; ``full_band=False``: the telephone band only above 8 kHz. For evaluation and
    benchmarks; the CLI streams files block by block instead.
    """
    from .streamer import Streamer

    x = np.asarray(x, dtype=np.float32)
    if x.ndim not in (1, 2):
        raise ValueError(f"expected [n] or [n, C] samples, got shape {x.shape}")
    channels = 1 if x.ndim == 1 else x.shape[1]
    streamer = Streamer(
        processor=processor, sample_rate=int(sample_rate), channels=channels, full_band=full_band
    )
    return streamer.process(x)


# --------------------------------------------------------------------------- jobs


@dataclass(frozen=True)
class Job:
    src: str  # path or "-"
    dst: str  # path or "-"


def plan_jobs(paths: list[str], output: str | None) -> list[Job]:
    """Turn the command line into (input, output) pairs, checking everything before any work."""
    if output is None:
        if len(paths) != 2:
            raise UserError(
                "give IN OUT, or IN [IN ...] -o OUT (OUT: a file for one input, else a folder)"
            )
        inputs, output = [paths[0]], paths[1]
    else:
        inputs = paths
    if inputs.count(STDIO) > 1:
        raise UserError("stdin ('-') can be read only once")
    is_dir = output != STDIO and os.path.isdir(output)
    if len(inputs) > 1 and not is_dir:
        if output == STDIO or output.endswith(("/", os.sep)) or not os.path.exists(output):
            raise UserError(f"output folder does not exist: {output}")
        raise UserError(f"with several inputs, the output must be a folder: {output}")
    jobs = []
    for src in inputs:
        if is_dir:
            if src == STDIO:
                raise UserError("stdin input needs an output file name, not a folder")
            dst = os.path.join(output, os.path.basename(src))
        else:
            dst = output
        jobs.append(Job(src, dst))
    seen: dict[str, str] = {}
    for job in jobs:
        check_input(job.src)
        check_output(job)
        if job.dst != STDIO:
            key = os.path.realpath(job.dst)
            if key in seen:
                raise UserError(f"{seen[key]} and {job.src} would both write {job.dst}")
            seen[key] = job.src
    return jobs


def check_input(src: str) -> None:
    if src == STDIO:
        return
    if not os.path.exists(src):
        raise UserError(f"no such file: {src}")
    if os.path.isdir(src):
        raise UserError(f"is a folder, not an audio file: {src}")
    if not os.access(src, os.R_OK):
        raise UserError(f"cannot read {src}: permission denied")


def check_output(job: Job) -> None:
    if job.dst == STDIO:
        if sys.stdout.isatty():
            raise UserError("refusing to write audio to a terminal; redirect stdout or give OUT")
        return
    if job.src != STDIO and os.path.exists(job.dst) and os.path.samefile(job.src, job.dst):
        raise UserError(f"output would overwrite the input: {job.dst}")
    folder = os.path.dirname(job.dst) or "."
    if not os.path.isdir(folder):
        raise UserError(f"output folder does not exist: {folder}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"cannot write to folder {folder}: permission denied")
    if os.path.isdir(job.dst):
        raise UserError(f"output is a folder: {job.dst}")


# --------------------------------------------------------------------------- streaming


def output_format(dst: str, info: sf.SoundFile, subtype: str | None) -> tuple[str, str]:
    """(format, subtype) for the output: OUT's extension, else the input's format."""
    if dst == STDIO:
        fmt = "WAV"
    else:
        fmt = EXT_FORMATS.get(Path(dst).suffix.lower(), info.format)
    if subtype is not None:
        subtype = subtype.upper()
        if not sf.check_format(fmt, subtype):
            raise UserError(f"sample type {subtype} is not available for {fmt} files")
        return fmt, subtype
    if fmt == "OGG" and dst != STDIO and Path(dst).suffix.lower() == ".opus":
        return fmt, "OPUS"
    if sf.check_format(fmt, info.subtype):
        return fmt, info.subtype
    return fmt, sf.default_subtype(fmt)


@contextlib.contextmanager
def open_input(src: str) -> Iterator[IO[bytes] | str]:
    """The input as something soundfile opens; stdin is spooled (soundfile needs to seek)."""
    if src != STDIO:
        yield src
        return
    with tempfile.SpooledTemporaryFile(max_size=64 << 20) as spool:
        shutil.copyfileobj(sys.stdin.buffer, spool, 1 << 20)
        spool.seek(0)
        yield spool


@contextlib.contextmanager
def atomic_output(dst: str) -> Iterator[IO[bytes]]:
    """A temporary file beside ``dst``, renamed onto it on success and removed on any failure."""
    if dst == STDIO:
        with tempfile.TemporaryFile() as tmp:
            yield tmp
            tmp.seek(0)
            shutil.copyfileobj(tmp, sys.stdout.buffer, 1 << 20)
            sys.stdout.buffer.flush()
        return
    folder = os.path.dirname(dst) or "."
    try:
        fd, tmp_path = tempfile.mkstemp(
            dir=folder, prefix=f".{os.path.basename(dst)}.", suffix=".part"
        )
    except OSError as exc:
        raise UserError(f"cannot write to folder {folder}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "w+b") as tmp:
            yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, dst)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_path)
        raise


def process_file(job: Job, processor: Any | None, args: argparse.Namespace) -> float:
    """Stream one file through a fresh ``Streamer`` into its output -> seconds of audio."""
    from .streamer import Streamer

    name = "stdin" if job.src == STDIO else job.src
    with open_input(job.src) as src:
        size = _spool_size(src) if job.src == STDIO else os.path.getsize(job.src)
        if size == 0:
            log.warning("%s is empty (0 bytes): writing an empty output", name)
            with atomic_output(job.dst):
                pass
            return 0.0
        try:
            fin = sf.SoundFile(src)
        except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
            raise UserError(f"cannot read {name}: {_sf_message(exc)}") from None
        with fin:
            fmt, subtype = output_format(job.dst, fin, args.subtype)
            sr, channels, frames = fin.samplerate, fin.channels, fin.frames
            with atomic_output(job.dst) as tmp:
                try:
                    fout = sf.SoundFile(
                        tmp, "w", samplerate=sr, channels=channels, subtype=subtype, format=fmt
                    )
                except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
                    raise UserError(
                        f"cannot write {fmt}/{subtype} at {sr} Hz, {channels} channels: "
                        f"{_sf_message(exc)}"
                    ) from None
                with fout:
                    streamer = Streamer(
                        processor,
                        sample_rate=sr,
                        channels=channels,
                        **streamer_options(args, processor),
                    )
                    return _stream(fin, fout, streamer, name, frames, args) / sr


def _stream(
    fin: sf.SoundFile,
    fout: sf.SoundFile,
    streamer: Any,
    name: str,
    frames: int,
    args: argparse.Namespace,
) -> int:
    """fin -> streamer -> fout, block by block; returns the samples per channel written."""
    sr, channels = fin.samplerate, fin.channels
    block = max(1, int(round(args.block_seconds * sr)))
    buf = np.empty((block, channels), np.float32)
    ybuf = np.empty_like(buf)
    to_drop = streamer.latency_samples
    n_in = n_out = bad = 0
    with _progress(frames, sr, name, args.quiet) as bar:
        while True:
            try:
                n = _read(fin, buf)
            except (sf.LibsndfileError, RuntimeError) as exc:
                raise UserError(f"cannot read {name}: {_sf_message(exc)}") from None
            if n == 0:
                break
            x = buf[:n]
            if not np.isfinite(x).all():
                mask = ~np.isfinite(x)
                bad += int(mask.sum())
                x[mask] = 0.0
            y = streamer.feed(x, out=ybuf[:n])
            n_in += n
            if to_drop:
                k = min(to_drop, len(y))
                y, to_drop = y[k:], to_drop - k
            n_out += _write(fout, y, name)
            bar.update(n / sr)
        if n_in:
            tail = streamer.flush()[to_drop:][: n_in - n_out]
            n_out += _write(fout, tail, name)
    if n_out != n_in:  # the engine's contract, checked where a violation would cost data
        raise RuntimeError(f"wrote {n_out} samples for {n_in} read")
    if bad:
        log.warning("%s: replaced %d NaN/inf samples by 0", name, bad)
    return n_out


def _read(fin: sf.SoundFile, buf: np.ndarray) -> int:
    data = fin.read(len(buf), dtype="float32", always_2d=True, out=buf)
    return len(data)


def _write(fout: sf.SoundFile, y: np.ndarray, name: str) -> int:
    if len(y):
        try:
            fout.write(y)
        except (sf.LibsndfileError, RuntimeError, OSError) as exc:
            raise UserError(f"cannot write the output of {name}: {_sf_message(exc)}") from None
    return len(y)


def _spool_size(f: Any) -> int:
    pos = f.tell()
    size = f.seek(0, os.SEEK_END)
    f.seek(pos)
    return size


def _sf_message(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    # soundfile: "Error opening '/x/y.wav': Format not recognised." -> keep the reason
    if msg.startswith("Error opening") and ": " in msg:
        msg = msg.rsplit(": ", 1)[1]
    return msg.rstrip(".")


class _NoBar:
    def update(self, n: float) -> None:
        pass


@contextlib.contextmanager
def _progress(frames: int, sr: int, name: str, quiet: bool) -> Iterator[Any]:
    if quiet or not sys.stderr.isatty():
        yield _NoBar()
        return
    from tqdm import tqdm

    with tqdm(
        total=round(frames / sr, 2) if frames > 0 else None,
        unit="s",
        desc=os.path.basename(name),
        file=sys.stderr,
        leave=False,
        bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:.1f} s [{rate_fmt}]",
    ) as bar:
        yield bar


# --------------------------------------------------------------------------- entry


def run(args: argparse.Namespace) -> int:
    if not args.block_seconds > 0:
        raise UserError(f"--block-seconds must be > 0, got {args.block_seconds}")
    jobs = plan_jobs(args.paths, args.output)
    processor = processor_from_args(args)
    _warm_up(processor, args.quiet)
    if len(jobs) == 1:
        _run_job(jobs[0], processor, args)
        return 0
    failed = 0
    for job in jobs:
        try:
            _run_job(job, processor, args)
        except UserError as exc:  # report and go on with the other files
            print(f"rtdenoise: error: {exc}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


def _warm_up(processor: Any | None, quiet: bool) -> None:
    """Build the model's compiled steps before the first file (numba caches them: the first
    run after an install compiles, ~20 s of CPU), and say so when that took a while, so that
    neither the progress bar nor the speed of the first file includes it."""
    warm = getattr(getattr(processor, "backend", None), "warm_up", None)
    if warm is None:
        return
    t0 = time.perf_counter()
    built = warm()
    if built and not quiet and time.perf_counter() - t0 > WARM_UP_NOTE_S:
        print(
            f"rtdenoise: built the engine's compiled kernels in {time.perf_counter() - t0:.0f} s"
            " (one time: later runs load them from the cache)",
            file=sys.stderr,
        )


def _run_job(job: Job, processor: Any | None, args: argparse.Namespace) -> None:
    """process_file, then (unless quiet) one line: input -> output, audio seconds, speed."""
    t0 = time.perf_counter()
    seconds = process_file(job, processor, args)
    if not args.quiet:
        print(summary_line(job, seconds, time.perf_counter() - t0), file=sys.stderr)


def summary_line(job: Job, seconds: float, elapsed: float) -> str:
    """``noisy.wav -> clean.wav: 7.44 s of audio in 0.21 s (35x real time)``."""
    src = "stdin" if job.src == STDIO else job.src
    dst = "stdout" if job.dst == STDIO else job.dst
    speed = f"{seconds / elapsed:.0f}x real time" if elapsed > 0 and seconds > 0 else "empty"
    return f"{src} -> {dst}: {seconds:.2f} s of audio in {elapsed:.2f} s ({speed})"
