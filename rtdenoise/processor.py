"""Frame processors: what the streamer does to each block of STFT frames.

A processor sees complex STFT frames ``[C, K, F]`` (C channels, K frames, F bins) and writes the
processed frames into a preallocated output of the same shape. The identity processor is the
passthrough; the mask processor runs a model backend and applies its mask to the noisy spectrum.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
from numba import njit

from .stft import StftConfig

#: attenuation limit that is effectively none (a gain floor of 1e-5)
NO_LIMIT_DB = 100.0


class FrameProcessor(Protocol):
    #: frames per call (K); the streamer buffers frames until it has this many
    block_frames: int
    #: future frames the processor needs beyond the block (0 = causal). A processor with
    #: lookahead L is a delay line: given input frames [j, j+K) it writes the processed frames
    #: [j-L, j-L+K) (frame j-L is final once frame j is seen). The streamer discards the first L
    #: frames written after reset() and adds L*hop samples to its latency.
    lookahead_frames: int

    def reset(self, channels: int) -> None:
        """Forget all state; the next call starts a new stream of ``channels`` channels."""

    def process(
        self, frames: np.ndarray, out: np.ndarray, samples: np.ndarray | None = None, start: int = 0
    ) -> None:
        """frames: complex64 ``[C, K, F]`` -> out (same shape, preallocated, written in place).

        ``samples``, ``start``: the 8 kHz input the frames were cut from (float32 ``[C, n]``;
        frame j at ``start + j * hop``, ``stft.HISTORY`` samples kept before it), for a
        processor whose ``needs_samples`` is true (a model with the pitch channel)."""


class IdentityProcessor:
    """Passthrough: output frames equal input frames."""

    def __init__(self, block_frames: int = 1) -> None:
        self.block_frames = block_frames
        self.lookahead_frames = 0

    def reset(self, channels: int) -> None:
        pass

    needs_samples = False

    def process(
        self, frames: np.ndarray, out: np.ndarray, samples: np.ndarray | None = None, start: int = 0
    ) -> None:
        out[...] = frames


class MaskProcessor:
    """Runs a model backend on each block and applies its real gain mask to the noisy spectrum.

    ``gain = max(mask, 10**(-atten_lim_db/20))``; ``out = (wet * gain + 1 - wet) * frames``.
    Runtime knobs, separate from the weights: ``atten_lim_db`` (most attenuation; default: the
    model's metadata ``atten_lim_db``, chosen on validation data at export, else 100 dB, i.e.
    effectively none), ``wet`` (dry/wet mix, 1 = fully processed) and ``pitch_postfilter``
    (the strength of the streamer's comb on the output, :mod:`rtdenoise.postfilter`; default:
    the model's metadata ``pitch_postfilter``, else 0 = off).

    With a backend lookahead of L frames the processor is a delay line: the mask returned for
    input frames ``[j, j+K)`` belongs to frames ``[j-L, j-L+K)``, which it applies to the frames
    it delayed by L (see :class:`FrameProcessor`). Buffers are allocated in ``reset``.
    """

    def __init__(
        self,
        backend: object,
        atten_lim_db: float | None = None,
        wet: float = 1.0,
        pitch_postfilter: float | None = None,
    ) -> None:
        meta = getattr(backend, "meta", None) or {}
        #: the framing the model was trained for (its metadata; older models: the design's)
        self.stft = StftConfig.from_dict(meta.get("stft", {}))
        if atten_lim_db is None:
            atten_lim_db = float(meta.get("atten_lim_db", NO_LIMIT_DB))
        if not atten_lim_db >= 0:
            raise ValueError(f"atten_lim_db must be >= 0, got {atten_lim_db}")
        if not 0.0 <= wet <= 1.0:
            raise ValueError(f"wet must be in [0, 1], got {wet}")
        if pitch_postfilter is None:
            pitch_postfilter = float(meta.get("pitch_postfilter", 0.0))
        if not 0.0 <= pitch_postfilter <= 1.0:
            raise ValueError(f"pitch_postfilter must be in [0, 1], got {pitch_postfilter}")
        self.backend = backend
        #: whether :meth:`process` needs the input samples (the backend's model reads them)
        self.needs_samples = bool(getattr(backend, "needs_samples", False))
        self.block_frames = int(backend.block_frames)
        self.lookahead_frames = int(backend.lookahead_frames)
        self.atten_lim_db = float(atten_lim_db)
        self.wet = float(wet)
        #: the output comb's strength as the streamer applies it (scaled by ``wet``)
        self.pitch_postfilter = float(pitch_postfilter) * self.wet
        self.floor = np.float32(10.0 ** (-self.atten_lim_db / 20.0))
        self._dry = np.float32(1.0 - self.wet)  # as numpy casts ``gain += 1.0 - wet``
        self._shape: tuple[int, ...] = ()
        self.reset(1)

    def reset(self, channels: int) -> None:
        self.backend.reset(channels)
        self.channels = int(channels)
        self._shape = ()
        self._alloc((self.channels, self.block_frames, 0))

    def _alloc(self, shape: tuple[int, ...]) -> None:
        c, k, f = shape
        self._shape = shape
        self._ri = np.zeros((c, k, f, 2), np.float32)
        self._gain = np.zeros((c, k, f), np.float32)
        self._delay = np.zeros((c, self.lookahead_frames + k, f), np.complex64)

    def process(
        self, frames: np.ndarray, out: np.ndarray, samples: np.ndarray | None = None, start: int = 0
    ) -> None:
        """frames complex64 ``[C, K, F]`` -> out ``[C, K, F]`` (preallocated, may not alias);
        ``samples``, ``start`` as :meth:`FrameProcessor.process` (read where the model needs
        them)."""
        if frames.shape != self._shape:
            if frames.shape[0] != self.channels:
                raise ValueError(f"got {frames.shape[0]} channels, reset() was for {self.channels}")
            self._alloc(frames.shape)  # first call, or a new block size: once, not per hop
        c, k, f = frames.shape
        if frames.dtype == np.complex64 and frames.flags.c_contiguous:
            ri = frames.view(np.float32).reshape(c, k, f, 2)  # (re, im) interleaved: no copy
        else:
            ri = self._ri
            ri[..., 0] = frames.real
            ri[..., 1] = frames.imag
        mask = (
            self.backend.step(ri, samples, start) if self.needs_samples else self.backend.step(ri)
        )
        la = self.lookahead_frames
        if la == 0 and frames.dtype == np.complex64 and out.dtype == np.complex64:
            # one compiled pass (live mode calls this every 3.9 ms with one frame)
            _gain_apply(frames, mask, self.floor, np.float32(self.wet), self._dry, out)
            return
        gain = self._gain
        np.maximum(mask, self.floor, out=gain)
        if self.wet != 1.0:
            gain *= self.wet
            gain += 1.0 - self.wet
        if la == 0:
            _apply_gain(frames, gain, out)
            return
        d = self._delay
        d[:, la:] = frames
        _apply_gain(d[:, :k], gain, out)
        d[:, :la] = d[:, k : k + la]  # numpy buffers overlapping copies itself


@njit(cache=True, nogil=True)
def _gain_apply(frames, mask, floor, wet, dry, out):  # pragma: no cover - compiled
    """out = frames * g, g = max(mask, floor) (then wet * g + dry unless wet == 1): the numpy
    path's float32 operations in the same order (no fastmath: bit for bit the same), one pass.
    frames / out complex64 ``[C, K, F]``, mask float32 ``[C, K, F]``."""
    ch, k, f = frames.shape
    mix = wet != np.float32(1.0)
    for c in range(ch):
        for i in range(k):
            for j in range(f):
                m = mask[c, i, j]
                g = m if (m >= floor or m != m) else floor  # np.maximum: NaN propagates
                if mix:
                    g = g * wet
                    g = g + dry
                v = frames[c, i, j]
                out[c, i, j] = complex(v.real * g, v.imag * g)


def _apply_gain(frames: np.ndarray, gain: np.ndarray, out: np.ndarray) -> None:
    """out = frames * gain: complex ``[C, K, F]`` times real ``[C, K, F]``, no temporaries.

    ``np.multiply(complex, real)`` casts the gain to a complex buffer on every call; scaling
    the real and imaginary parts separately gives the same numbers and allocates nothing.
    """
    if np.iscomplexobj(frames) and out.dtype == frames.dtype:
        np.multiply(frames.real, gain, out=out.real)
        np.multiply(frames.imag, gain, out=out.imag)
    else:
        np.multiply(frames, gain, out=out)
