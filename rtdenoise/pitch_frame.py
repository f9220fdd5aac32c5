"""The pitch-correlation channel of one STFT frame, torch-free: the engine's side of
:mod:`.pitch_corr` (``ModelConfig.pitch_channel``).

The network of a model with the pitch channel reads, per network frame, the per-band
correlation of the noisy frame with the same window one pitch period earlier (see
``pitch_corr`` for the definition and why). Training computes it for a whole utterance in torch;
the streaming engine computes it here, one frame at a time and only for the frames the network
runs on (one STFT frame in ``frame_stride``), from the analyzer's own buffer of 8 kHz samples,
which keeps :data:`HISTORY` samples before its next frame for this (``stft.StftAnalyzer``):

* the lag ``L`` (``LAG_MIN..LAG_MAX`` samples): the largest normalised correlation of the
  frame's newest ``SEG`` samples with those ``L`` earlier (float32 dot products, vectorised;
  energies in float64; ties go to the longer lag, as ``torch.argmax`` over the torch side's
  order does);
* the delayed frame's spectrum: the analyzer's window on ``buf[start - L : start - L + N]``,
  by the split DFT of :mod:`.frame_dft` (~7 us; pocketfft where the length does not suit it);
* per band of ``BAND`` bins, ``sum Re(X P*) / sqrt(sum |X|^2 sum |P|^2)`` with ``X`` the frame's
  own spectrum (the step's input, already computed), expanded to the network's grid.

The analyzer's window is normalised by its sum, the torch side's is not: the correlation is the
same, with the epsilon scaled by ``sum(window)^4``. One compiled call per row, most of it the
split DFT (live mode: +2 ms of CPU per second of 48 kHz audio at a frame stride of 4).
"""

from __future__ import annotations

import numba
import numpy as np

from .frame_dft import split_rdft_plan, split_rdft_scratch, window_rdft
from .stft import HISTORY, StftConfig

LAG_MIN, LAG_MAX = 20, 100  # samples at 8 kHz (400..80 Hz)
SEG = 256  # newest samples of a frame that choose its lag
BAND = 16  # bins per correlation band (16 x 15.4 Hz = 246 Hz)
# the analyzer keeps HISTORY samples before a frame: the delayed frame's start
assert HISTORY >= LAG_MAX
#: the torch side's epsilon in the correlation's denominator (unnormalised window)
EPS = 1e-12


def grid_bins(n_freqs: int, split: int, width: int) -> np.ndarray:
    """The bin that stands for each cell of the network's grid: every bin below ``split``, then
    the first bin of each band of ``width`` (width 1: every bin)."""
    if width <= 1:
        return np.arange(n_freqs)
    return np.concatenate([np.arange(split), np.arange(split, n_freqs, width)])


class PitchFrames:
    """Per-frame pitch-correlation rows ``[F_c]`` of an engine's 8 kHz sample buffer."""

    #: samples a row reads before its frame
    history = HISTORY

    def __init__(self, stft: StftConfig, n_freqs: int, split: int, width: int) -> None:
        if stft.nperseg < SEG + LAG_MAX:
            raise ValueError(f"the pitch channel needs frames of >= {SEG + LAG_MAX} samples")
        self.cfg = stft
        self.nperseg = stft.nperseg
        self.hop = stft.hop
        window = stft.window_array
        self.win = (window / window.sum()).astype(np.float32)  # the analyzer's
        self.eps = EPS / float(window.sum()) ** 4
        band = np.arange(n_freqs) // BAND
        self.n_bands = int(band[-1]) + 1
        self.band = band.astype(np.int64)
        self.grid_band = band[grid_bins(n_freqs, split, width)].astype(np.int64)
        self.n_grid = self.grid_band.shape[0]
        self._plan = split_rdft_plan(stft.nperseg)
        self._work = split_rdft_scratch(self._plan) if self._plan else None
        self._p = np.zeros((1, n_freqs), np.complex64)  # the delayed frame's spectrum
        self._sums = np.zeros((3, self.n_bands), np.float64)
        self._acc = np.zeros(LAG_MAX - LAG_MIN + 1, np.float32)  # every lag's dot product

    @staticmethod
    def built_here() -> bool:
        return built_here()

    def row(self, buf: np.ndarray, start: int, x_ri: np.ndarray, out: np.ndarray) -> None:
        """Frame at ``buf[start : start + N]`` (float32 ``[n]``, ``start >= HISTORY``) with its
        spectrum ``x_ri`` (float32 ``[F, 2]``, analyzer scaling) -> ``out`` float32 ``[F_c]``."""
        if start < HISTORY:
            raise ValueError(f"a pitch row needs {HISTORY} samples before the frame")
        if self._plan is not None:  # one compiled call
            mat, tw = self._plan
            wq, y = self._work
            _row(buf, start, self.win, mat, tw, wq, y, self._p, self._acc, x_ri, self.band,
                 self.grid_band, self.eps, self._sums, out)  # fmt: skip
            return
        d = start - _lag(buf, start + self.nperseg, self._acc)
        self._p[0] = np.fft.rfft(buf[d : d + self.nperseg] * self.win)
        _band_corr(x_ri, self._p[0], self.band, self.grid_band, self.eps, self._sums, out)

    def rows(
        self,
        samples: np.ndarray,
        start: int,
        spec_ri: np.ndarray,
        out: np.ndarray,
        frames: range | None = None,
    ) -> None:
        """The rows of a block: frame ``j`` of ``spec_ri`` (float32 ``[C, K, F, 2]``) starts at
        ``samples[c, start + j * hop]`` -> ``out[c, j]`` (float32 ``[C, K, F_c]``), for the
        block's frames ``frames`` (default: all)."""
        for j in frames if frames is not None else range(spec_ri.shape[1]):
            for c in range(spec_ri.shape[0]):
                self.row(samples[c], start + j * self.hop, spec_ri[c, j], out[c, j])


