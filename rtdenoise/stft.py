"""STFT analysis and synthesis with the design's framing (8 kHz, nperseg 519, noverlap 488).

Two layers:

* offline :func:`stft` / :func:`istft`, equal to ``scipy.signal.stft`` / ``istft`` with the same
  arguments (``boundary='zeros'``, ``padded=True``, ``scaling='spectrum'``), but with frames on
  the second-to-last axis: ``[..., frames, F]`` (scipy returns ``[..., F, frames]``);
* streaming :class:`StftAnalyzer` (samples in any chunk sizes -> exactly the offline frames) and
  :class:`StftSynthesizer` (overlap-add with the *exact* window normalisation; hop 31 does not
  divide 519, so the sum of squared windows is not constant: it is periodic with period ``hop``
  in steady state, with a start-up region; both are precomputed).

Frame ``i`` covers input samples ``[i*hop - pad, i*hop - pad + nperseg)`` with ``pad =
nperseg // 2`` for the symmetric window (scipy's zero boundary). Fed ``n`` samples, the analyzer
has produced every frame with ``i*hop + nperseg - pad <= n``. The synthesizer finalises ``hop``
output samples per frame. With identity processing the streaming pair reconstructs the input
delayed by ``nperseg - 1`` samples when output is drained in whole hops (see
:meth:`StftConfig.latency`).

Low-latency framing (``StftConfig(synthesis_len=S)``): the same 519-point frames and 260 bins,
but an asymmetric analysis window and a synthesis window that covers only the last ``S``
samples of a frame, so a frame finalises its output ``S`` samples after its newest input and
the latency is ``S - 1`` (123 samples = 15.4 ms for S = 124). Offline and streaming pairs are
the same code for both families; only the windows, the boundary and the synthesised segment
differ (``seg_start``, ``seg_len``).

Hot paths use preallocated buffers and allocate nothing. The FFTs are batched over all frames
of a call, padded to a multiple of 4 frames (pocketfft's SIMD lanes), and write into
preallocated arrays (scipy's pocketfft, float32; measured per 519-point frame: ~3 us batched,
~16 us for a lone frame, ~6 us with ``numpy.fft``).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import numba
import numpy as np
import scipy.fft
import scipy.signal

from .frame_dft import partial_irfft_matrix, split_rdft_plan, split_rdft_scratch, window_rdft

log = logging.getLogger(__name__)

#: scipy's threshold below which the overlap-add normalisation is treated as 1
_NORM_EPS = 1e-10

#: pocketfft runs several transforms at once in SIMD lanes only when it has 4 or more of them: 1,
#: 2 or 3 frames of 519 points each cost ~16 us per frame, 4 frames ~4 us each (measured,
#: float32). Streaming FFTs always run on a multiple of this many frames (padding rows unused).
_FFT_LANES = 4
#: samples the analyzer keeps before its next frame: the longest lag of a model's pitch
#: channel (``pitch_frame.LAG_MAX``)
HISTORY = 100


def _lanes(m: int) -> int:
    return -(-m // _FFT_LANES) * _FFT_LANES


def _public_rfft_into(x: np.ndarray, out: np.ndarray) -> None:
    out[...] = scipy.fft.rfft(x, axis=-1)


def _public_irfft_into(z: np.ndarray, out: np.ndarray) -> None:
    out[...] = scipy.fft.irfft(z, n=out.shape[-1], axis=-1)


def _pick_ffts() -> tuple:
    """Streaming FFTs that write into preallocated arrays.

    scipy.fft's public wrappers cost ~10 us per call on top of the transform (argument checks,
    backend dispatch) and allocate their result; the pocketfft module underneath takes ``out=``.
    It is private, so it is used only if it imports and matches the public API on a test
    signal; otherwise the public functions are used.
    """
    try:
        from scipy.fft._pocketfft import pypocketfft as pp

        def rfft_into(x: np.ndarray, out: np.ndarray) -> None:
            pp.r2c(x, (x.ndim - 1,), True, 0, out, 1)

        def irfft_into(z: np.ndarray, out: np.ndarray) -> None:
            pp.c2r(z, (z.ndim - 1,), out.shape[-1], False, 2, out, 1)

        x = np.random.default_rng(0).standard_normal((2, 3, 519)).astype(np.float32)
        z = np.empty((2, 3, 260), np.complex64)
        rfft_into(x, z)
        y = np.empty_like(x)
        irfft_into(z, y)
        if np.allclose(z, scipy.fft.rfft(x, axis=-1), atol=1e-4) and np.allclose(y, x, atol=1e-5):
            return rfft_into, irfft_into
        log.warning("pocketfft direct call disagrees with scipy.fft: using the public API")
    except Exception as exc:  # any failure means: use the public API
        log.debug("pocketfft direct call unavailable (%s): using scipy.fft", exc)
    return _public_rfft_into, _public_irfft_into


_rfft_into, _irfft_into = _pick_ffts()


@dataclass(frozen=True)
class StftConfig:
    """Framing: one second at 8 kHz is a square 260 x 260 spectrogram.

    Two families share the 519-point frames and hop 31 (so the 260 bins and the frame rate):

    * ``synthesis_len=0``: the design's symmetric periodic window (``window``, Hann) for
      analysis and synthesis; algorithmic latency ``nperseg - 1`` (64.75 ms).
    * ``synthesis_len=S`` (a multiple of ``hop``, ``2*hop <= S < nperseg``): an asymmetric
      analysis window (long rise over ``nperseg - S/2`` samples, short fall over ``S/2``) and a
      synthesis window that is non-zero only on the last ``S`` samples of a frame, chosen so
      that analysis x synthesis is a Hann of length ``S`` there (Mauler & Martin 2007; Z.-Q.
      Wang et al. 2023). Frequency resolution stays 260 bins; latency drops to ``S - 1``.
      ``window`` names the rise: ``"hann"`` = the rise of a sqrt-Hann (power 0.5), or
      ``"hann^P"`` for a Hann rise raised to the power ``P`` (the oracle study's variants).
    """

    sample_rate: int = 8000
    nperseg: int = 519
    noverlap: int = 488
    window: str = "hann"
    #: S, samples of the short synthesis window at the end of each frame (0 = symmetric)
    synthesis_len: int = 0

    def __post_init__(self) -> None:
        if self.nperseg < 2 or not 0 <= self.noverlap < self.nperseg:
            raise ValueError(f"need 0 <= noverlap < nperseg, got {self.noverlap}, {self.nperseg}")
        if self.sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {self.sample_rate}")
        s, hop = self.synthesis_len, self.hop
        if s and (s % hop or s < 2 * hop or s >= self.nperseg):
            raise ValueError(
                f"synthesis_len must be 0 or a multiple of hop {hop} in [{2 * hop}, "
                f"{self.nperseg}), got {s}"
            )

    @property
    def hop(self) -> int:
        """Samples between frame starts (31)."""
        return self.nperseg - self.noverlap

    @property
    def n_freqs(self) -> int:
        """One-sided bins (260)."""
        return self.nperseg // 2 + 1

    @property
    def asymmetric(self) -> bool:
        return self.synthesis_len > 0

    @property
    def seg_len(self) -> int:
        """Samples of a frame that the synthesis uses (its last ``seg_len``): S, or nperseg."""
        return self.synthesis_len or self.nperseg

    @property
    def seg_start(self) -> int:
        """Offset in a frame where the synthesis support begins (``nperseg - seg_len``)."""
        return self.nperseg - self.seg_len

    @property
    def pad(self) -> int:
        """Zeros before the first sample: scipy's ``boundary='zeros'`` (259) for the symmetric
        window; ``nperseg - S/2`` for the asymmetric one (sample 0 sits at the middle of the
        first frame's synthesis support)."""
        return self.nperseg - self.seg_len // 2 if self.asymmetric else self.nperseg // 2

    @property
    def pad_end(self) -> int:
        """Zeros after the last sample (before rounding up to whole hops) in :func:`stft`."""
        return self.seg_len // 2 if self.asymmetric else self.nperseg // 2

    @property
    def latency_samples(self) -> int:
        """Streaming latency for one frame per block and no lookahead (``seg_len - 1``:
        518 for the symmetric window, S - 1 for the asymmetric one)."""
        return self.latency(1, 0)

    def latency(self, block_frames: int = 1, lookahead_frames: int = 0) -> int:
        """Algorithmic latency of the streaming pair in samples at ``sample_rate``.

        ``seg_len - 1 + (block_frames - 1 + lookahead_frames) * hop``: a frame can be
        synthesised only once its last sample has arrived, the samples it finalises start
        ``seg_len - hop`` before that, and output is released a block (``K * hop``) at a time.
        """
        if block_frames < 1 or lookahead_frames < 0:
            raise ValueError("block_frames must be >= 1 and lookahead_frames >= 0")
        return self.seg_len - 1 + (block_frames - 1 + lookahead_frames) * self.hop

    @property
    def window_array(self) -> np.ndarray:
        """Analysis window, float64 ``[nperseg]`` (symmetric: scipy's periodic ``get_window``)."""
        return _windows(self.window, self.nperseg, self.synthesis_len)[0]

    @property
    def synthesis_array(self) -> np.ndarray:
        """Synthesis window, float64 ``[nperseg]``, zero before :attr:`seg_start`."""
        return _windows(self.window, self.nperseg, self.synthesis_len)[1]

    def to_dict(self) -> dict:
        return {
            "sample_rate": self.sample_rate,
            "nperseg": self.nperseg,
            "noverlap": self.noverlap,
            "window": self.window,
            "synthesis_len": self.synthesis_len,
        }

    @classmethod
    def from_dict(cls, d: dict) -> StftConfig:
        """From :meth:`to_dict` or a model's metadata (extra keys such as ``hop`` ignored)."""
        keys = ("sample_rate", "nperseg", "noverlap", "window", "synthesis_len")
        return cls(**{k: d[k] for k in keys if k in d})

    def describe(self) -> str:
        ms = 1000.0 * self.latency_samples / self.sample_rate
        kind = f"asymmetric, synthesis {self.synthesis_len}" if self.asymmetric else "symmetric"
        return f"{self.window} {self.nperseg}/{self.hop} ({kind}; {ms:.2f} ms)"


def _rise_power(name: str) -> float:
    if name == "hann":
        return 0.5
    if name.startswith("hann^"):
        return float(name[5:])
    raise ValueError(f"unknown window {name!r} (use 'hann' or 'hann^P')")


@functools.lru_cache(maxsize=16)
def _windows(name: str, nperseg: int, synthesis_len: int) -> tuple[np.ndarray, np.ndarray]:
    """(analysis, synthesis) float64 ``[nperseg]``, read-only."""
    if not synthesis_len:
        win = scipy.signal.get_window(name, nperseg)
        syn = win
    else:
        p = _rise_power(name)
        m = synthesis_len // 2
        rise = nperseg - m
        # periodic Hann of length 2*rise: its first `rise` samples climb from 0 to 1
        up = scipy.signal.get_window("hann", 2 * rise)[:rise] ** p
        # sqrt of a Hann of length 2m: its second half falls from 1 towards 0
        down = np.sqrt(scipy.signal.get_window("hann", 2 * m)[m:])
        win = np.concatenate([up, down])
        syn = np.zeros(nperseg)
        tail = slice(nperseg - synthesis_len, nperseg)
        target = scipy.signal.get_window("hann", synthesis_len)
        a = win[tail]
        syn[tail] = np.where(a > 1e-12, target / np.maximum(a, 1e-12), 0.0)
    win, syn = np.array(win, float), np.array(syn, float)
    win.setflags(write=False)
    syn.setflags(write=False)
    return win, syn


def ola_norm(cfg: StftConfig) -> tuple[np.ndarray, np.ndarray]:
    """Sum of analysis x synthesis windows of the overlap-add, in segment coordinates (position
    ``n`` = padded position ``n + seg_start``: frame ``i`` covers ``[i*hop, i*hop + seg_len)``).

    Returns ``(startup [S], steady [hop])`` float64: ``startup[n]`` for ``n < S`` (``S`` a whole
    number of hops, ``>= seg_len - 1``) and ``steady[n % hop]`` for every ``n >= S``.
    """
    hop, n = cfg.hop, cfg.seg_len
    n_blocks = -(-n // hop)  # blocks of hop samples one frame touches
    size = (n_blocks + 1) * hop  # the last startup position (seg_len - 2) lies inside
    w2 = (cfg.window_array * cfg.synthesis_array)[cfg.seg_start :]
    norm = np.zeros(size + n_blocks * hop)
    for i in range(size // hop + 1):
        norm[i * hop : i * hop + n] += w2
    startup = norm[:size].copy()
    steady = norm[size : size + hop].copy()
    return startup, steady


def _float_dtype(x: np.ndarray) -> np.dtype:
    return np.dtype(np.float32) if x.dtype == np.float32 else np.dtype(np.float64)


def stft(x: np.ndarray, cfg: StftConfig = StftConfig()) -> np.ndarray:
    """Offline STFT, equal to ``scipy.signal.stft(x, ...)[2]`` with frames moved before bins.

    x: real ``[..., n]`` (float32 stays float32, anything else is float64)
    -> complex ``[..., frames, n_freqs]`` with ``frames = ceil(n / hop) + 1`` for
    ``n >= nperseg`` (zero boundary of ``pad`` before and ``pad_end`` after, zero-padded to whole
    hops, ``scaling='spectrum'``: divided by the analysis window's sum).
    """
    x = np.asarray(x)
    dtype = _float_dtype(x)
    x = x.astype(dtype, copy=False)
    n = x.shape[-1]
    hop, nps, pad = cfg.hop, cfg.nperseg, cfg.pad
    padded_len = n + pad + cfg.pad_end
    extra = (-(padded_len - nps) % hop) % nps
    xp = np.zeros(x.shape[:-1] + (padded_len + extra,), dtype)
    xp[..., pad : pad + n] = x
    if xp.shape[-1] < nps:
        return np.zeros(x.shape[:-1] + (0, cfg.n_freqs), np.result_type(dtype, np.complex64))
    frames = np.lib.stride_tricks.sliding_window_view(xp, nps, axis=-1)[..., ::hop, :]
    win = (cfg.window_array / cfg.window_array.sum()).astype(dtype)
    return scipy.fft.rfft(frames * win, n=nps, axis=-1)


def istft(z: np.ndarray, cfg: StftConfig = StftConfig(), length: int | None = None) -> np.ndarray:
    """Offline inverse, equal to ``scipy.signal.istft(...)[1]`` (frames before bins here).

    z: complex ``[..., frames, n_freqs]`` -> real
    ``[..., nperseg + (frames-1)*hop - pad - pad_end]`` (complex64 in gives float32 out).
    Weighted overlap-add with the synthesis window, normalised by the overlap-added product of
    the analysis and synthesis windows. ``length`` trims (or zero-extends) the result, e.g. to the
    length of the signal that :func:`stft` analysed.
    """
    z = np.asarray(z)
    if z.shape[-1] != cfg.n_freqs:
        raise ValueError(f"expected {cfg.n_freqs} bins on the last axis, got {z.shape[-1]}")
    dtype = np.dtype(np.float32) if z.dtype == np.complex64 else np.dtype(np.float64)
    hop, nps, pad = cfg.hop, cfg.nperseg, cfg.pad
    n_frames = z.shape[-2]
    lead = z.shape[:-2]
    if n_frames == 0:
        out_len = 0
        y = np.zeros(lead + (0,), dtype)
    else:
        win, syn = cfg.window_array, cfg.synthesis_array
        xs = scipy.fft.irfft(z, n=nps, axis=-1)
        xs *= (syn * win.sum()).astype(dtype)
        n_blocks = -(-nps // hop)
        frames_padded = np.zeros(lead + (n_frames, n_blocks * hop), dtype)
        frames_padded[..., :nps] = xs
        blocks = frames_padded.reshape(lead + (n_frames, n_blocks, hop))
        acc = np.zeros(lead + (n_frames + n_blocks - 1, hop), dtype)
        for j in range(n_blocks):  # block b of the output sums frame b-j's j-th block
            acc[..., j : j + n_frames, :] += blocks[..., :, j, :]
        full_len = nps + (n_frames - 1) * hop
        y = acc.reshape(lead + (-1,))[..., :full_len]
        norm = np.zeros(full_len + (n_blocks - 1) * hop)
        w2 = win * syn
        for j in range(n_blocks):  # same sum for the windows: vectorised over frame starts
            seg = w2[j * hop : (j + 1) * hop]
            view = norm[j * hop : j * hop + n_frames * hop].reshape(n_frames, hop)
            view[:, : len(seg)] += seg
        norm = norm[:full_len]
        y = y[..., pad : full_len - cfg.pad_end]
        norm = norm[pad : full_len - cfg.pad_end]
        y = y / np.where(norm > _NORM_EPS, norm, 1.0).astype(dtype)
        out_len = y.shape[-1]
    if length is not None:
        if length <= out_len:
            y = y[..., :length]
        else:
            y = np.concatenate([y, np.zeros(lead + (length - out_len,), dtype)], axis=-1)
    return y


@numba.njit(cache=True, nogil=True)
def _window_frames(buf, r, hop, win, out, m):  # pragma: no cover - compiled
    """out[c, i] = buf[c, r + i*hop : r + i*hop + nperseg] * win for i < m.

    Compiled because numpy's ufuncs copy an input whose elements overlap (the strided frame
    view over the buffer) before multiplying: an allocation per call on the hot path.
    """
    nps = win.shape[0]
    for c in range(buf.shape[0]):
        for i in range(m):
            o = r + i * hop
            for t in range(nps):
                out[c, i, t] = buf[c, o + t] * win[t]


class StftAnalyzer:
    """Streaming analysis: samples in any chunk sizes -> exactly the offline :func:`stft` frames.

    Owns a preallocated ``[C, capacity]`` float32 buffer that starts with the ``pad`` zeros of
    the boundary. Use :meth:`push` (at most ``max_push`` samples at a time), then :meth:`pop`
    any number of the :attr:`available` frames (at most ``max_frames`` per call).

    The buffer also keeps the ``HISTORY`` samples before the next frame (zeros before the
    stream), which a model's pitch channel reads (``pitch_frame``): the frames of the last
    :meth:`pop` start at ``buf[:, last_start + j * hop]`` until the next :meth:`push`.

    Frames are windowed and transformed in batches (the FFT over whole SIMD lanes of 4
    frames), except a one-frame pop (streaming's hop-by-hop calls): one transform, not 4, by
    the split DFT of :mod:`.frame_dft` where the frame length suits it (519 = 3 x 173: ~7 us
    against pocketfft's ~25 us for a lone frame), else pocketfft.
    """

    def __init__(self, cfg: StftConfig, channels: int = 1, max_frames: int = 64) -> None:
        if channels < 1 or max_frames < 1:
            raise ValueError("channels and max_frames must be >= 1")
        self.cfg = cfg
        self.channels = channels
        self.max_frames = max_frames
        hop, nps = cfg.hop, cfg.nperseg
        self._hop, self._nps = hop, nps  # plain ints: the config's properties cost a call each
        #: largest chunk :meth:`push` accepts
        self.max_push = max_frames * hop
        # kept between pops: < nperseg + hop*(frames not popped); room for two of that + a push
        n_hops = 2 * (-(-nps // hop) + max_frames) + max_frames + 2
        self._buf = np.zeros((channels, n_hops * hop + 2 * HISTORY), np.float32)
        self._win = (cfg.window_array / cfg.window_array.sum()).astype(np.float32)
        # rows past the frames of a call are padding for the FFT's SIMD lanes (contents unused)
        self._windowed = np.zeros((channels, _lanes(max_frames), nps), np.float32)
        self._spec = np.zeros((channels, _lanes(max_frames), cfg.n_freqs), np.complex64)
        #: one-frame pops: the split DFT (see :mod:`.frame_dft`), where the length suits it
        self._split = split_rdft_plan(nps)
        self._split_work = split_rdft_scratch(self._split) if self._split else None
        self.reset()

    def reset(self) -> None:
        """Start a new stream (the buffer holds only the ``pad`` boundary zeros)."""
        self._buf[:] = 0.0
        self._r = HISTORY  # start of the next frame (HISTORY samples kept before it)
        self._w = HISTORY + self.cfg.pad  # end of the written samples
        self.frames_out = 0
        #: start of the first frame of the last pop in the buffer
        self._last = np.full(1, HISTORY, np.int64)  # (an array slot: no int kept per pop)

    @property
    def available(self) -> int:
        """Frames that :meth:`pop` can return now."""
        span = self._w - self._r
        return 0 if span < self._nps else (span - self._nps) // self._hop + 1

    @property
    def last_start(self) -> int:
        """Start of the first frame of the last pop in the buffer."""
        return int(self._last[0])

    def push(self, x: np.ndarray) -> None:
        """x: float ``[C, n]`` with ``n <= max_push`` -> buffered (no allocation)."""
        n = x.shape[-1]
        if n > self.max_push:
            raise ValueError(f"push at most {self.max_push} samples at a time, got {n}")
        if self._w + n > self._buf.shape[1]:
            lo = self._r - HISTORY  # the kept history's start
            keep = self._w - lo
            if keep > lo:  # would overlap: the caller let too many frames pile up
                raise RuntimeError("StftAnalyzer overfull: pop frames before pushing more")
            for row in self._buf:  # row by row: numpy copies 2-D overlapping-range moves first
                row[:keep] = row[lo : self._w]
            self._r, self._w = HISTORY, keep
        self._buf[:, self._w : self._w + n] = x
        self._w += n

    def pop(self, m: int) -> np.ndarray:
        """Compute the next ``m`` frames (batched FFT) -> complex64 ``[C, m, n_freqs]``.

        ``m <= min(available, max_frames)``. The result is a view of an internal buffer, valid
        until the next call.
        """
        if m > self.available or m > self.max_frames:
            raise ValueError(f"cannot pop {m} frames ({self.available} available)")
        self._last[0] = self._r
        if m == 1 and self._split is not None:
            mat, tw = self._split
            wq, y = self._split_work
            window_rdft(self._buf, self._r, self._win, mat, tw, wq, y, self._spec[:, 0])
            self._r += self._hop
            self.frames_out += 1
            return self._spec[:, :1]
        _window_frames(self._buf, self._r, self._hop, self._win, self._windowed, m)
        self._r += m * self._hop
        self.frames_out += m
        mp = 1 if m == 1 else _lanes(m)
        _rfft_into(self._windowed[:, :mp], self._spec[:, :mp])
        return self._spec[:, :m]


@numba.njit(cache=True, nogil=True)
def _overlap_add(acc, xs, wsyn, hop, inv, out):
    """One batch of the streaming overlap-add (compiled: one call instead of ~20 numpy ops).

    acc [C, A] running sums (``acc[:, :seg-hop]`` holds the partial sums of earlier frames,
    the rest is zero); xs [C, m, seg] inverse FFTs (the synthesised part of each frame);
    wsyn [seg] synthesis window;
    inv [>= m*hop] inverse normalisation of the output positions; out [C, >= m*hop] <- the
    finalised samples. Leaves acc in the same form for the next batch.
    """
    ch, m, nps = xs.shape
    keep = nps - hop
    done = m * hop
    for c in range(ch):
        for i in range(m):
            o = i * hop
            for t in range(nps):
                acc[c, o + t] += xs[c, i, t] * wsyn[t]
        for t in range(done):
            out[c, t] = acc[c, t] * inv[t]
        for t in range(keep):  # forward copy: destination below source, safe when overlapping
            acc[c, t] = acc[c, done + t]
        for t in range(keep, done + keep):
            acc[c, t] = 0.0


#: a synthesis support at most this fraction of the frame takes the partial inverse (a matrix
#: product over the support only) instead of a full inverse FFT of the frame, for pushes of at
#: most PARTIAL_IRFFT_FRAMES frames (streaming's one-frame calls; larger batches stay with the
#: FFT, which is as cheap per frame there and never wakes the BLAS library's threads)
PARTIAL_IRFFT_MAX = 1 / 3
PARTIAL_IRFFT_FRAMES = 4


class StftSynthesizer:
    """Streaming overlap-add with exact normalisation: frames -> finalised output samples.

    Each :meth:`push` of ``m`` frames returns the ``m * hop`` samples that no later frame can
    change, minus the first ``pad - seg_start`` samples of the stream (the boundary), so the
    output is time-aligned with the analyzer's input: with identity processing, after frames
    ``0..i`` the outputs cover input samples ``[0, (i+1)*hop + seg_start - pad)``.

    Only the synthesis support (the last ``seg_len`` samples of a frame) is synthesised. Where
    it is short (the low-latency framing: 124 of 519 samples), a push of a few frames is one
    matrix product over the support (``partial_irfft_matrix``; 64 k multiply-adds per frame,
    4 us against 25 us for one 519-point inverse FFT, a length with the prime factor 173);
    float32 accumulation over the 520 terms puts its error at ~1e-6 of the signal's peak.
    Otherwise it is an inverse FFT.
    """

    def __init__(self, cfg: StftConfig, channels: int = 1, max_frames: int = 64) -> None:
        if channels < 1 or max_frames < 1:
            raise ValueError("channels and max_frames must be >= 1")
        self.cfg = cfg
        self.channels = channels
        self.max_frames = max_frames
        hop, nps, seg = cfg.hop, cfg.nperseg, cfg.seg_len
        self._hop = hop
        self._seg0 = cfg.seg_start  # only the last seg_len samples of a frame are synthesised
        self._wsyn = (cfg.synthesis_array * cfg.window_array.sum())[self._seg0 :].astype(np.float32)
        startup, steady = ola_norm(cfg)
        inv_start = 1.0 / np.where(startup > _NORM_EPS, startup, 1.0)
        inv_steady = 1.0 / np.where(steady > _NORM_EPS, steady, 1.0)
        self._n_start_blocks = len(startup) // hop
        #: inverse norm of output block b at [b*hop, (b+1)*hop) for b < startup blocks, then
        #: the steady (periodic) values for max_frames more blocks
        self._inv = np.concatenate([inv_start, np.tile(inv_steady, max_frames)]).astype(np.float32)
        self._acc = np.zeros((channels, seg + max_frames * hop), np.float32)
        self._out = np.empty((channels, max_frames * hop), np.float32)
        # frames are copied here so that the FFT can run on whole SIMD lanes
        self._spec = np.zeros((channels, _lanes(max_frames), cfg.n_freqs), np.complex64)
        self._xs = np.zeros((channels, _lanes(max_frames), nps), np.float32)
        #: partial inverse over the support, or None for the full inverse FFT
        self._partial = (
            partial_irfft_matrix(nps, self._seg0) if seg <= PARTIAL_IRFFT_MAX * nps else None
        )
        self._spec_ri = self._spec.view(np.float32)  # [C, lanes, 2 * n_freqs]
        n_seg = min(max_frames, PARTIAL_IRFFT_FRAMES) if self._partial is not None else 0
        self._xs_seg = np.zeros((channels, n_seg, seg), np.float32)
        self.reset()

    def reset(self) -> None:
        """Start a new stream."""
        self._acc[:] = 0.0
        # boundary samples still to drop: output starts at the first frame's synthesis support
        self._skip = self.cfg.pad - self.cfg.seg_start
        self.frames_in = 0

    def push(self, z: np.ndarray) -> np.ndarray:
        """z: complex ``[C, m, n_freqs]`` (m <= max_frames) -> float32 ``[C, m*hop - dropped]``.

        The result is a view of an internal buffer, valid until the next call.
        """
        m = z.shape[1]
        if m > self.max_frames:
            raise ValueError(f"push at most {self.max_frames} frames at a time, got {m}")
        hop = self._hop
        if m == 0:
            return self._out[:, :0]
        self._spec[:, :m] = z
        if self._partial is not None and m <= PARTIAL_IRFFT_FRAMES:
            xs = self._xs_seg[:, :m]
            np.matmul(self._spec_ri[:, :m], self._partial, out=xs)
        else:
            mp = _lanes(m)
            _irfft_into(self._spec[:, :mp], self._xs[:, :mp])
            xs = self._xs[:, :m, self._seg0 :]
        row = min(self.frames_in, self._n_start_blocks)
        _overlap_add(self._acc, xs, self._wsyn, hop, self._inv[row * hop :], self._out)
        self.frames_in += m
        start = 0
        if self._skip:
            start = min(self._skip, m * hop)
            self._skip -= start
        return self._out[:, start : m * hop]
