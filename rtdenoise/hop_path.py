"""One STFT hop through the whole engine in two compiled calls: live mode's path.

Live mode feeds the streamer one hop of device samples at a time (186 at 48 kHz, 258 calls a
second). Through :meth:`Streamer.feed` such a call crosses ~25 Python methods and ~15 compiled
kernels, each entered with its argument checks; the Python around them cost more than the
arithmetic inside (measured: ~20 of live mode's ~37 ms of CPU per second of audio).
:class:`HopPath` runs the same kernels, in the same order, on the same buffers and counters,
from two compiled functions:

* :func:`_hop_in`: the high band's meter and delay line, the down-resampler, the analyzer's
  push and its one frame (the split DFT);
* the backend's step (Python: the compiled network frame or held frame, or the graph);
* :func:`_hop_out`: the mask, the partial inverse and overlap-add, the pitch post-filter, the
  latency ring, the band-split gain, the up-resampler, the rate FIFO, the high band's
  resampler, FIFO and mix.

It takes a call only in the engine's steady state, where that call is exactly one hop: the
device rate an integer multiple of 8 kHz, one channel, a mask processor of one frame per call
without lookahead, the framing's one-frame transforms (split DFT, partial inverse), a chunk of
exactly one hop, no buffer to compact, no boundary samples left to drop, no ring short of room
or samples. Any other call goes through :meth:`Streamer.feed`'s general path; both leave the
objects in the same state, so they interleave freely (``tests/test_hop_path.py``: outputs and
states equal to the general path's, for both models, full band and narrowband).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .bandsplit import _circ_write, _combine, _frame_ratios, _gain_track, _meter, _mix, _pack
from .frame_dft import window_rdft
from .postfilter import MIN_CORR, _comb, _push
from .processor import MaskProcessor, _gain_apply
from .resample import _decimate, _interpolate
from .ring import _flat_in, _flat_out
from .stft import _overlap_add


class HopPath:
    """The compiled one-hop path of a :class:`~rtdenoise.streamer.Streamer` (see module doc).

    Build with :meth:`build` (None where the engine's set-up does not allow it); :meth:`feed`
    returns False, having done nothing, for a call it does not take.
    """

    def __init__(self, streamer: object) -> None:
        s = streamer
        core = s._core
        self.an, self.sy = core.analyzer, core.synth
        self.ring, self.fifo = core.ring, s._fifo
        self.rs_in, self.rs_out = s._rs_in, s._rs_out
        self.band = s._band
        self.gain = core.observer
        self.backend = core.processor.backend
        hop = core.cfg.hop
        self.hop = hop
        self.ratio = s.sample_rate // core.cfg.sample_rate
        #: device samples per call this path takes
        self.n = self.ratio * hop
        an, sy = self.an, self.sy
        self._frame = an._spec[:, :1]  # [1, 1, F] complex64, contiguous (one channel)
        self._ri = self._frame.view(np.float32).reshape(1, 1, -1, 2)
        self._proc = core._proc[:, :1]
        self._y8 = s._buf8_in[:hop]
        self._z8 = s._buf8_out[:hop]
        self._w_dev = s._buf_dev[: self.n]
        self._s_ri = sy._spec_ri[0, :1]  # [1, 2F] float32
        self._xs = sy._xs_seg[:, :1]
        self._xs2 = sy._xs_seg[0, :1]  # [1, S]
        proc = core.processor
        self._gain32 = np.array([proc.floor, proc.wet, proc._dry], np.float32)
        pf = core.postfilter
        self._pf = (
            (
                True,
                pf._work,
                pf._energy,
                pf._track,
                pf._input,
                pf.counts,
                pf.strength,
            )
            if pf is not None
            else _NO_POSTFILTER
        )
        if self.band is not None:
            b, g = self.band, self.gain
            self._bf = np.array(
                [
                    g.cfg.presence,
                    g.cfg.silence,
                    g._rise,
                    g._bias,
                    g.cfg.mask_exponent,
                    g._floor,
                    g._off,
                    g._hop,
                    g._scale,
                    g._shift,
                ],
                np.float64,
            )
            self._bi = np.array(
                [g.k0, g.cfg.hangover_frames, g._ahead, b._latency8, b._latency], np.int64
            )
            self._pack = b._pack8[:hop]
            self._pack_dev = b._pack_dev[: self.n]
        self.calls = 0  # calls taken (tests, benchmarks)

    @classmethod
    def build(cls, streamer: object) -> HopPath | None:
        """The path for ``streamer``, or None where its set-up is not the one it takes."""
        s = streamer
        core = getattr(s, "_core", None)
        if core is None or not getattr(s, "_resampling", False) or s.channels != 1:
            return None
        proc = core.processor
        rates = (s.sample_rate, core.cfg.sample_rate)
        resamplers = [s._rs_in, s._rs_out] + ([s._band._up] if s._band is not None else [])
        if (
            not isinstance(proc, MaskProcessor)
            or core.k != 1
            or core.lookahead != 0
            or not hasattr(proc.backend, "step")
            or rates[0] % rates[1]
            or s._rs_in.up != 1
            or any(r.down != 1 for r in resamplers[1:])
            or core.analyzer._split is None
            or core.synth._partial is None
        ):
            return None
        path = cls(s)
        if path.n > s._chunk or any(path.n > r._cap for r in resamplers):
            return None
        return path

    def feed(self, x: np.ndarray, out: np.ndarray) -> bool:
        """x, out float32 ``[n]`` (``n`` = one hop of device samples): run the hop, or
        return False (nothing done) where this call is not the steady state's."""
        n, hop = self.n, self.hop
        if x.shape[0] != n or out.shape[0] != n or x.ndim != 1 or out.ndim != 1:
            return False
        an, sy, ring, fifo = self.an, self.sy, self.ring, self.fifo
        w, r = an._w, an._r
        if (
            w + hop > an._buf.shape[1]  # the analyzer would compact its buffer first
            or not 0 <= w + hop - r - an._nps < hop  # not exactly one frame
            or sy._skip  # boundary samples still to drop
            or ring.capacity - (ring._written - ring._consumed) < hop  # room for the hop
            or fifo.capacity - (fifo._written - fifo._consumed) < n
            or x.dtype != np.float32
            or out.dtype != np.float32
        ):
            return False
        x2 = x.reshape(n, 1)
        out2 = out.reshape(n, 1)
        rs_in, band, g = self.rs_in, self.band, self.gain
        if band is not None:
            meter = (True, g._sos, g._zi, g._t, self._bf, g._acc, g._e_hi, g._block, g._count,
                     band._xbuf, band._t_in)  # fmt: skip
        else:
            meter = _NO_METER
        block, count, rs_in._t = _hop_in(
            x2, *meter, rs_in._buf, rs_in.taps, rs_in.down, rs_in._t, rs_in._streams, rs_in._acc,
            self._y8, an._buf, w, r, an._win, *an._split, *an._split_work, self._frame[:, 0],
        )  # fmt: skip
        an._w = w + hop
        an._r = r + hop
        an.frames_out += 1
        mask = self.backend.step(self._ri)
        row = min(sy.frames_in, sy._n_start_blocks)
        if band is not None:
            g._block, g._count = block, count
            g._t += n
            band._t_in += n
            ready = g._n_out + 1 - g._ahead
            f0 = g._n_comb
            f1 = ready if ready > f0 else f0
            up = band._up
            split = (True, self._bi, self._bf, g._n_in, g._n_out, g._e_in, g._ratios, f0, f1,
                     g._e_hi, g._noise, g._raw, g.released, g._smooth, g.track,
                     band._ybuf, band._p8, self._pack, up._buf, up.taps, up._acc,
                     self._pack_dev, band._fifo, band._written, band._xbuf,
                     band._t_out)  # fmt: skip
        else:
            split = _NO_SPLIT
        rs_out = self.rs_out
        _hop_out(
            self._frame, mask, self._gain32, self._proc,
            self._s_ri, sy._partial, self._xs2, self._xs, sy._acc, sy._wsyn, hop,
            sy._inv[row * hop :], sy._out,
            ring._flat, (ring._written % ring.capacity), (ring._consumed % ring.capacity), self._z8,
            rs_out._buf, rs_out.taps, rs_out._acc, self._w_dev,
            fifo._flat, (fifo._written % fifo.capacity), (fifo._consumed % fifo.capacity), out2,
            self._y8, *self._pf, *split,
        )  # fmt: skip
        if band is not None:
            g._n_in += 1
            g._n_out += 1
            g._n_comb = f1
            g.released += hop
            band._p8 += hop
            band._written += n
            band._underflows += max(0, band._t_out + n - band._written)
            band._t_out += n
        sy.frames_in += 1
        ring._written += hop
        ring._consumed += hop
        fifo._written += n
        fifo._consumed += n
        self.calls += 1
        return True


def built_here() -> bool:
    """Whether this process compiled the path's kernels (numba found no usable cache)."""
    return any(bool(getattr(getattr(f, "stats", None), "cache_misses", None))
               for f in (_hop_in, _hop_out))  # fmt: skip


# the band split's arguments in narrowband use: placeholders of the right types
_F64_1, _F64_2 = np.zeros(1), np.zeros((1, 1))
_F32_1, _F32_2 = np.zeros(1, np.float32), np.zeros((1, 1), np.float32)
_NO_METER = (False, np.zeros((1, 6)), np.zeros((1, 1, 2)), 0, np.zeros(10), _F64_1, _F64_2, 0, 0,
             _F32_2, 0)  # fmt: skip
_NO_POSTFILTER = (False, _F32_2, _F64_2, np.zeros(1, np.int64), _F32_2, np.zeros(3, np.int64),
                  0.0)  # fmt: skip
_NO_SPLIT = (False, np.zeros(5, np.int64), np.zeros(10), 0, 0, np.zeros((1, 1, 2)),
             np.zeros((1, 1, 2)), 0, 0, _F64_2, _F64_1, _F64_2, 0, _F64_1, _F32_2,
             _F32_2, 0, _F32_2, _F32_2, _F32_2, _F32_1, _F32_2, _F32_2, 0, _F32_2, 0)  # fmt: skip


@njit(cache=True, nogil=True)
def _hop_in(x, band_on, sos, zi, t0, bf, acc, e_hi, block, count, xbuf, t_in,
            r_buf, r_taps, down, r_t, r_streams, r_acc, y8,
            a_buf, a_w, a_r, win, mat, tw, wq, wy, frame):  # fmt: skip  # pragma: no cover
    """Meter + delay line (band split), down-resampler, analyzer push + one frame.
    -> (meter block, meter count, down-resampler phase)."""
    if band_on:
        block, count = _meter(x, sos, zi, t0, bf[8], bf[9], bf[7], acc, e_hi, block, count)
        _circ_write(xbuf, t_in, x)
    r_t = _decimate(x, r_buf, r_taps, down, r_t, r_streams, r_acc, y8)
    for i in range(y8.shape[0]):
        a_buf[0, a_w + i] = y8[i, 0]
    window_rdft(a_buf, a_r, win, mat, tw, wq, wy, frame)
    return block, count, r_t


@njit(cache=True, nogil=True)
def _hop_out(frame, mask, g32, proc,
             s_ri, partial, xs2, xs, s_acc, wsyn, hop, inv, s_out,
             ring, ring_w, ring_r, z8,
             o_buf, o_taps, o_acc, w_dev,
             fifo, fifo_w, fifo_r, out, y8,
             pf_on, pf_work, pf_energy, pf_track, pf_input, pf_counts, pf_strength,
             band_on, bi, bf, n_in, n_out, e_in, ratios, f0, f1,
             e_hi, noise, raw, released, smooth, track,
             ybuf, p8, pack, u_buf, u_taps, u_acc,
             pack_dev, b_fifo, b_written, xbuf, t_out):  # fmt: skip  # pragma: no cover
    """Mask, synthesis, pitch post-filter, latency ring, band-split gain, up-resampler, rate
    FIFO, high band."""
    _gain_apply(frame, mask, g32[0], g32[1], g32[2], proc)
    for k in range(s_ri.shape[1] // 2):  # the synthesizer's copy of the frame, (re, im)
        v = proc[0, 0, k]
        s_ri[0, 2 * k] = v.real
        s_ri[0, 2 * k + 1] = v.imag
    np.dot(s_ri, partial, xs2)
    _overlap_add(s_acc, xs, wsyn, hop, inv, s_out)
    if pf_on:
        _push(pf_input, pf_counts, y8)
        _comb(s_out[:, :hop], pf_work, pf_energy, pf_track, pf_input, pf_counts, hop,
              pf_strength, MIN_CORR)  # fmt: skip
    _flat_in(ring, ring_w, s_out[0], hop)
    if band_on:
        _frame_ratios(frame, proc, bi[0], n_in, n_out, e_in, ratios, bf[0], bf[1])
        if f1 > f0:
            _combine(ratios, e_hi, noise, raw, f0, f1, bi[1], bi[2], bf[2], bf[3], bf[1], bf[4],
                     bf[5])  # fmt: skip
        _gain_track(raw, max(f1 - 1, 0), released, hop, bf[6], bf[7], smooth, track)
    _flat_out(ring, ring_r, z8[:, 0], hop)
    _interpolate(z8, o_buf, o_taps, o_acc, w_dev)
    n = w_dev.shape[0]
    _flat_in(fifo, fifo_w, w_dev[:, 0], n)
    _flat_out(fifo, fifo_r, out[:, 0], n)
    if band_on:
        _pack(y8, ybuf, track, p8, bi[3], pack)
        _interpolate(pack, u_buf, u_taps, u_acc, pack_dev)
        _circ_write(b_fifo, b_written, pack_dev)
        _mix(out, xbuf, t_out, bi[4], b_fifo, t_out)
