"""Full-band output above 8 kHz: the band the 8 kHz model never sees, gated by what it does.

At a device rate above 8 kHz the model only gets the low band (the down-resampler keeps 0-3.4
kHz, with a transition up to 4.6 kHz). The band split adds the rest back::

    x ──> rs_in ──> y8 ──> core (STFT, model, overlap-add) ──> rs_out ──> fifo ──> low
    │               └────> delay L8 ──> r8 ──┐
    │    frames in/out ──> HighBandGain ─ a8 ┴─> rs_band ──> fifo ──> ref, a
    ├────> highpass energy per hop ──┘
    └────> delay L ──> xd
                       out = low + (1 - a) * (xd - ref)

``ref`` is the low band exactly as the round trip would return it with identity processing
(the same down-resampled samples, delayed by the core's latency ``L8``, up-resampled by a
resampler of the same design and phase, through a FIFO with the same prefill), and ``xd`` is the
input delayed by the engine's ``latency_samples``. So ``high = xd - ref`` is the input minus its
low band with a crossover that sums back exactly: with identity processing ``low == ref`` and
``out == xd`` to float precision, at every rate, over the full band.

The gain ``g = 1 - a`` of the high band, per channel and STFT frame, with no extra model call:

* ``g_mask``: the model's mask over the top bins (2.5-4 kHz, the noise there is the best guess
  for the noise above), weighted by the noisy spectrum (the energy ratio of the processed to
  the unprocessed frame), combined with the same ratio over all bins (speech presence), and
  squared (``mask_exponent``): speech falls off above 4 kHz faster than most noises, so the
  band above has the lower speech-to-noise ratio and is attenuated twice as much in dB as the
  band just below it, down to twice the attenuation limit (30 dB at the default 15);
* ``g_snr``: a Wiener gain from the high band's own energy (a highpass of the input, per hop)
  over its noise floor (minimum tracking, +12 dB), so that sibilants, which the 8 kHz model
  sees only the bottom of and attenuates ~11 dB even in clean speech, keep their level;
* ``g = max(g_mask, min(g_snr, presence))`` with ``presence`` the all-bin ratio's maximum over
  the last 100 ms and the next 4 frames: the energy path opens only while the model hears
  speech, so noise bursts in pauses stay at the mask's gain;

smoothed over five frames (binomial, centred) and interpolated to one value per 8 kHz sample.
Every ratio is capped at 1. The track runs through the up-resampler as one more channel per
channel (``a`` is smooth, far below 3.4 kHz, so it passes unchanged and lands time-aligned
with ``low`` and ``ref``). With identity processing every ratio is exactly 1, so ``a == 0``
exactly and exactness needs no special case. On the 60 wideband16k pairs (the report) the
squared mask and the +12 dB over-subtraction are what put the full band above the narrowband
output on DNSMOS as well as on PESQ-wb: with the mask's gain as it is (floored at the
attenuation limit), the high band's residual noise cost more DNSMOS than its speech gained.

Timing of the gain: after frames ``0..i`` the overlap-add has released 8 kHz samples up to
``(i+1)*hop + seg_start - pad``, while frame ``i``'s analysis-times-synthesis window is centred
at sample ``i*hop - pad + centre``: the frames that shaped a released sample are known
``wait`` frames before it leaves (7 with the design's symmetric window, which pays for the
centred smoothing and 4 frames of the presence's lookahead; 1 with the low-latency window,
which gets a 3-frame smoother and no lookahead). Nothing lags the audio in either case.

Cost at 48 kHz, mono: a second up-resampler (two channels), a 4th-order highpass, three
circular buffers and one pass over the output, ~1.5-3 ms of CPU per second of audio (~1.1x
the narrowband engine with the model: ``benchmarks/test_bench_model.py``); nothing is
allocated per call.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
from numba import njit
from scipy import signal

from .stft import StftConfig

log = logging.getLogger(__name__)

#: half-width of the centred smoother over frames (binomial: 1 4 6 4 1, exact in binary, so
#: all-ones stays exactly 1), narrowed when the framing leaves fewer frames of wait
SMOOTH_FRAMES = 2


def _binomial(s: int) -> np.ndarray:
    """Binomial kernel of 2s + 1 taps summing to exactly 1, float64."""
    k = np.array([math.comb(2 * s, j) for j in range(2 * s + 1)], np.float64)
    return k / k.sum()


@dataclass(frozen=True)
class BandSplitConfig:
    """How the model's output and the high band's own level drive the high band's gain."""

    #: lowest frequency of the "top bins" whose mask stands for the band above (Hz)
    top_hz: float = 2500.0
    #: weight of the all-bin ratio in the geometric mean with the top bins' ratio (g_mask)
    presence: float = 0.25
    #: frames of hangover (~3.9 ms each) of the speech presence that opens the energy path
    hangover_frames: int = 26
    #: frames of lookahead of the presence (paid from the overlap-add's wait)
    lookahead_frames: int = 4
    #: edge of the highpass that measures the high band's energy (Hz; capped below Nyquist)
    meter_hz: float = 4600.0
    #: how fast the noise floor may rise (dB per second); it falls at once
    floor_rise_db_s: float = 3.0
    #: the noise floor is raised by this much before the Wiener gain (minimum-tracking bias and
    #: over-subtraction, dB): the energy path opens only well above the floor
    floor_bias_db: float = 12.0
    #: the mask's part of the gain is raised to this power: the band above 4 kHz has a lower
    #: speech-to-noise ratio than 2.5-4 kHz in most noises (speech falls off faster), so it is
    #: attenuated this many times as much in dB, down to this many times the attenuation limit
    mask_exponent: float = 2.0
    #: frame energy below which a ratio counts as silence (ratio 1)
    silence: float = 1e-10


