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

The two functions take the engine's buffers as one table of addresses (:mod:`.buffer_table`),
not as ~85 array arguments: numba checks and unboxes each argument on every call. The table is
built once and rebuilt when a resampler replaces its buffers (a larger general-path call).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .bandsplit import _circ_write, _combine, _frame_ratios, _gain_track, _meter, _mix, _pack
from .buffer_table import BufferTable, c64_2, c64_3, f32_1, f32_2, f32_3, f64_1, f64_2, f64_3, i64_1
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
        self.streamer = s
        self.an, self.sy = core.analyzer, core.synth
        self.ring, self.fifo = core.ring, s._fifo
        self.rs_in, self.rs_out = s._rs_in, s._rs_out
        self.band = s._band
        self.gain = core.observer
        self.backend = core.processor.backend
        self._step = self.backend.step
        #: the backend reads the input samples (a model with the pitch channel)
        self._samples = bool(getattr(self.backend, "needs_samples", False))
        hop = core.cfg.hop
        self.hop = hop
        self.ratio = s.sample_rate // core.cfg.sample_rate
        #: device samples per call this path takes
        self.n = self.ratio * hop
        self._ri = core.analyzer._spec[:, :1].view(np.float32).reshape(1, 1, -1, 2)
        proc = core.processor
        pf = core.postfilter
        self._pf = (pf is not None, float(pf.strength) if pf is not None else 0.0)
        self._gain32 = np.array([proc.floor, proc.wet, proc._dry], np.float32)
        if self.band is not None:
            g = self.gain
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
                [g.k0, g.cfg.hangover_frames, g._ahead, self.band._latency8, self.band._latency],
                np.int64,
            )
        #: the resamplers, which replace their buffers when they grow (a general-path call's
        #: larger chunk), and the work buffer of each the table was built with
        self._resamplers = [self.rs_in, self.rs_out] + ([self.band._up] if self.band else [])
        self._built_with: list[np.ndarray] = []
        self._table = self._build_table()
        self.calls = 0  # calls taken (tests, benchmarks)

    def _build_table(self) -> np.ndarray:
        self._built_with = [r._acc for r in self._resamplers]
        return _TABLE.build(self._arrays())

    def _arrays(self) -> dict[str, np.ndarray]:
        """The engine's buffers this path works on, by slot (``_SLOTS``)."""
        core = self.streamer._core
        s, an, sy, hop, n = self.streamer, self.an, self.sy, self.hop, self.n
        rs_in, rs_out = self.rs_in, self.rs_out
        frame = an._spec[:, :1]  # [1, 1, F] complex64, contiguous (one channel)
        a = dict(
            y8=s._buf8_in[:hop], r_buf=rs_in._buf, r_taps=rs_in.taps, r_streams=rs_in._streams,
            r_acc=rs_in._acc, a_buf=an._buf, win=an._win, mat=an._split[0], tw=an._split[1],
            wq=an._split_work[0], wy=an._split_work[1], frame2=frame[:, 0], frame=frame,
            g32=self._gain32, proc=core._proc[:, :1], s_ri=sy._spec_ri[0, :1],
            partial=sy._partial, xs2=sy._xs_seg[0, :1], xs=sy._xs_seg[:, :1], s_acc=sy._acc,
            wsyn=sy._wsyn, inv=sy._inv, s_out=sy._out, ring=self.ring._flat,
            z8=s._buf8_out[:hop], o_buf=rs_out._buf, o_taps=rs_out.taps, o_acc=rs_out._acc,
            w_dev=s._buf_dev[:n], fifo=self.fifo._flat,
        )  # fmt: skip
        pf = core.postfilter
        if pf is not None:
            a.update(pf_work=pf._work, pf_energy=pf._energy, pf_track=pf._track,
                     pf_input=pf._input, pf_counts=pf.counts)  # fmt: skip
        if self.band is not None:
            b, g = self.band, self.gain
            a.update(
                sos=g._sos, zi=g._zi, bf=self._bf, acc=g._acc, e_hi=g._e_hi, xbuf=b._xbuf,
                bi=self._bi, e_in=g._e_in, ratios=g._ratios, noise=g._noise, raw=g._raw,
                smooth=g._smooth, track=g.track, ybuf=b._ybuf, pack=b._pack8[:hop],
                u_buf=b._up._buf, u_taps=b._up.taps, u_acc=b._up._acc,
                pack_dev=b._pack_dev[:n], b_fifo=b._fifo,
            )  # fmt: skip
        # a stage that is off: placeholders of its slots' types, never read
        for name, dtype, ndim in _SLOTS:
            a.setdefault(name, np.zeros((1,) * ndim, dtype))
        return a

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
        for rs, acc in zip(self._resamplers, self._built_with, strict=True):
            if rs._acc is not acc:  # a resampler grew: its buffers moved
                self._table = self._build_table()
                break
        band, g, rs_in = self.band, self.gain, self.rs_in
        t = self._table
        meter = (True, g._t, g._block, g._count, band._t_in) if band is not None else _NO_METER
        block, count, rs_in._t = _hop_in(t, x.reshape(n, 1), *meter, rs_in.down, rs_in._t, w, r)
        an._w = w + hop
        an._r = r + hop
        an.frames_out += 1
        mask = self._step(self._ri, an._buf, r) if self._samples else self._step(self._ri)
        row = min(sy.frames_in, sy._n_start_blocks)
        if band is not None:
            g._block, g._count = block, count
            g._t += n
            band._t_in += n
            ready = g._n_out + 1 - g._ahead
            f0 = g._n_comb
            f1 = ready if ready > f0 else f0
            split = (True, g._n_in, g._n_out, f0, f1, g.released, band._p8, band._written,
                     band._t_out)  # fmt: skip
        else:
            split = _NO_SPLIT
        _hop_out(t, mask, out.reshape(n, 1), hop, row * hop, ring._written % ring.capacity,
                 ring._consumed % ring.capacity, fifo._written % fifo.capacity,
                 fifo._consumed % fifo.capacity, *self._pf, *split)  # fmt: skip
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


