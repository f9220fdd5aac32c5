"""The Python API: denoise arrays in one call, or chunk by chunk from an audio callback.

    import rtdenoise

    clean = rtdenoise.denoise(noisy, 48000)        # [n] or [n, channels] -> same shape, float32

    d = rtdenoise.Denoiser(48000, channels=2)       # one stream, fixed delay d.latency_samples
    y = d.process(chunk)                            # [n, 2] -> [n, 2], any n (even 0)
    d.process(chunk, out=buf)                       # float32 chunk + out: allocates nothing
    tail = d.flush()                                # the last latency_samples samples
    d.reset()                                       # a new stream

Audio layout is soundfile's: ``[n]`` (mono) or ``[n, channels]``, samples along axis 0.
Samples are float (full scale +-1.0; float64 is processed as float32) or int16/int32 (scaled
by 1/2**15 and 1/2**31, as soundfile reads them); results are float32 at full scale +-1.0. The
sample rate is any positive integer in Hz; the model runs at 8 kHz (resampled in and out; above
8 kHz the band the model does not see is added back, gated by its output, unless
``narrowband=True``) and multi-channel audio is denoised per channel.

Both run the engine of ``rtdenoise file`` and ``rtdenoise live`` (:class:`~.streamer.Streamer`
over :func:`~.file_mode.build_processor`): the same default model (the shipped low-latency
ONNX model, ``lowlat.onnx``, 15.4 ms of algorithmic latency, no torch; ``latency_mode=
"standard"`` runs the standard-framing one, ``default.onnx``, 64.75 ms), knobs and results.
Bad arguments raise ``ValueError`` with a message naming the argument.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from .backends import KINDS, LATENCY_MODES, MAX_BLOCK_FRAMES
from .errors import UserError

#: integer sample types and their full scale (soundfile's convention)
_INT_SCALE = {np.dtype(np.int16): 2.0**-15, np.dtype(np.int32): 2.0**-31}


class Denoiser:
    """A denoising stream: chunks in, as many samples out, delayed by ``latency_samples``.

    sample_rate: Hz of the audio given and returned (any positive integer).
    channels: C; chunks are ``[n]`` (C == 1) or ``[n, C]``.
    model: model file; None = the shipped model that ``latency_mode`` picks.
    latency_mode: which shipped model, as ``--latency-mode``: 'low' (None, the default:
        ``rtdenoise/models/lowlat.onnx``, 15.4 ms STFT latency) or 'standard' (the design's
        symmetric framing, ``rtdenoise/models/default.onnx``, 64.75 ms); not with ``model``
        (a model runs on the framing it was trained for).
    atten_lim_db: most attenuation in dB, >= 0 (None = the model's own: 40 dB for the
        low-latency model and the standard one; 100 = effectively no limit).
    wet: dry/wet mix in [0, 1] (None = 1, fully denoised).
    pitch_postfilter: strength in [0, 1] of the pitch comb on the output
        (:mod:`rtdenoise.postfilter`; None = the model's own: 0.5 for the low-latency model,
        0 = off).
    backend: 'onnx', 'torchscript' or 'torch' (the last two need torch); None = from the model
        file name (``*.jit.pt`` torchscript, ``*.pt`` torch, else onnx).
    block_frames: STFT frames per model call, 1..16 (None = the model's, 4): each frame more
        adds 31 samples at 8 kHz (3.9 ms) of latency and lowers the CPU cost.
    passthrough: no model, only the engine (resampling, STFT, overlap-add).
    narrowband: above 8 kHz, return only the telephone band the model denoises (0-3.4 kHz);
        False (default): full band, the band above 4 kHz gated by the model's output.

    ``process(chunk)[t] = denoised(chunk stream)[t - latency_samples]``: a stream starts with
    ``latency_samples`` samples of silence (at rates other than 8 kHz the resampler's ~2 ms
    lead-in of the first input ends it), ``flush()`` returns what is still inside. The
    stream's state (model and buffers) carries across calls until ``reset()``.
    """

    def __init__(
        self,
        sample_rate: int,
        channels: int = 1,
        model: str | Path | None = None,
        atten_lim_db: float | None = None,
        wet: float | None = None,
        *,
        backend: str | None = None,
        block_frames: int | None = None,
        latency_mode: str | None = None,
        passthrough: bool = False,
        narrowband: bool = False,
        pitch_postfilter: float | None = None,
        _whole_signals: bool = False,
    ) -> None:
        from .file_mode import FILE_BLOCK_FRAMES, build_processor, model_block_frames
        from .streamer import Streamer

        self.sample_rate = _positive_int("sample_rate", sample_rate)
        self.channels = _positive_int("channels", channels)
        backend = _check_options(model, atten_lim_db, wet, backend, block_frames, latency_mode)
        if pitch_postfilter is not None and not 0.0 <= pitch_postfilter <= 1.0:
            raise ValueError(f"pitch_postfilter must be between 0 and 1, got {pitch_postfilter!r}")
        # whole signals only (``denoise()``): as ``rtdenoise file``, the cheapest block size
        # with the output of the model's own (the latency is removed anyway)
        align = _whole_signals and block_frames is None
        if align:
            block_frames = FILE_BLOCK_FRAMES
        try:
            processor = build_processor(
                passthrough=bool(passthrough),
                backend=backend,
                model=None if model is None else str(model),
                atten_lim_db=None if atten_lim_db is None else float(atten_lim_db),
                wet=None if wet is None else float(wet),
                block_frames=None if block_frames is None else int(block_frames),
                latency_mode=latency_mode,
                pitch_postfilter=None if pitch_postfilter is None else float(pitch_postfilter),
            )
        except UserError as exc:  # e.g. a model file that does not load: one clear line
            raise ValueError(str(exc)) from None
        self._streamer = Streamer(
            processor,
            self.sample_rate,
            self.channels,
            full_band=not narrowband,
            align_block_frames=model_block_frames(processor) if align and processor else None,
        )
        self._scratch = np.zeros(0, np.float32)  # dtype conversion of non-float32 chunks

    def __repr__(self) -> str:
        return (
            f"Denoiser(sample_rate={self.sample_rate}, channels={self.channels}, "
            f"latency_samples={self.latency_samples})"
        )

    @property
    def latency_samples(self) -> int:
        """Delay of ``process`` in samples at ``sample_rate`` (fixed for the stream)."""
        return self._streamer.latency_samples

    @property
    def latency_ms(self) -> float:
        """``latency_samples`` in milliseconds."""
        return self._streamer.latency_ms

    def process(self, chunk: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Denoise the next chunk of the stream: ``[n]`` or ``[n, C]`` -> float32, same shape.

        ``out``: float32 array of the chunk's shape to write into (returned); with a float32
        chunk nothing is allocated, so this may run in an audio callback (it runs the model:
        about 0.7 ms of CPU per 10 ms chunk at 48 kHz with ``block_frames=1``, 0.3 ms with the
        default 4, measured on one core). ``out`` may be the chunk itself. Raises
        ``ValueError`` for a wrong shape or dtype and for NaN/inf samples (they would corrupt
        the model's state for the next second).
        """
        x = self._as_float32(chunk)
        # a float32 sum allocates nothing and is finite unless a sample is not (or |x| > 1e34)
        if not math.isfinite(x.sum()) and not np.isfinite(x).all():
            raise ValueError("chunk contains NaN or infinite samples")
        return self._streamer.feed(x, out=out)

    def flush(self) -> np.ndarray:
        """The stream's last ``latency_samples`` samples (``[L]`` or ``[L, C]``, float32).

        Feeds silence; call ``reset()`` before using the stream for new audio.
        """
        return self._streamer.flush()

    def reset(self) -> None:
        """Forget the stream (model state and buffers): the next chunk starts a new one."""
        self._streamer.reset()

    def denoise(self, audio: np.ndarray) -> np.ndarray:
        """A whole signal ``[n]`` or ``[n, C]`` -> float32, same shape, time-aligned (the
        latency removed). Resets the stream first; reuses the loaded model."""
        x = _as_float_array(audio, self.channels)
        return self._streamer.process(x)

    def _as_float32(self, chunk: np.ndarray) -> np.ndarray:
        """float32 as it is; other sample types converted into a scratch buffer (reused)."""
        a = np.asarray(chunk)
        if a.dtype == np.float32:
            return a
        scale = _sample_scale(a.dtype)
        if self._scratch.size < a.size:
            self._scratch = np.empty(a.size, np.float32)
        x = self._scratch[: a.size].reshape(a.shape)
        if scale == 1.0:
            np.copyto(x, a, casting="same_kind")
        else:
            np.multiply(a, np.float32(scale), out=x, casting="unsafe")
        return x


def denoise(audio: np.ndarray, sample_rate: int, **options: Any) -> np.ndarray:
    """Denoise a whole signal: ``[n]`` or ``[n, channels]`` at ``sample_rate`` Hz -> float32,
    same shape, time-aligned with the input (no delay) and full scale +-1.0.

    audio: float (+-1.0) or int16/int32 samples, soundfile's layout (samples along axis 0).
    options: the keyword arguments of :class:`Denoiser` (``model``, ``latency_mode``,
        ``atten_lim_db``, ``wet``, ``pitch_postfilter``, ``backend``, ``block_frames``,
        ``passthrough``, ``narrowband``); the channels come from ``audio``.

    Loads the model on every call: to denoise many signals, make one :class:`Denoiser` and
    call its ``denoise``. Equals ``rtdenoise file`` on the same samples, and runs the model as
    it does (16 frames per call unless ``block_frames`` is given: the same output as the
    model's own 4, at about half the model's CPU).
    """
    if "channels" in options:
        raise ValueError("channels come from the shape of audio ([n] or [n, channels])")
    a = np.asarray(audio)
    channels = a.shape[1] if a.ndim == 2 else 1
    _check_layout(a, channels)
    return Denoiser(sample_rate, channels, **options, _whole_signals=True).denoise(a)


# --------------------------------------------------------------------------- checks


def _positive_int(name: str, value: Any) -> int:
    ok = isinstance(value, (int, np.integer, float, np.floating)) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or value != int(value) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _check_options(
    model: str | Path | None,
    atten_lim_db: float | None,
    wet: float | None,
    backend: str | None,
    block_frames: int | None,
    latency_mode: str | None = None,
) -> str:
    """Range checks with the Python names; returns the backend (inferred from the model)."""
    if latency_mode is not None and (
        not isinstance(latency_mode, str) or latency_mode not in LATENCY_MODES
    ):
        raise ValueError(f"latency_mode must be 'low' or 'standard', got {latency_mode!r}")
    if latency_mode is not None and model is not None:
        raise ValueError(
            "latency_mode picks a shipped model; model brings its own framing: give one"
        )
    if atten_lim_db is not None and not atten_lim_db >= 0:
        raise ValueError(f"atten_lim_db must be >= 0 dB, got {atten_lim_db!r}")
    if wet is not None and not 0.0 <= wet <= 1.0:
        raise ValueError(f"wet must be between 0 and 1, got {wet!r}")
    if block_frames is not None and (
        int(block_frames) != block_frames or not 1 <= block_frames <= MAX_BLOCK_FRAMES
    ):
        raise ValueError(
            f"block_frames must be an integer in 1..{MAX_BLOCK_FRAMES}, got {block_frames!r}"
        )
    if model is not None and not Path(model).is_file():
        raise ValueError(f"model file not found: {model}")
    if backend is None:
        backend = _backend_for(model)
    if backend not in KINDS:
        raise ValueError(f"backend must be one of {', '.join(KINDS)}, got {backend!r}")
    return backend


def _backend_for(model: str | Path | None) -> str:
    """The backend a model file is for, from its name (``*.jit.pt``, ``*.pt``, else ONNX)."""
    name = "" if model is None else Path(model).name.lower()
    if name.endswith(".jit.pt"):
        return "torchscript"
    return "torch" if name.endswith((".pt", ".pth")) else "onnx"


def _sample_scale(dtype: np.dtype) -> float:
    if dtype.kind == "f":
        return 1.0
    if dtype in _INT_SCALE:
        return _INT_SCALE[dtype]
    raise ValueError(f"samples must be float, int16 or int32, got {dtype}")


def _check_layout(a: np.ndarray, channels: int) -> None:
    if a.ndim not in (1, 2) or (a.ndim == 1 and channels != 1):
        raise ValueError(f"audio must be [n] or [n, {channels}] samples, got shape {a.shape}")
    if a.ndim == 2 and a.shape[1] > 16 and a.shape[1] > a.shape[0]:
        raise ValueError(
            f"audio of shape {a.shape} has more channels than samples: the layout is "
            "[n, channels] (soundfile's); for [channels, n] pass audio.T"
        )
    if a.ndim == 2 and a.shape[1] != channels:
        raise ValueError(f"audio must be [n] or [n, {channels}] samples, got shape {a.shape}")


def _as_float_array(audio: np.ndarray, channels: int) -> np.ndarray:
    """Checked ``[n]``/``[n, C]`` samples as float32 (a copy unless already float32)."""
    a = np.asarray(audio)
    _check_layout(a, channels)
    scale = _sample_scale(a.dtype)
    x = a.astype(np.float32, copy=False) if scale == 1.0 else (a * scale).astype(np.float32)
    if not np.isfinite(x).all():
        raise ValueError("audio contains NaN or infinite samples")
    return x