@numba.njit(cache=True, nogil=True)
def _row(
    buf, start, win, mat, tw, wq, y, p, acc, x_ri, band, grid_band, eps, sums, out
):  # pragma: no cover
    """:meth:`PitchFrames.row` by the split DFT, in one call."""
    n = win.shape[0]
    d = start - _lag(buf, start + n, acc)
    window_rdft(buf.reshape((1, buf.shape[0])), d, win, mat, tw, wq, y, p)
    _band_corr(x_ri, p[0], band, grid_band, eps, sums, out)


#: the dot products may be reassociated (vectorised): float32 rounding only, as the torch
#: side's float32 FFT has its own
_SUMS = {"reassoc", "contract", "nsz"}


@numba.njit(cache=True, nogil=True, fastmath=_SUMS)
def _lag(x, end, acc):  # pragma: no cover - compiled
    """The lag in LAG_MIN..LAG_MAX whose normalised correlation of ``x[end - SEG : end]`` with
    ``x[end - SEG - L : end - L]`` is the largest (ties: the longer lag); acc float32
    ``[LAG_MAX - LAG_MIN + 1]`` work."""
    cur = end - SEG
    n_lags = LAG_MAX - LAG_MIN + 1
    # slices, so that every index is a loop counter's (no negative-index checks: the dot
    # products vectorise, ~1.5 us for all lags against ~20 us indexing x itself)
    w = x[cur - LAG_MAX : end]  # lag LAG_MAX - k: w[k : k + SEG]
    c = x[cur:end]
    for k in range(n_lags):
        s = np.float32(0.0)
        for n in range(SEG):
            s += w[n + k] * c[n]
        acc[k] = s
    e_cur = 0.0
    for n in range(SEG):
        e_cur += float(c[n]) * float(c[n])
    # the lagged segment's energy slides: start at LAG_MAX, add/remove one sample per lag
    e_lag = 0.0
    for n in range(SEG):
        e_lag += float(w[n]) * float(w[n])
    best, best_lag = -np.inf, LAG_MAX
    for k in range(n_lags):
        lag = LAG_MAX - k
        if k > 0:  # window moves one sample later: drop its first, add a new last
            a = float(w[k - 1])
            b = float(w[k + SEG - 1])
            e_lag += b * b - a * a
        r = float(acc[k]) / np.sqrt(max(e_lag, 0.0) * e_cur + 1e-12)
        if r > best:
            best, best_lag = r, lag
    return best_lag


@numba.njit(cache=True, nogil=True)
def _band_corr(x_ri, p, band, grid_band, eps, sums, out):  # pragma: no cover - compiled
    """Per band ``sum Re(X P*) / sqrt(sum |X|^2 sum |P|^2 + eps)``, on the grid -> out."""
    sums[:] = 0.0
    for k in range(band.shape[0]):
        xr, xi = float(x_ri[k, 0]), float(x_ri[k, 1])
        pr, pi = float(p[k].real), float(p[k].imag)
        q = band[k]
        sums[0, q] += xr * pr + xi * pi
        sums[1, q] += xr * xr + xi * xi
        sums[2, q] += pr * pr + pi * pi
    for i in range(grid_band.shape[0]):
        q = grid_band[i]
        out[i] = sums[0, q] / np.sqrt(sums[1, q] * sums[2, q] + eps)


def built_here() -> bool:
    """Whether this process compiled the kernels (numba found no usable cache for them)."""
    return any(
        bool(getattr(getattr(f, "stats", None), "cache_misses", None))
        for f in (_row, _lag, _band_corr)
    )