# the band split's per-call counters in narrowband use (its buffers are placeholders)
_NO_METER = (False, 0, 0, 0, 0)
_NO_SPLIT = (False, 0, 0, 0, 0, 0, 0, 0, 0)

#: the buffers of the two kernels, by name, dtype and rank (``buffer_table``; read by index)
_SLOTS = [
    # _hop_in: the band split's meter and delay line, the down-resampler, the analyzer
    ("sos", np.float64, 2), ("zi", np.float64, 3), ("bf", np.float64, 1), ("acc", np.float64, 1),
    ("e_hi", np.float64, 2), ("xbuf", np.float32, 2), ("r_buf", np.float32, 2),
    ("r_taps", np.float32, 2), ("r_streams", np.float32, 2), ("r_acc", np.float32, 1),
    ("y8", np.float32, 2), ("a_buf", np.float32, 2), ("win", np.float32, 1),
    ("mat", np.float32, 2), ("tw", np.complex64, 2), ("wq", np.float32, 2),
    ("wy", np.float32, 2), ("frame2", np.complex64, 2),
    # _hop_out: mask, synthesis, post-filter, rings and up-resampler, the band split's gain
    ("frame", np.complex64, 3), ("g32", np.float32, 1), ("proc", np.complex64, 3),
    ("s_ri", np.float32, 2), ("partial", np.float32, 2), ("xs2", np.float32, 2),
    ("xs", np.float32, 3), ("s_acc", np.float32, 2), ("wsyn", np.float32, 1),
    ("inv", np.float32, 1), ("s_out", np.float32, 2), ("ring", np.float32, 1),
    ("z8", np.float32, 2), ("o_buf", np.float32, 2), ("o_taps", np.float32, 2),
    ("o_acc", np.float32, 1), ("w_dev", np.float32, 2), ("fifo", np.float32, 1),
    ("pf_work", np.float32, 2), ("pf_energy", np.float64, 2), ("pf_track", np.int64, 1),
    ("pf_input", np.float32, 2), ("pf_counts", np.int64, 1), ("bi", np.int64, 1),
    ("e_in", np.float64, 3), ("ratios", np.float64, 3), ("noise", np.float64, 1),
    ("raw", np.float64, 2), ("smooth", np.float64, 1), ("track", np.float32, 2),
    ("ybuf", np.float32, 2), ("pack", np.float32, 2), ("u_buf", np.float32, 2),
    ("u_taps", np.float32, 2), ("u_acc", np.float32, 1), ("pack_dev", np.float32, 2),
    ("b_fifo", np.float32, 2),
]  # fmt: skip
_TABLE = BufferTable(_SLOTS)
_I = _TABLE.index
SOS, ZI, BF, ACC, E_HI, XBUF = (_I[k] for k in ("sos", "zi", "bf", "acc", "e_hi", "xbuf"))
R_BUF, R_TAPS, R_STREAMS, R_ACC = (_I[k] for k in ("r_buf", "r_taps", "r_streams", "r_acc"))
Y8, A_BUF, WIN, MAT, TW, WQ, WY = (_I[k] for k in ("y8", "a_buf", "win", "mat", "tw", "wq", "wy"))
FRAME2, FRAME, G32, PROC, S_RI = (_I[k] for k in ("frame2", "frame", "g32", "proc", "s_ri"))
PARTIAL, XS2, XS, S_ACC, WSYN = (_I[k] for k in ("partial", "xs2", "xs", "s_acc", "wsyn"))
INV, S_OUT, RING, Z8, O_BUF = (_I[k] for k in ("inv", "s_out", "ring", "z8", "o_buf"))
O_TAPS, O_ACC, W_DEV, FIFO = (_I[k] for k in ("o_taps", "o_acc", "w_dev", "fifo"))
PF_WORK, PF_ENERGY, PF_TRACK = (_I[k] for k in ("pf_work", "pf_energy", "pf_track"))
PF_INPUT, PF_COUNTS, BI, E_IN = (_I[k] for k in ("pf_input", "pf_counts", "bi", "e_in"))
RATIOS, NOISE, RAW, SMOOTH, TRACK = (_I[k] for k in ("ratios", "noise", "raw", "smooth", "track"))
YBUF, PACK, U_BUF, U_TAPS, U_ACC = (_I[k] for k in ("ybuf", "pack", "u_buf", "u_taps", "u_acc"))
PACK_DEV, B_FIFO = _I["pack_dev"], _I["b_fifo"]


