"""Streaming rational resampler between a device rate and the model's 8 kHz.

A polyphase FIR: up by ``L``, lowpass at the intermediate rate ``sr_in * L``, down by ``M``
(``L / M = sr_out / sr_in`` in lowest terms, e.g. 80 / 441 for 44.1 kHz -> 8 kHz). The lowpass is
a linear-phase Kaiser-window design made by scipy at construction: flat to 3.4 kHz (ripple far
below 0.01 dB) and at least 60 dB down from 4.6 kHz, which is both the anti-alias filter on the
way down to 8 kHz and the anti-image filter on the way up. The stopband starts at 8 - 3.4 kHz,
not at the 4 kHz Nyquist: what leaks through 4.0-4.6 kHz aliases to 3.4-4.0 kHz, above the
passband, never into it; on the way up the images of 0-3.4 kHz start at 4.6 kHz. The transition
band is twice as wide, so the filter is half as long: its group delay is whole output samples
(``delay``, about 1.7 ms at every rate, 3.4 ms for the round trip instead of 6.8).

``prior_delay`` (in input samples) aligns a chain instead: the delay already in the signal (e.g.
the down-resampler's plus the STFT's, 545 samples at 8 kHz) plus this filter's own delay is made
a whole number of output samples (``total_delay``), at the price of a fractional ``delay``. At
22.05 and 44.1 kHz a device -> 8 kHz -> device chain cannot be whole otherwise.

Streaming state is the last ``T - 1`` input samples (``T`` taps per polyphase branch) and the
phase of the next output, so feeding a signal in any chunking gives the same samples as feeding
it at once. After ``N`` input samples in total the resampler has produced exactly
``ceil(N * L / M)`` output samples (``total_output(N)``); output ``m`` depends on the input up to
sample ``floor(m * M / L)`` only (causal, no block buffering beyond the filter itself).

Kernels (numba): integer ratios (16 and 48 kHz) run one broadcast tap at a time over a run of
outputs, which vectorises (about 0.15 ms of CPU per second of 48 kHz audio each way); 22.05 and
44.1 kHz use a dot product per output (about 0.4-0.9 ms per second). Nothing is allocated per
call beyond the output (none with ``out=``) once the work buffers have grown to the chunk size.

Why not soxr: ``soxr.ResampleStream`` withholds 40-170 ms of output (block processing, LQ to HQ)
and does not expose its delay; the budget here is a few ms each way.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
from numba import njit
from scipy import signal

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ResamplerDesign:
    """Lowpass specification shared by every rate pair (one side is always 8 kHz)."""

    passband_hz: float = 3400.0
    #: 8000 - passband_hz: aliases of 4.0-4.6 kHz land above the passband (see the module doc)
    stopband_hz: float = 4600.0
    #: Kaiser design target; the tests check >= 60 dB from ``stopband_hz`` on
    attenuation_db: float = 66.0


@njit(cache=True, fastmath=True, nogil=True)
def _load(x, buf, h):  # pragma: no cover - compiled
    """Append x [n, C] after the T-1 = h history samples in buf [C, cap]."""
    n, C = x.shape
    for c in range(C):
        for i in range(n):
            buf[c, h + i] = x[i, c]


@njit(cache=True, fastmath=True, nogil=True)
def _keep_history(buf, h, n):  # pragma: no cover - compiled
    """Move the last h of the h + n samples in buf to the front (forward copy, no overlap issue)."""
    for c in range(buf.shape[0]):
        for j in range(h):
            buf[c, j] = buf[c, n + j]


# The FIR loops live in their own small functions: inlined into the callers' bigger loop nests,
# LLVM stopped vectorising them (10x slower). 2-D indexing for the same reason (no row views).
@njit(cache=True, fastmath=True, nogil=True)
def _fir(taps, p, buf, c, acc, n):  # pragma: no cover - compiled
    """acc[k] = taps[p] . buf[c, k : k+T] for k < n, one broadcast tap per pass."""
    for k in range(n):
        acc[k] = 0.0
    for j in range(taps.shape[1]):
        tj = taps[p, j]
        for k in range(n):
            acc[k] += tj * buf[c, k + j]


@njit(cache=True, fastmath=True, nogil=True)
def _fir_streams(taps, streams, acc, n_out, M):  # pragma: no cover - compiled
    """acc[m] = sum_j taps[0, j] * streams[j % M, m + j // M] for m < n_out."""
    for m in range(n_out):
        acc[m] = 0.0
    for j in range(taps.shape[1]):
        tj = taps[0, j]
        q = j % M
        o = j // M
        for m in range(n_out):
            acc[m] += tj * streams[q, m + o]


@njit(cache=True, fastmath=True, nogil=True)
def _dot(taps, p, buf, c, base):  # pragma: no cover - compiled
    """taps[p] . buf[c, base : base+T]"""
    a = np.float32(0.0)
    for j in range(taps.shape[1]):
        a += taps[p, j] * buf[c, base + j]
    return a


@njit(cache=True, fastmath=True, nogil=True)
def _interpolate(x, buf, taps, acc, out):  # pragma: no cover - compiled
    """Integer up-sampling by L = taps.shape[0]: out[k*L + p] = taps[p] . buf[k : k+T].

    Vectorised over k (one broadcast tap per pass), which is several times faster than a dot
    product per output. x [n, C], out [n*L, C], acc scratch [>= n].
    """
    n, C = x.shape
    L, T = taps.shape
    _load(x, buf, T - 1)
    for c in range(C):
        for p in range(L):
            _fir(taps, p, buf, c, acc, n)
            for k in range(n):
                out[k * L + p, c] = acc[k]
    _keep_history(buf, T - 1, n)


@njit(cache=True, fastmath=True, nogil=True)
def _decimate(x, buf, taps, M, t0, streams, acc, out):  # pragma: no cover - compiled
    """Integer down-sampling by M: out[m] = taps[0] . buf[t0 + m*M : t0 + m*M + T].

    The window start advances by M per output, so the input is first split into M contiguous
    streams (streams[q, r] = buf[t0 + q + r*M]) and each tap is a contiguous pass over outputs.
    Returns the new t0.
    """
    n, C = x.shape
    T = taps.shape[1]
    n_out = out.shape[0]
    S = (T + M - 1) // M  # taps per stream
    R = n_out + S - 1
    _load(x, buf, T - 1)
    for c in range(C):
        for q in range(M):
            for r in range(R):
                i = t0 + q + r * M
                streams[q, r] = buf[c, i] if i < T - 1 + n else 0.0
        _fir_streams(taps, streams, acc, n_out, M)
        for m in range(n_out):
            out[m, c] = acc[m]
    _keep_history(buf, T - 1, n)
    return t0 + n_out * M - n


@njit(cache=True, fastmath=True, nogil=True)
def _rational(x, buf, taps, L, M, t0, out):  # pragma: no cover - compiled
    """General L/M polyphase: one dot product per output (used for 22.05 and 44.1 kHz).

    out[m] = taps[p] . buf[base : base+T] with t = t0 + m*M, base = t // L, p = t % L
    (tracked incrementally: no integer division per output). Returns the new t0 (0 <= t0 < M).
    """
    n, C = x.shape
    T = taps.shape[1]
    _load(x, buf, T - 1)
    base = t0 // L
    p = t0 - base * L
    db = M // L
    dp = M - db * L
    for m in range(out.shape[0]):
        for c in range(C):
            out[m, c] = _dot(taps, p, buf, c, base)
        base += db
        p += dp
        if p >= L:
            p -= L
            base += 1
    _keep_history(buf, T - 1, n)
    return (base - n) * L + p


class StreamingResampler:
    """Resample ``[n, C]`` float32 chunks from ``sr_in`` to ``sr_out`` with state across chunks.

    ``process(x [n, C]) -> y [m, C]`` accepts any ``n`` (including 0 and 1); ``m`` varies from
    call to call (``output_length(n)`` says how many before the call). ``delay`` is the group
    delay in output samples: ``y[k]`` is the band-limited input at output time ``k - delay``;
    an ``int`` by default, an exact ``Fraction`` when ``prior_delay`` asks for alignment, and then
    ``total_delay = prior_delay * sr_out / sr_in + delay`` is the whole number.
    Equal rates are an exact pass-through with ``delay == 0``.
    """

    def __init__(
        self,
        sr_in: int,
        sr_out: int,
        channels: int = 1,
        design: ResamplerDesign = ResamplerDesign(),  # noqa: B008 - frozen, shared default
        prior_delay: int | Fraction = 0,
    ) -> None:
        if int(sr_in) != sr_in or int(sr_out) != sr_out or sr_in <= 0 or sr_out <= 0:
            raise ValueError(f"sample rates must be positive integers, got {sr_in} -> {sr_out}")
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        self.sr_in = int(sr_in)
        self.sr_out = int(sr_out)
        self.channels = int(channels)
        self.design = design
        g = math.gcd(self.sr_in, self.sr_out)
        self.up = self.sr_out // g  # L
        self.down = self.sr_in // g  # M
        self.prior_delay = Fraction(prior_delay)
        self.delay: int | Fraction
        if self.up == self.down:
            self.taps = np.ones((1, 1), np.float32)
            self.delay = 0
        else:
            self.taps, self.delay = _design(
                self.sr_in, self.up, self.down, design, self.prior_delay
            )
        self._t = 0
        self._buf = np.zeros((self.channels, self.taps.shape[1] - 1), np.float32)
        self._acc = np.zeros(0, np.float32)
        self._streams = np.zeros((self.down, 0), np.float32)
        self._cap = 0
        self._ensure(1024)

    def _ensure(self, n: int) -> None:
        """Grow the work buffers (never shrinks: steady-state calls allocate nothing)."""
        if n <= self._cap:
            return
        h = self.taps.shape[1] - 1
        cap = max(n, 2 * self._cap)
        buf = np.zeros((self.channels, h + cap), np.float32)
        buf[:, :h] = self._buf[:, :h]
        self._buf = buf
        m_cap = -(-cap * self.up // self.down) + 1
        self._acc = np.zeros(max(cap, m_cap), np.float32)
        if self.up == 1:
            self._streams = np.zeros((self.down, m_cap + -(-(h + 1) // self.down)), np.float32)
        self._cap = cap

    @property
    def identity(self) -> bool:
        return self.up == self.down

    @property
    def taps_per_phase(self) -> int:
        """T: multiply-adds per output sample and channel."""
        return self.taps.shape[1]

    @property
    def latency_s(self) -> float:
        """Group delay in seconds."""
        return float(self.delay / self.sr_out)

    @property
    def total_delay(self) -> int | Fraction:
        """``prior_delay`` (converted to output samples) plus ``delay``; whole when alignable."""
        t = self.prior_delay * self.up / self.down + self.delay
        return int(t) if t.denominator == 1 else t

    def total_output(self, n_in: int) -> int:
        """Output samples produced in total after ``n_in`` input samples in total (any chunking)."""
        return -((-n_in * self.up) // self.down)

    def output_length(self, n: int) -> int:
        """How many samples the next ``process`` of ``n`` input samples will return."""
        if self.identity:
            return n
        return max(0, -((self._t - n * self.up) // self.down))

    def reset(self) -> None:
        """Forget the past: the next chunk starts a new stream (zeros before it)."""
        self._buf[:] = 0.0
        self._t = 0

    def process(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """x: float32 ``[n, C]`` (or ``[n]`` when C == 1) -> ``[m, C]`` (or ``[m]``).

        ``out``, if given, must be float32 with at least ``output_length(n)`` rows; the result is a
        view of its first rows (nothing is allocated then, except when a chunk is larger than any
        before it).
        """
        x = np.asarray(x, dtype=np.float32)
        flat = x.ndim == 1
        x2 = x[:, None] if flat else x
        if x2.ndim != 2 or x2.shape[1] != self.channels:
            raise ValueError(f"expected [n, {self.channels}] samples, got shape {x.shape}")
        n = x2.shape[0]
        m = self.output_length(n)
        if out is None:
            y = np.empty((m, self.channels), np.float32)
        else:
            y = (out[:, None] if out.ndim == 1 else out)[:m]
            if y.shape != (m, self.channels) or y.dtype != np.float32:
                raise ValueError(f"out must be float32 with >= {m} rows of {self.channels}")
        if self.identity:
            y[:] = x2
        elif n:
            self._ensure(n)
            if self.down == 1:
                _interpolate(x2, self._buf, self.taps, self._acc, y)
            elif self.up == 1:
                self._t = _decimate(
                    x2, self._buf, self.taps, self.down, self._t, self._streams, self._acc, y
                )
            else:
                self._t = _rational(x2, self._buf, self.taps, self.up, self.down, self._t, y)
        return y[:, 0] if flat else y


def _design(
    sr_in: int, up: int, down: int, d: ResamplerDesign, prior: Fraction = Fraction(0)
) -> tuple[np.ndarray, int | Fraction]:
    """Kaiser lowpass at ``sr_in * up`` -> (polyphase taps float32 [up, T], delay in outputs).

    The half-length ``D`` (intermediate-rate samples, odd length ``2D + 1``) is the smallest that
    meets the attenuation and makes ``prior * up + D`` a multiple of ``down``: with ``prior`` 0
    the delay ``D / down`` is whole; otherwise the chain's is.
    """
    fs_mid = sr_in * up
    nyq = fs_mid / 2
    # never where the lower rate's aliases (or images) of the passband fall
    edge = min(d.stopband_hz, 2 * min(nyq / up, nyq / down) - d.passband_hz)
    width = edge - d.passband_hz
    if width <= 0:
        raise ValueError(f"rates {sr_in} -> {sr_in * up // down} leave no room for the filter")
    numtaps, beta = signal.kaiserord(d.attenuation_db, width / nyq)
    half = numtaps // 2  # ceil((numtaps - 1) / 2)
    prior_mid = prior * up
    if prior_mid.denominator != 1:
        log.warning("prior delay %s is not whole at the intermediate rate: rounded", prior)
    half += (-(round(prior_mid) + half)) % down
    numtaps = 2 * half + 1
    h = signal.firwin(numtaps, (d.passband_hz + edge) / 2, window=("kaiser", beta), fs=fs_mid)
    h *= up / h.sum()  # unit gain at DC after zero-stuffing
    T = -(-numtaps // up)
    padded = np.zeros(T * up)
    padded[:numtaps] = h
    # branch p holds h[p + i*up], i = 0..T-1, reversed so the dot runs forward in time
    taps = padded.reshape(T, up).T[:, ::-1]
    delay = Fraction(half, down)
    log.debug(
        "resampler %d -> %d: L=%d M=%d, %d taps, delay %s",
        sr_in,
        sr_in * up // down,
        up,
        down,
        numtaps,
        delay,
    )
    return np.ascontiguousarray(taps, dtype=np.float32), (
        int(delay) if delay.denominator == 1 else delay
    )