@njit(cache=True, nogil=True)
def _energies(f, k0, c, i):  # pragma: no cover - compiled
    """(top-bin, all-bin) energy of frame i of channel c of f [C, n, F]."""
    top = 0.0
    tot = 0.0
    for k in range(f.shape[2]):
        v = f[c, i, k]
        p = v.real * v.real + v.imag * v.imag
        tot += p
        if k >= k0:
            top += p
    return top, tot


@njit(cache=True, nogil=True)
def _frame_ratios(f_in, f_out, k0, n_in, n_out, e_in, ratios, presence, silence):
    # pragma: no cover - compiled
    """Energies of new input frames into e_in; mask ratios of new output frames into ratios.

    f_in complex64 [C, n, F]: the analyzer's frames number n_in.. (e_in [C, cap, 2] at frame %
    cap); f_out [C, m, F]: the processed frames number n_out.. (a processor with lookahead writes
    frame f after input frame f + L, so its input energies are stored by then).
    ratios [C, rcap, 2] <- (g_mask, g_all) at frame % rcap.
    """
    C, n, _ = f_in.shape
    m = f_out.shape[1]
    cap = e_in.shape[1]
    rcap = ratios.shape[1]
    for c in range(C):
        for i in range(n):
            top, tot = _energies(f_in, k0, c, i)
            r = (n_in + i) % cap
            e_in[c, r, 0] = top
            e_in[c, r, 1] = tot
        for j in range(m):
            top, tot = _energies(f_out, k0, c, j)
            r = (n_out + j) % cap
            g_top = 1.0 if e_in[c, r, 0] < silence else min(1.0, math.sqrt(top / e_in[c, r, 0]))
            g_all = 1.0 if e_in[c, r, 1] < silence else min(1.0, math.sqrt(tot / e_in[c, r, 1]))
            g = g_top if presence == 0.0 else g_top ** (1.0 - presence) * g_all**presence
            w = (n_out + j) % rcap
            ratios[c, w, 0] = g
            ratios[c, w, 1] = g_all


