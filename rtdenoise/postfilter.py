"""Pitch post-filter: a long-term comb on the engine's 8 kHz output, causal, no added latency.

Within a voiced stretch the speech repeats every pitch period T while the noise the mask left
does not. Each hop of output (31 samples, as the synthesis releases it) is replaced by

    y'[n] = (y[n] + a * y[n - T]) / (1 + a),    a = strength * c * (1 - rho) * min(1, e),

where T (20-100 samples, 400-80 Hz) maximises the normalised correlation c of the last 256
output samples (ending with the hop) with the same samples T earlier, rho (<= 1) is the energy
of those 256 output samples over that of the input samples they came from (how much the mask
kept), e the energy of the period before the hop (y[n - T]) over the hop's own, and the hop is
left as it is where c < ``min_corr`` (unvoiced speech, noise, silence). A periodic signal
passes at unity gain; what is not periodic at T loses up to ``20 log10((1 + a) / sqrt(1 +
a^2))`` dB (2.9 dB at a = 0.5). Where the mask kept nearly everything (clean speech, rho ~ 1)
there is no noise left to remove and the comb stays off: a fixed ``a`` costs SI-SDR there
(-1.4 dB at 15 dB SNR on ``val2`` for a = 0.2 c), since voiced speech is only nearly periodic.
At a word's onset the period before is weaker (e < 1) and the comb backs off: averaging the
onset with it would soften the onset, which cost STOI on ``val``'s isolated digits.

It is the speech codecs' long-term post-filter, and the per-band pitch filter RNNoise applies
before its gains, in its simplest form: the network's mask is real and smooth across a
harmonic's neighbours, so what remains between the harmonics of a voiced frame is what a comb
removes. Measured through the engine: the model card.

Only past and present samples are read (y[n - T], T >= 20, the hop itself, which is all
released at once, and the input up to the hop's end, which the engine has by then), so it adds
no latency; the filter reads the unfiltered output, so it has no feedback. State: the last 356
unfiltered output samples and a ring of the 8 kHz input per channel; a stream starts from
zeros. Whole signals and any block size give the same
output, since the hops are those of the synthesis, counted from the stream's start.
"""

from __future__ import annotations

import numpy as np
from numba import njit

#: pitch lags searched, in samples at 8 kHz (400 Hz .. 80 Hz)
LAG_MIN, LAG_MAX = 20, 100
#: samples correlated to find the lag (32 ms)
WINDOW = 256
#: a search over all lags every this many hops (15.5 ms), else within TRACK of the last lag
FULL_SEARCH_EVERY, TRACK = 4, 3
#: below this normalised correlation a hop passes unchanged
MIN_CORR = 0.3
#: the comb's weight per unit of correlation, chosen on ``val2`` and ``val`` (model card)
DEFAULT_STRENGTH = 0.5
#: input samples kept by default (the input runs ahead of the synthesised output by at most
#: what the engine holds: a segment, ~2k samples at 64 frames per batch, and a frame)
INPUT_RING = 8192


class PitchPostfilter:
    """The comb of the module doc on ``C`` channels: ``push_input(x [m, C])`` with the engine's
    8 kHz input as it arrives, ``process(y [C, n])`` in place with the synthesis's output (the
    same stream: output sample i is the processed input sample i). ``strength`` 0 is the
    identity."""

    def __init__(
        self, channels: int, hop: int, strength: float = DEFAULT_STRENGTH, max_lead: int = 0
    ) -> None:
        """max_lead: the most input samples the caller pushes ahead of the output it has
        processed (the ring is sized for it)."""
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"pitch post-filter strength must be in [0, 1], got {strength}")
        self.channels = int(channels)
        self.hop = int(hop)
        self.strength = float(strength)
        self.history = WINDOW + LAG_MAX  # samples kept before each hop
        self._work = np.zeros((self.channels, self.history + self.hop), np.float32)
        self._energy = np.zeros((self.channels, self.history + self.hop), np.float64)
        self._track = np.zeros(self.channels, np.int64)
        ring = max(INPUT_RING, 1 << int(max_lead + WINDOW + 2 * self.hop).bit_length())
        self._input = np.zeros((self.channels, ring), np.float32)
        #: input samples pushed, output samples processed, hops processed (since reset)
        self.counts = np.zeros(3, np.int64)

    def reset(self) -> None:
        self._work[:] = 0.0
        self._energy[:] = 0.0
        self._track[:] = 0
        self._input[:] = 0.0
        self.counts[:] = 0

    def push_input(self, x: np.ndarray) -> None:
        """x float32 ``[m, C]``: the next input samples at 8 kHz."""
        _push(self._input, self.counts, x)

    def process(self, y: np.ndarray) -> None:
        """y float32 ``[C, n]``, filtered in place (see :func:`_comb` for ``n``)."""
        if y.shape[1]:
            _comb(y, self._work, self._energy, self._track, self._input, self.counts, self.hop,
                  self.strength, MIN_CORR)  # fmt: skip