@njit(cache=True, nogil=True)
def _hop_in(t, x, band_on, t0, block, count, t_in, down, r_t, a_w, a_r):  # pragma: no cover
    """Meter + delay line (band split), down-resampler, analyzer push + one frame, on the
    buffers of table ``t``. -> (meter block, meter count, down-resampler phase)."""
    y8 = f32_2(t, Y8)
    if band_on:
        bf = f64_1(t, BF)
        block, count = _meter(x, f64_2(t, SOS), f64_3(t, ZI), t0, bf[8], bf[9], bf[7],
                              f64_1(t, ACC), f64_2(t, E_HI), block, count)  # fmt: skip
        _circ_write(f32_2(t, XBUF), t_in, x)
    r_t = _decimate(x, f32_2(t, R_BUF), f32_2(t, R_TAPS), down, r_t, f32_2(t, R_STREAMS),
                    f32_1(t, R_ACC), y8)  # fmt: skip
    a_buf = f32_2(t, A_BUF)
    for i in range(y8.shape[0]):
        a_buf[0, a_w + i] = y8[i, 0]
    window_rdft(a_buf, a_r, f32_1(t, WIN), f32_2(t, MAT), c64_2(t, TW), f32_2(t, WQ),
                f32_2(t, WY), c64_2(t, FRAME2))  # fmt: skip
    return block, count, r_t


