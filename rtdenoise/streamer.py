"""The streaming engine: samples in, processed samples out, same count, fixed latency.

:class:`Streamer` composes the data path and owns every buffer on it::

    x [n, C] at sample_rate -> StreamingResampler (-> 8 kHz)          (only if rates differ)
      -> StftAnalyzer (hop 31) -> processor, K frames per call
      -> StftSynthesizer (exact overlap-add) -> PitchPostfilter (a model's; no latency)
      -> RingBuffer (latency prefill)
      -> StreamingResampler (8 kHz ->) -> RingBuffer (rate FIFO) -> y [n, C] at sample_rate
      + the band above 4 kHz, gated by the model's output         (rates above 8 kHz, full_band)

Above 8 kHz the output is full band by default: :mod:`rtdenoise.bandsplit` adds the input
minus its low band (as the resampler round trip returns it), delayed to the same latency and
scaled by a gain that follows the processor's output, so with identity processing the output
is exactly the input delayed by ``latency_samples``. ``full_band=False`` returns only the
telephone band (the low band of the 8 kHz path), as before.

``feed(x)`` returns exactly as many samples as it is given: ``y[t] = processed(x)[t - L]`` with
``L = latency_samples`` (the first ``L`` samples of a stream are zeros). ``flush()`` feeds ``L``
zeros and returns the tail; ``process(x)`` runs a whole signal and returns it time-aligned.

Latency at 8 kHz with a processor of ``K`` frames per call and ``La`` lookahead frames is
``nperseg - 1 + (K - 1 + La) * hop`` (518 samples = 64.75 ms for K=1, La=0): a frame can be
analysed only once its last sample has arrived, and the synthesis releases ``K * hop`` samples
per block, so the first sample of a block must wait for the block's last. With resampling the
total group delay ``d_out + (d_in + L8) * sample_rate / 8000`` must be whole device samples:
the up-resampler is built with ``prior_delay = d_in + L8`` so that it chooses its filter length
to make it so (at most one extra device sample). With a resampler that cannot, the total is
rounded and the residual fractional delay (``residual_delay``, within +-0.5 sample) is left in
the signal.

A processor with lookahead ``La`` is a delay line (see ``processor.FrameProcessor``): the first
``La`` frames it writes after ``reset`` are discarded. Multi-channel audio is processed per
channel: the processor gets ``[C, K, F]``.

Buffers are preallocated: ``feed(x, out=y)`` allocates no audio memory (only small numpy views).
The FFTs run batched over all frames a call makes available (up to ``max_frames`` per batch),
while the processor still sees exactly K frames per call; with one channel those are views of
the engine's buffers, valid only during the call.

Cost with identity processing, 48 kHz in and out, one thread (``benchmarks/test_bench_dsp.py``):
~2.5 ms of CPU per second of audio fed in 4096-sample blocks, ~5 ms in 10 ms chunks. The band
split adds ~1.4 ms (4096-sample blocks) to ~2.8 ms (10 ms chunks) per second at 48 kHz
(measured against ``full_band=False`` in the same run on a busy machine); with the model that
is ~1.1x the narrowband CPU (``benchmarks/test_bench_model.py``).
"""

from __future__ import annotations

import logging
import math
from fractions import Fraction

import numpy as np

from .bandsplit import BandSplit, BandSplitConfig, HighBandGain, gain_floor
from .errors import UserError
from .hop_path import HopPath
from .postfilter import PitchPostfilter
from .processor import FrameProcessor, IdentityProcessor
from .ring import RingBuffer
from .stft import StftAnalyzer, StftConfig, StftSynthesizer

log = logging.getLogger(__name__)

#: frames per batched FFT call (rounded up to a multiple of the processor's block)
DEFAULT_MAX_FRAMES = 64