@njit(cache=True, nogil=True)
def _combine(ratios, e_hi, noise, raw, f0, f1, hang, ahead, rise, bias, silence, expo, floor):
    # pragma: no cover - compiled
    """raw[c, f % rcap] <- g for frames f0 <= f < f1 (frames up to f1 - 1 + ahead are known).

    g = max(floor, g_mask ** expo, min(g_snr, presence)). e_hi [C, bcap]: the high band's
    energy per hop-block (block f centred on frame f); noise [C]: running noise floor (state,
    inf after reset).
    """
    C, rcap, _ = ratios.shape
    bcap = e_hi.shape[1]
    for c in range(C):
        for f in range(f0, f1):
            prev = f - 1 if f > 0 else 0
            e = 0.25 * (e_hi[c, prev % bcap] + 2.0 * e_hi[c, f % bcap] + e_hi[c, (f + 1) % bcap])
            nf = noise[c] * rise
            if e < nf:
                nf = e
            noise[c] = nf
            if e < silence:
                g_snr = 1.0
            else:
                xi = e / (bias * nf + silence) - 1.0
                g_snr = math.sqrt(xi / (1.0 + xi)) if xi > 0.0 else 0.0
            p = 0.0
            for k in range(max(0, f - hang), f + ahead + 1):
                p = max(p, ratios[c, k % rcap, 1])
            raw[c, f % rcap] = max(floor, ratios[c, f % rcap, 0] ** expo, min(g_snr, p))


@njit(cache=True, nogil=True)
def _smoothed(raw, c, f, last, h):  # pragma: no cover - compiled
    """Centred smoothing of the gains around frame f; frames before 0 hold frame 0's gain."""
    rcap = raw.shape[1]
    s = h.shape[0] // 2
    acc = 0.0
    for k in range(h.shape[0]):
        g = f + k - s
        g = 0 if g < 0 else (last if g > last else g)
        acc += h[k] * raw[c, g % rcap]
    return acc


@njit(cache=True, nogil=True)
def _gain_track(raw, last, q0, n, off, hop, h, track):  # pragma: no cover - compiled
    """track[q % tcap, c] = 1 - g(q) for the released 8 kHz samples q0 <= q < q0 + n.

    g(q) interpolates the smoothed frame gains at frame position (q + off) / hop.
    """
    tcap, C = track.shape
    for c in range(C):
        f_prev = -(1 << 60)
        g0 = g1 = 1.0
        r = q0 % tcap
        for t in range(n):
            phi = (q0 + t + off) / hop
            f0 = math.floor(phi)
            if f0 != f_prev:  # the smoothed gains change once per frame, not per sample
                g0 = _smoothed(raw, c, f0, last, h) if f0 != f_prev + 1 else g1
                g1 = _smoothed(raw, c, f0 + 1, last, h)
                f_prev = f0
            track[r, c] = 1.0 - (g0 + (phi - f0) * (g1 - g0))
            r += 1
            if r == tcap:
                r = 0


@njit(cache=True, nogil=True)
def _meter(x, sos, zi, t0, scale, shift, hop, acc, e_hi, b, count):  # pragma: no cover
    """Highpass x [n, C] (sos [S, 6], state zi [C, S, 2]) and add its power to hop-blocks.

    Device sample t (t0 + row) belongs to block floor((t * scale + shift) / hop); acc [C] is the
    running sum of block b (in progress), count the samples in it; a block's mean power goes to
    e_hi[c, b % bcap]. Returns the block in progress and its count.
    """
    n, C = x.shape
    bcap = e_hi.shape[1]
    # first device sample of block b + 1 (blocks only move forward)
    nxt = math.ceil(((b + 1) * hop - shift) / scale)
    for i in range(n):
        if t0 + i >= nxt:
            for c in range(C):
                e_hi[c, b % bcap] = acc[c] / max(count, 1)
                acc[c] = 0.0
            count = 0
            b = max(b + 1, int(math.floor(((t0 + i) * scale + shift) / hop)))
            nxt = math.ceil(((b + 1) * hop - shift) / scale)
        for c in range(C):
            v = np.float64(x[i, c])
            for s in range(sos.shape[0]):  # transposed direct form II
                y = sos[s, 0] * v + zi[c, s, 0]
                zi[c, s, 0] = sos[s, 1] * v - sos[s, 4] * y + zi[c, s, 1]
                zi[c, s, 1] = sos[s, 2] * v - sos[s, 5] * y
                v = y
            acc[c] += v * v
        count += 1
    for c in range(C):  # the block in progress, as far as it goes (complete once b + 1 starts)
        e_hi[c, b % bcap] = acc[c] / max(count, 1)
    return b, count