@njit(cache=True, nogil=True)
def _hop_out(t, mask, out, hop, inv_off, ring_w, ring_r, fifo_w, fifo_r, pf_on, pf_strength,
             band_on, n_in, n_out, f0, f1, released, p8, b_written,
             t_out):  # fmt: skip  # pragma: no cover
    """Mask, synthesis, pitch post-filter, latency ring, band-split gain,
    up-resampler, rate FIFO, high band, on the buffers of table ``t``."""
    frame, proc, g32, s_ri = c64_3(t, FRAME), c64_3(t, PROC), f32_1(t, G32), f32_2(t, S_RI)
    _gain_apply(frame, mask, g32[0], g32[1], g32[2], proc)
    for k in range(s_ri.shape[1] // 2):  # the synthesizer's copy of the frame, (re, im)
        v = proc[0, 0, k]
        s_ri[0, 2 * k] = v.real
        s_ri[0, 2 * k + 1] = v.imag
    np.dot(s_ri, f32_2(t, PARTIAL), f32_2(t, XS2))
    s_out = f32_2(t, S_OUT)
    _overlap_add(f32_2(t, S_ACC), f32_3(t, XS), f32_1(t, WSYN), hop, f32_1(t, INV)[inv_off:],
                 s_out)  # fmt: skip
    y8 = f32_2(t, Y8)
    if pf_on:
        pf_input, pf_counts = f32_2(t, PF_INPUT), i64_1(t, PF_COUNTS)
        _push(pf_input, pf_counts, y8)
        _comb(s_out[:, :hop], f32_2(t, PF_WORK), f64_2(t, PF_ENERGY), i64_1(t, PF_TRACK),
              pf_input, pf_counts, hop, pf_strength, MIN_CORR)  # fmt: skip
    ring = f32_1(t, RING)
    _flat_in(ring, ring_w, s_out[0], hop)
    if band_on:
        bi, bf, raw = i64_1(t, BI), f64_1(t, BF), f64_2(t, RAW)
        ratios, e_hi = f64_3(t, RATIOS), f64_2(t, E_HI)
        _frame_ratios(frame, proc, bi[0], n_in, n_out, f64_3(t, E_IN), ratios, bf[0], bf[1])
        if f1 > f0:
            _combine(ratios, e_hi, f64_1(t, NOISE), raw, f0, f1, bi[1], bi[2], bf[2], bf[3],
                     bf[1], bf[4], bf[5])  # fmt: skip
        _gain_track(raw, max(f1 - 1, 0), released, hop, bf[6], bf[7], f64_1(t, SMOOTH),
                    f32_2(t, TRACK))  # fmt: skip
    z8 = f32_2(t, Z8)
    w_dev = f32_2(t, W_DEV)
    _flat_out(ring, ring_r, z8[:, 0], hop)
    _interpolate(z8, f32_2(t, O_BUF), f32_2(t, O_TAPS), f32_1(t, O_ACC), w_dev)
    n = w_dev.shape[0]
    fifo = f32_1(t, FIFO)
    _flat_in(fifo, fifo_w, w_dev[:, 0], n)
    _flat_out(fifo, fifo_r, out[:, 0], n)
    if band_on:
        bi = i64_1(t, BI)
        pack, pack_dev, b_fifo = f32_2(t, PACK), f32_2(t, PACK_DEV), f32_2(t, B_FIFO)
        _pack(y8, f32_2(t, YBUF), f32_2(t, TRACK), p8, bi[3], pack)
        _interpolate(pack, f32_2(t, U_BUF), f32_2(t, U_TAPS), f32_1(t, U_ACC), pack_dev)
        _circ_write(b_fifo, b_written, pack_dev)
        _mix(out, f32_2(t, XBUF), t_out, bi[4], b_fifo, t_out)