class _Core:
    """The engine at the STFT rate: ``feed(x [m, C], out [m, C])``, latency ``latency``."""

    def __init__(
        self,
        processor: FrameProcessor,
        channels: int,
        cfg: StftConfig,
        max_frames: int,
        pad: int = 0,
    ) -> None:
        #: optional ``push(frames_in, frames_out, released)`` after each batch (the band split)
        self.observer: HighBandGain | None = None
        k = int(processor.block_frames)
        la = int(processor.lookahead_frames)
        if k < 1 or la < 0:
            raise ValueError(f"bad processor framing: block_frames={k}, lookahead_frames={la}")
        self.processor = processor
        self.cfg = cfg
        self.channels = channels
        self.k = k
        self.lookahead = la
        #: the framing's latency plus ``pad`` samples of extra delay (see Streamer's
        #: ``align_block_frames``)
        self.latency = cfg.latency(k, la) + pad
        self.max_frames = k * max(1, -(-max_frames // k))
        #: largest segment fed at once: leaves room for the K-1 frames that may be pending
        self.segment = (self.max_frames - k + 1) * cfg.hop
        self.analyzer = StftAnalyzer(cfg, channels, self.max_frames)
        self.synth = StftSynthesizer(cfg, channels, self.max_frames)
        f = cfg.n_freqs
        self._proc = np.zeros((channels, self.max_frames, f), np.complex64)
        self._blk_in = np.zeros((channels, k, f), np.complex64)
        self._blk_out = np.zeros((channels, k, f), np.complex64)
        self.ring = RingBuffer(
            self.latency + self.segment + k * cfg.hop, channels, np.float32, "refuse"
        )
        strength = float(getattr(processor, "pitch_postfilter", 0.0))
        #: the comb on the synthesised output (:mod:`rtdenoise.postfilter`); None: off
        lead = self.segment + 2 * cfg.nperseg + (k + la) * cfg.hop  # input ahead of the output
        self.postfilter = (
            PitchPostfilter(channels, cfg.hop, strength, lead) if strength > 0 else None
        )
        self.reset()

    def reset(self) -> None:
        self.analyzer.reset()
        self.synth.reset()
        self.processor.reset(self.channels)
        self._drop = self.lookahead
        if self.postfilter is not None:
            self.postfilter.reset()
        self.ring.reset()
        self.ring.write_zeros(self.latency)

    def _run_blocks(self, frames: np.ndarray) -> int:
        """frames complex64 [C, nb*K, F] -> processed frames in self._proc[:, :kept]."""
        k = self.k
        proc = self._proc
        direct = self.channels == 1  # block slices are contiguous: no copies
        kept = 0
        # the input the frames were cut from (a model with the pitch channel reads it)
        an = self.analyzer
        reads = getattr(self.processor, "needs_samples", False)
        for s in range(0, frames.shape[1], k):
            if direct:
                blk_in, blk_out = frames[:, s : s + k], proc[:, kept : kept + k]
            else:
                self._blk_in[:] = frames[:, s : s + k]
                blk_in, blk_out = self._blk_in, self._blk_out
            if reads:
                self.processor.process(blk_in, blk_out, an._buf, an.last_start + s * self.cfg.hop)
            else:
                self.processor.process(blk_in, blk_out)
            if not direct:
                proc[:, kept : kept + k] = self._blk_out
            if self._drop:  # the processor's first `lookahead` frames precede the stream
                d = min(self._drop, k)
                self._drop -= d
                proc[:, kept : kept + k - d] = proc[:, kept + d : kept + k].copy()
                kept += k - d
            else:
                kept += k
        return kept

    def feed(self, x: np.ndarray, out: np.ndarray) -> None:
        """x float32 [m, C] -> out [m, C] (may alias nothing in x)."""
        m = x.shape[0]
        seg = self.segment
        for a in range(0, m, seg):
            b = min(a + seg, m)
            self.analyzer.push(x[a:b].T)
            if self.postfilter is not None:
                self.postfilter.push_input(x[a:b])
            n_frames = (self.analyzer.available // self.k) * self.k
            if n_frames:
                frames = self.analyzer.pop(n_frames)
                kept = self._run_blocks(frames)
                samples = self.synth.push(self._proc[:, :kept])
                if self.postfilter is not None:
                    self.postfilter.process(samples)
                self.ring.write(samples.T)
                if self.observer is not None:
                    self.observer.push(frames, self._proc[:, :kept], samples.shape[1])
            self.ring.read(out[a:b])


def _framing(processor: FrameProcessor | None, stft: StftConfig | None) -> StftConfig:
    """The framing to run: the processor's own (a model's, from its metadata) unless one is
    asked for; a model never runs on a framing it was not trained for."""
    own = getattr(processor, "stft", None)
    if stft is None:
        return own or StftConfig()
    if own is not None and own != stft:
        raise UserError(
            f"the model was trained for the STFT framing {own.describe()} and cannot run on "
            f"{stft.describe()}"
        )
    return stft


class Streamer:
    """Block-by-block denoising engine with a fixed, exact latency.

    processor: any :class:`~rtdenoise.processor.FrameProcessor` (default: identity, 1 frame).
    sample_rate: rate of the audio fed and returned; resampled to/from ``stft.sample_rate``.
    channels: C; ``feed`` takes ``[n]`` (C == 1) or ``[n, C]``.
    stft: the framing; default: the processor's (a model's ``stft`` from its metadata), else
    the design's symmetric window. A framing other than the model's raises ``UserError``.
    full_band: above ``stft.sample_rate``, add the band the model does not see, gated by its
    output (:mod:`rtdenoise.bandsplit`, tuned by ``band``); False: the low band only.
    align_block_frames: for whole-signal use: the output is exactly the one this stream would
    give at that many frames per call. The up-resampler's filter is chosen to make the chain's
    delay whole, so at rates where 8 kHz samples are not whole device samples (22.05, 44.1 kHz)
    it depends on the latency, hence on K; the core's latency is padded by fewer than
    ``8000 / gcd(8000, sample_rate)`` samples at 8 kHz (none at 8, 16, 32, 48 kHz) to make the
    same choice as at ``align_block_frames``. The processor's output does not depend on K.
    compiled_hops: calls of exactly one hop (live mode's) take :mod:`rtdenoise.hop_path`'s
    compiled path where the set-up allows it (same output and state; False: never).
    """

    def __init__(
        self,
        processor: FrameProcessor | None = None,
        sample_rate: int = 8000,
        channels: int = 1,
        stft: StftConfig | None = None,
        max_frames: int = DEFAULT_MAX_FRAMES,
        full_band: bool = True,
        band: BandSplitConfig = BandSplitConfig(),  # noqa: B008 - frozen dataclass
        align_block_frames: int | None = None,
        compiled_hops: bool = True,
    ) -> None:
        stft = _framing(processor, stft)
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        if int(sample_rate) != sample_rate or sample_rate <= 0:
            raise ValueError(f"sample_rate must be a positive integer, got {sample_rate}")
        self.processor: FrameProcessor = processor or IdentityProcessor(block_frames=1)
        self.sample_rate = int(sample_rate)
        self.channels = int(channels)
        self.stft = stft
        self._core = _Core(
            self.processor,
            self.channels,
            stft,
            max_frames,
            _alignment_pad(self.processor, stft, self.sample_rate, align_block_frames),
        )
        self._resampling = self.sample_rate != stft.sample_rate
        #: the band above the model's (see :mod:`rtdenoise.bandsplit`); None: narrowband output
        self._band: BandSplit | None = None
        if self._resampling:
            self._init_resampling(full_band and self.sample_rate > stft.sample_rate, band)
        else:
            self._latency = self._core.latency
            self.residual_delay = 0.0
        #: the compiled one-hop path (live mode's calls), where the set-up allows it
        self._hops = HopPath.build(self) if compiled_hops else None
        self.reset()
        log.debug(
            "streamer: %d Hz x %d ch, K=%d, lookahead=%d, latency %d samples (%.2f ms)",
            self.sample_rate,
            self.channels,
            self._core.k,
            self._core.lookahead,
            self._latency,
            self.latency_ms,
        )

    def _init_resampling(self, full_band: bool, band: BandSplitConfig) -> None:
        from .resample import StreamingResampler

        sr, sr8, c = self.sample_rate, self.stft.sample_rate, self.channels
        self._rs_in = StreamingResampler(sr, sr8, c)
        # delay already in the signal when it reaches the up-resampler, in 8 kHz samples; the
        # up-resampler picks its filter length so that the chain's total delay is whole
        prior = Fraction(self._rs_in.delay) + self._core.latency

        def up(channels: int) -> StreamingResampler:
            try:
                return StreamingResampler(sr8, sr, channels, prior_delay=prior)
            except TypeError:  # a resampler without chain alignment: round below
                return StreamingResampler(sr8, sr, channels)

        self._rs_out = up(c)
        group = Fraction(self._rs_out.delay) + prior * Fraction(sr, sr8)
        # the rate FIFO must never run dry: prefill it by the chain's worst count deficit
        self._prefill = _count_deficit(self._rs_in, self._rs_out, sr)
        self._latency = self._prefill + round(group)
        #: delay left in the output beyond latency_samples, in device samples (|.| <= 0.5;
        #: 0 when the resampler aligns the chain)
        self.residual_delay = float(self._prefill + group - self._latency)
        # device samples per sub-chunk: one core segment at 8 kHz at most
        self._chunk = max(1, (self._core.segment - 2) * sr // sr8)
        n8 = -(-self._chunk * sr8 // sr) + 2
        self._buf8_in = np.zeros((n8, c), np.float32)
        self._buf8_out = np.zeros((n8, c), np.float32)
        self._buf_dev = np.zeros((-(-n8 * sr // sr8) + 2, c), np.float32)
        cap = self._prefill + self._chunk + self._buf_dev.shape[0] + 8
        self._fifo = RingBuffer(cap, c, np.float32, "refuse")
        if full_band:
            core = self._core
            gain = HighBandGain(
                self.stft,
                c,
                core.max_frames,
                core.lookahead,
                core.ring.capacity,
                sr,
                float(self._rs_in.delay),
                band,
                gain_floor(self.processor),
            )
            core.observer = gain
            self._band = BandSplit(
                gain, up(2 * c), core.latency, self._prefill, self._latency, n8, self._chunk
            )

    # -- public API ---------------------------------------------------------------------------

    @property
    def latency_samples(self) -> int:
        """Output delay in samples at ``sample_rate``: ``y[t] = processed(x)[t - latency]``."""
        return self._latency

    @property
    def latency_ms(self) -> float:
        return 1000.0 * self._latency / self.sample_rate

    @property
    def block_frames(self) -> int:
        return self._core.k

    @property
    def underflows(self) -> int:
        """Samples the internal FIFOs had to zero-fill (0 unless something is broken)."""
        n = self._core.ring.underflows
        if self._band is not None:
            n += self._band.underflows
        return n + (self._fifo.underflows if self._resampling else 0)

    @property
    def compiled_hop_calls(self) -> int | None:
        """Calls the compiled one-hop path (:mod:`rtdenoise.hop_path`) has taken since the
        streamer was built; None where the set-up does not allow it."""
        return None if self._hops is None else self._hops.calls

    @property
    def full_band(self) -> bool:
        """Whether the band above the model's 4 kHz is passed (gated), not cut."""
        return self._band is not None

    def reset(self) -> None:
        """Forget the stream: the next ``feed`` behaves like the first one of a new Streamer."""
        self._core.reset()
        if self._resampling:
            self._rs_in.reset()
            self._rs_out.reset()
            self._fifo.reset()
            self._fifo.write_zeros(self._prefill)
            if self._band is not None:
                self._band.reset()

    def feed(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """x: float ``[n]`` (one channel) or ``[n, C]`` -> float32 of the same shape.

        ``out`` (float32, same shape as ``x``) avoids allocating the result.
        """
        x = np.asarray(x, dtype=np.float32)
        if self._hops is not None and out is not None and self._hops.feed(x, out):
            return out
        flat = x.ndim == 1
        if flat and self.channels == 1:
            x2 = x.reshape(-1, 1)
        elif x.ndim == 2 and x.shape[1] == self.channels:
            x2 = x
        else:
            raise ValueError(f"expected [n, {self.channels}] samples, got shape {x.shape}")
        if out is None:
            out = np.empty(x.shape, np.float32)
        elif out.shape != x.shape or out.dtype != np.float32:
            raise ValueError(f"out must be float32 of shape {x.shape}")
        out2 = out.reshape(-1, 1) if flat else out
        if not self._resampling:
            self._core.feed(x2, out2)
            return out
        n = x2.shape[0]
        for a in range(0, n, self._chunk):
            b = min(a + self._chunk, n)
            if self._band is not None:
                self._band.meter(x2[a:b])
            y8 = self._rs_in.process(x2[a:b], out=self._buf8_in)
            z8 = self._buf8_out[: y8.shape[0]]
            self._core.feed(y8, z8)
            w = self._rs_out.process(z8, out=self._buf_dev)
            self._fifo.write(w)
            self._fifo.read(out2[a:b])
            if self._band is not None:
                self._band.feed8(y8)
                self._band.mix(out2[a:b])
        return out

    def flush(self) -> np.ndarray:
        """Feed ``latency_samples`` zeros -> the tail ``[latency_samples]`` (or ``[.., C]``)."""
        shape = (self._latency,) if self.channels == 1 else (self._latency, self.channels)
        return self.feed(np.zeros(shape, np.float32))

    def process(self, x: np.ndarray, block: int = 4096) -> np.ndarray:
        """A whole signal ``[n]`` or ``[n, C]`` -> time-aligned output of the same shape.

        Resets first, feeds ``block`` samples at a time, flushes and drops the latency.
        """
        x = np.asarray(x, dtype=np.float32)
        self.reset()
        y = np.empty((x.shape[0] + self._latency,) + x.shape[1:], np.float32)
        n = x.shape[0]
        for a in range(0, n, block):
            b = min(a + block, n)
            self.feed(x[a:b], out=y[a:b])
        self.feed(np.zeros(y[x.shape[0] :].shape, np.float32), out=y[x.shape[0] :])
        return y[self._latency :]


def _alignment_pad(
    processor: FrameProcessor, stft: StftConfig, sample_rate: int, align: int | None
) -> int:
    """8 kHz samples of extra core latency that make the resampling chain the same as at
    ``align`` frames per call (a whole number of device samples more delay)."""
    if align is None or sample_rate == stft.sample_rate:
        return 0
    la = int(processor.lookahead_frames)
    period = stft.sample_rate // math.gcd(stft.sample_rate, sample_rate)
    return (stft.latency(align, la) - stft.latency(int(processor.block_frames), la)) % period


def _count_deficit(rs_in: object, rs_out: object, sr: int) -> int:
    """Worst shortfall of chain output count vs input count, in device samples (>= 0).

    Uses the resamplers' ``total_output(n)`` (count after n inputs, any chunking) when they have
    it; otherwise assumes a resampler may hold back one output sample per call.
    """
    tin = getattr(rs_in, "total_output", None)
    tout = getattr(rs_out, "total_output", None)
    if tin is None or tout is None:
        return 2 + -(-sr // 8000)
    period = sr // math.gcd(sr, 8000)  # the count pattern repeats every `period` inputs
    return max(0, max(i - tout(tin(i)) for i in range(2 * period + 1)))