@njit(cache=True, nogil=True)
def _push(ring, counts, x):  # pragma: no cover - compiled
    """x [m, C] -> the input ring (counts[0]: samples pushed so far)."""
    r = ring.shape[1]
    w = counts[0]
    for i in range(x.shape[0]):
        for c in range(x.shape[1]):
            ring[c, (w + i) % r] = x[i, c]
    counts[0] = w + x.shape[0]


@njit(cache=True, nogil=True, fastmath=True)
def _comb(y, work, energies, track, inp, counts, hop, strength,
          min_corr):  # fmt: skip  # pragma: no cover - compiled
    """y [C, n] in place, hop by hop.

    work [C, H + hop]: the H unfiltered samples before the hop, then the hop; energies [C, H +
    hop] float64: beside each, the energy of the 256 samples ending with it (kept up to date
    sample by sample); track [C]: the lag the last search found. The lag is searched over all
    of 20-100 every ``FULL_SEARCH_EVERY``-th hop (and where none was found), else within
    ``TRACK`` of the last one (a voice's period moves less than that in a hop): ~1/6 of the
    products of a full search per hop. A call whose length is not a multiple of the hop (the
    synthesis's first batch, after its boundary samples) starts with the remainder as a short
    hop, so the hops are the same for every block size. inp [C, R]: the input ring; counts:
    (input samples pushed, output samples processed, hops processed).
    """
    h = work.shape[1] - hop
    n = y.shape[1]
    ring = inp.shape[1]
    done = counts[1]
    hops = counts[2]
    if counts[0] < done + n or counts[0] - done + WINDOW > ring:
        raise ValueError("pitch post-filter: input and output streams out of step")
    n_hops = 0
    for c in range(y.shape[0]):
        w = work[c]
        energy = energies[c]
        s = 0
        j = 0  # hops of this call
        while s < n:
            m = hop if s or n % hop == 0 else n % hop
            for i in range(m):
                w[h + i] = y[c, s + i]
            end = h + m
            for i in range(end - m, end):  # the window energy ending at each new sample
                v = np.float64(w[i])
                u = np.float64(w[i - WINDOW])
                energy[i] = energy[i - 1] + v * v - u * u
            ex = energy[end - 1]
            best = 0.0
            best_t = 0
            if ex > 1e-12:
                prev = track[c]
                lo, hi = LAG_MIN, LAG_MAX
                if prev and (hops + j) % FULL_SEARCH_EVERY:  # follow the last lag
                    lo, hi = max(prev - TRACK, LAG_MIN), min(prev + TRACK, LAG_MAX)
                now = w[end - WINDOW : end]
                for t in range(lo, hi + 1):
                    past = w[end - WINDOW - t : end - t]
                    xp = np.float32(0.0)
                    for i in range(WINDOW):  # (indices from 0: no wraparound, vectorised)
                        xp += now[i] * past[i]
                    r = xp / np.sqrt(ex * max(energy[end - 1 - t], 0.0) + 1e-20)
                    if r > best:
                        best = r
                        best_t = t
            track[c] = best_t
            if best_t and best >= min_corr:
                e_in = 1e-12  # the input energy over the same 256 samples
                first = max(done + s + m - WINDOW, 0)
                start = first % ring
                count = done + s + m - first
                part = min(count, ring - start)  # the ring's two contiguous runs, no modulo
                seg = inp[c, start : start + part]
                for k in range(part):
                    e_in += np.float64(seg[k]) * seg[k]
                seg = inp[c, : count - part]
                for k in range(count - part):
                    e_in += np.float64(seg[k]) * seg[k]
                kept = min(ex / e_in, 1.0)
                e_now = 1e-12  # the hop's energy and that of the period before it
                e_past = 1e-12
                for i in range(m):
                    v = np.float64(w[h + i])
                    e_now += v * v
                    v = np.float64(w[h + i - best_t])
                    e_past += v * v
                a = strength * min(best, 1.0) * (1.0 - kept) * min(e_past / e_now, 1.0)
                a = np.float32(a)
                g = np.float32(1.0) / (np.float32(1.0) + a)
                for i in range(m):
                    y[c, s + i] = (w[h + i] + a * w[h + i - best_t]) * g
            for i in range(h):  # keep the last h unfiltered samples and their energies
                w[i] = w[i + m]
                energy[i] = energy[i + m]
            s += m
            j += 1
        n_hops = j
    counts[1] = done + n
    counts[2] = hops + n_hops