@njit(cache=True, nogil=True)
def _circ_write(buf, t0, x):  # pragma: no cover - compiled
    """buf [cap, C] <- x [n, C] at rows (t0 + i) % cap."""
    cap = buf.shape[0]
    r = t0 % cap
    for i in range(x.shape[0]):
        for c in range(x.shape[1]):
            buf[r, c] = x[i, c]
        r += 1
        if r == cap:
            r = 0


@njit(cache=True, nogil=True)
def _pack(y8, ybuf, track, p0, lat8, pack):  # pragma: no cover - compiled
    """Store y8 [m, C] at 8 kHz positions p0.. in ybuf; pack [m, 2C] <- (y8, a) lat8 earlier.

    ybuf [cap, C] and track [tcap, C] are circular, indexed by 8 kHz sample; before the stream
    (position < 0) both are zero.
    """
    m, C = y8.shape
    cap = ybuf.shape[0]
    tcap = track.shape[0]
    _circ_write(ybuf, p0, y8)
    r0 = p0 - lat8
    ry = r0 % cap
    rt = r0 % tcap
    for i in range(m):
        for c in range(C):
            if r0 + i < 0:
                pack[i, c] = 0.0
                pack[i, C + c] = 0.0
            else:
                pack[i, c] = ybuf[ry, c]
                pack[i, C + c] = track[rt, c]
        ry = ry + 1 if ry + 1 < cap else 0
        rt = rt + 1 if rt + 1 < tcap else 0


@njit(cache=True, fastmath=True, nogil=True)
def _mix(out, xbuf, t0, lat, fifo, r0):  # pragma: no cover - compiled
    """out[i, c] += (1 - a) * (xd - ref): xd = the input lat samples back (xbuf, circular,
    indexed by device sample; zero before the stream); (ref, a) = fifo[(r0 + i) % cap, (c, C +
    c)] with a clipped to [0, 1]."""
    n, C = out.shape
    cap = xbuf.shape[0]
    fcap = fifo.shape[0]
    rx = (t0 - lat) % cap
    rf = r0 % fcap
    for i in range(n):
        t = t0 + i - lat
        for c in range(C):
            xd = xbuf[rx, c] if t >= 0 else 0.0
            a = fifo[rf, C + c]
            a = 0.0 if a < 0.0 else (1.0 if a > 1.0 else a)
            out[i, c] += (1.0 - a) * (xd - fifo[rf, c])
        rx = rx + 1 if rx + 1 < cap else 0
        rf = rf + 1 if rf + 1 < fcap else 0


def gain_floor(processor: object) -> float:
    """The smallest gain a processor applies: a mask processor's attenuation limit after its
    dry/wet mix; 0 for one that does not say."""
    floor = float(getattr(processor, "floor", 0.0))
    wet = float(getattr(processor, "wet", 1.0))
    return wet * floor + 1.0 - wet


class HighBandGain:
    """Per-channel gain track at 8 kHz from the processor's frames and the high band's level.

    ``meter(x [n, C])`` with the device-rate input before the core runs on it;
    ``push(frames_in [C, n, F], frames_out [C, m, F], released)`` after each batch of the core
    (``released`` samples just left its overlap-add). ``track`` (circular, ``[tcap, C]``) then
    holds ``a = 1 - g`` for 8 kHz output positions up to ``released``, aligned with the
    samples the overlap-add released (position 0 = the stream's first sample).

    sample_rate / delay8: the device rate and the down-resampler's delay in 8 kHz samples (to
    place device samples on the frames' time axis); capacity: the most 8 kHz samples between
    release and use (the core's output ring).
    """

    def __init__(
        self,
        stft: StftConfig,
        channels: int,
        max_frames: int,
        lookahead: int,
        capacity: int,
        sample_rate: int,
        delay8: float,
        cfg: BandSplitConfig = BandSplitConfig(),  # noqa: B008 - frozen dataclass
        floor: float = 0.0,
    ) -> None:
        self.cfg = cfg
        #: the processor's smallest gain (its attenuation limit, wet mix included)
        self.floor = float(floor)
        self._floor = self.floor**cfg.mask_exponent
        self.channels = channels
        hop = stft.hop
        self.k0 = int(math.ceil(cfg.top_hz * stft.nperseg / stft.sample_rate))
        w = stft.window_array * stft.synthesis_array
        #: centroid of the analysis x synthesis window in frame coordinates
        self.centre = float((np.arange(stft.nperseg) * w).sum() / w.sum())
        #: frames known past the one centred on the newest released sample (7 for the
        #: symmetric window, 1 for the low-latency one): the smoothing and the presence's
        #: lookahead are paid from it
        self.wait = -(math.floor(1 + (stft.seg_start - 1 - self.centre) / hop) + 1)
        s = min(SMOOTH_FRAMES, max(self.wait, 0))
        self._smooth = _binomial(s)
        self._ahead = min(int(cfg.lookahead_frames), max(self.wait - s, 0))
        # frames the gain lags the audio when even that does not fit (0 for both framings)
        self.lag = max(0, s + self._ahead - self.wait)
        if self.lag:
            log.debug("band split: gain lags the audio by %d frames", self.lag)
        self._off = float(stft.pad - self.centre - self.lag * hop)
        self._hop = float(hop)
        frames_s = stft.sample_rate / hop
        self._rise = 10.0 ** (cfg.floor_rise_db_s / 10.0 / frames_s)
        self._bias = 10.0 ** (cfg.floor_bias_db / 10.0)
        span = -(-stft.nperseg // hop) + self.lag + 2 * s + self._ahead + cfg.hangover_frames + 4
        self._e_in = np.zeros((channels, lookahead + max_frames + 2, 2), np.float64)
        self._ratios = np.ones((channels, max_frames + span, 2), np.float64)
        self._raw = np.ones((channels, max_frames + span), np.float64)
        self._noise = np.zeros(channels, np.float64)
        self.track = np.zeros((capacity + max_frames * hop, channels), np.float32)
        # the meter: device sample t sits at 8 kHz time t * 8000 / sr + delay8; block b is
        # centred on frame b's centre (pad - centre before b * hop)
        edge = min(cfg.meter_hz, 0.45 * sample_rate)
        self._sos = signal.butter(4, edge, "highpass", fs=sample_rate, output="sos")
        self._zi = np.zeros((channels, self._sos.shape[0], 2), np.float64)
        self._scale = stft.sample_rate / sample_rate
        self._shift = float(delay8) - (self.centre - stft.pad) + hop / 2
        self._acc = np.zeros(channels, np.float64)
        self._e_hi = np.zeros((channels, 2 * max_frames + span + 2 * -(-capacity // hop)))
        self.reset()

    def reset(self) -> None:
        self._ratios[:] = 1.0
        self._raw[:] = 1.0
        self._noise[:] = np.inf
        self._n_in = 0
        self._n_out = 0
        self._n_comb = 0
        #: 8 kHz samples of the track written so far
        self.released = 0
        self.track[:] = 0.0
        self._zi[:] = 0.0
        self._acc[:] = 0.0
        self._e_hi[:] = 0.0
        self._t = 0
        self._block = max(0, math.floor(self._shift / self._hop))
        self._count = 0

    def meter(self, x: np.ndarray) -> None:
        """x float32 ``[n, C]`` at the device rate: the high band's power per hop-block."""
        self._block, self._count = _meter(
            x,
            self._sos,
            self._zi,
            self._t,
            self._scale,
            self._shift,
            self._hop,
            self._acc,
            self._e_hi,
            self._block,
            self._count,
        )
        self._t += x.shape[0]

    def push(self, frames_in: np.ndarray, frames_out: np.ndarray, released: int) -> None:
        """frames_in / frames_out complex64 ``[C, n, F]`` / ``[C, m, F]``; released samples."""
        cfg = self.cfg
        _frame_ratios(
            frames_in,
            frames_out,
            self.k0,
            self._n_in,
            self._n_out,
            self._e_in,
            self._ratios,
            cfg.presence,
            cfg.silence,
        )
        self._n_in += frames_in.shape[1]
        self._n_out += frames_out.shape[1]
        ready = self._n_out - self._ahead  # frames whose lookahead is known
        if ready > self._n_comb:
            _combine(
                self._ratios,
                self._e_hi,
                self._noise,
                self._raw,
                self._n_comb,
                ready,
                cfg.hangover_frames,
                self._ahead,
                self._rise,
                self._bias,
                cfg.silence,
                cfg.mask_exponent,
                self._floor,
            )
            self._n_comb = ready
        if released:
            _gain_track(
                self._raw,
                max(self._n_comb - 1, 0),
                self.released,
                released,
                self._off,
                self._hop,
                self._smooth,
                self.track,
            )
            self.released += released


class BandSplit:
    """The device-rate side: the low band reference, the delayed input and the mix.

    Per chunk: ``meter(x)`` before the core runs, ``feed8(y8 [m, C])`` with the 8 kHz samples
    the core was just fed (after it ran on them), then ``mix(out [n, C])`` with the low band the
    main path wrote into ``out``: adds the gated high band in place.

    up: an up-resampler for ``2 * channels`` channels built exactly like the main path's (same
    design and ``prior_delay``); latency8: the core's latency; prefill / latency: the main
    FIFO's prefill and the engine's ``latency_samples``; max8 / max_dev: the largest chunk at
    8 kHz and at the device rate.
    """

    def __init__(
        self,
        gain: HighBandGain,
        up: object,
        latency8: int,
        prefill: int,
        latency: int,
        max8: int,
        max_dev: int,
    ) -> None:
        c = gain.channels
        self.gain = gain
        self.channels = c
        self._up = up
        self._latency8 = latency8
        self._prefill = prefill
        self._latency = latency
        self._ybuf = np.zeros((latency8 + max8 + 8, c), np.float32)
        self._pack8 = np.zeros((max8, 2 * c), np.float32)
        n_up = -(-max8 * up.up // up.down) + 2
        self._pack_dev = np.zeros((n_up, 2 * c), np.float32)
        #: the (ref, a) FIFO at the device rate: circular, rows before ``prefill`` are zeros
        self._fifo = np.zeros((prefill + n_up + max_dev + 8, 2 * c), np.float32)
        self._xbuf = np.zeros((latency + max_dev + 8, c), np.float32)
        self.reset()

    @property
    def underflows(self) -> int:
        """Samples mixed before the FIFO had them (0 unless something is broken)."""
        return self._underflows

    def reset(self) -> None:
        self.gain.reset()
        self._up.reset()
        self._p8 = 0
        self._t_in = 0
        self._t_out = 0
        self._fifo[:] = 0.0
        self._written = self._prefill
        self._underflows = 0

    def meter(self, x: np.ndarray) -> None:
        """x float32 ``[n, C]``: the device-rate input, before the core runs on it."""
        self.gain.meter(x)
        _circ_write(self._xbuf, self._t_in, x)
        self._t_in += x.shape[0]

    def feed8(self, y8: np.ndarray) -> None:
        """y8 float32 ``[m, C]``: the 8 kHz input of the core, after the core ran on it."""
        m = y8.shape[0]
        pack = self._pack8[:m]
        _pack(y8, self._ybuf, self.gain.track, self._p8, self._latency8, pack)
        self._p8 += m
        w = self._up.process(pack, out=self._pack_dev)
        _circ_write(self._fifo, self._written, w)
        self._written += w.shape[0]

    def mix(self, out: np.ndarray) -> None:
        """out float32 ``[n, C]`` (the processed low band) += (1 - a) * (xd - ref)."""
        n = out.shape[0]
        self._underflows += max(0, self._t_out + n - self._written)
        _mix(out, self._xbuf, self._t_out, self._latency, self._fifo, self._t_out)
        self._t_out += n
