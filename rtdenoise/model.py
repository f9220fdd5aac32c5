"""The VQ-VAE SE-U-Net mask estimator: causal streaming preset ``rt`` and the design's ``seed``.

Both presets map the raw complex noisy STFT ``spec [B, T, F, 2]`` (real, imag) to a bounded real
gain mask ``[B, T, F]`` in [0, 1] (sigmoid), applied to the complex noisy spectrum by the caller.
Features are computed inside: log power ``log(|X|^2 + eps)`` normalised per bin with statistics
stored in the model (``set_feature_stats``).

``rt`` (default, streaming): a U-Net over ``[B, C, T, F]`` that downsamples only in frequency
(stride 2 per stage, 260 -> 130 -> 65 -> 33 -> 17 -> 9), causal in time (time kernel 2 with
left-only context; dilated residual convs in the bottleneck), skips by concatenation, an SE
block on every stage squeezed causally over frequency and the last ``context_frames`` (260)
frames, and the vector quantizer at the bottleneck. The offline ``forward`` runs the very same
code as the streaming ``step`` with an all-zero initial state, so streaming equals offline
(only the SE window sums of long inputs take an O(T) float64 cumulative-sum path).
Widths 8-12-16-24-32, code 512 x 64 at 9 positions per frame: ~35 k parameters (+ 32 k EMA
codebook values), ~0.85 M MACs per frame (``model_complexity``).

Streaming state (``init_state``/``state_names``): each causal conv's past input frames, each SE
block's history of per-frame channel means (the window sum is recomputed from the history every
step, so it never drifts), and the quantized codes of past frames needed by the post-quantizer
conv (cached, never recomputed; only new frames are looked up). The blocks (causal conv, SE,
stages) are in ``blocks.py``.

The coarse grid (``coarse_grid.py``; off by default, so older checkpoints compute exactly as
before): ``frame_stride`` R runs the network on every R-th frame (the R frames since the last
one stacked as input channels, the SE window 260 / R network frames = the same second) and
holds its head output for R frames; ``band_split``/``band_width`` average the bins above a split
into bands at the input and repeat the output over them; ``mask_head='affine'`` turns the head
into a per-bin offset and slope, applied to each frame's own full-resolution feature, so every
frame and bin still gets its own mask; ``bottleneck_groups`` groups the residual bottleneck
convs. ``training/configs/rt_cheap.json`` (low-latency framing): R = 4, bands of 5 bins above
2003 Hz (156 bins), widths 12-16-24-32-48, dilations 1-16: 74 k parameters, 0.205 M MACs per
frame = 53 M per second of audio, against 0.89 M = 229 M for the shipped models.

``seed`` (offline only): faithful to the design (four 2x2 max-pooled stages of two 3x3
conv+BN+ReLU+Dropout, widths 64-1024, SE reduction 16, codebook 512 x 64, non-causal) over
260 x 260 windows, overlap-added with a Hann weighting at half-window hop.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import (
    MAX_BLOCK,
    CausalConv,
    ConvNormAct,
    DownStage,
    SqueezeExcite,
    UpStage,
    window_band,
)
from .checkpoint import read_checkpoint, to_plain
from .coarse_grid import Bands, FrameRate
from .harmonic import HarmonicComb
from .pitch_corr import PitchCorrelation
from .stft import StftConfig
from .vq import VectorQuantizer

log = logging.getLogger(__name__)

N_FREQS = 260
FRAMES_PER_SECOND = 8000 / 31


# ============================================================================ config
@dataclass(frozen=True)
class ModelConfig:
    """Hyperparameters of the mask network; travels inside checkpoints (``asdict``)."""

    preset: str = "rt"
    n_freqs: int = N_FREQS
    #: channels per encoder stage; each stage halves the frequency axis
    widths: tuple[int, ...] = (8, 12, 16, 24, 32)
    time_kernel: int = 2
    freq_kernel: int = 3
    #: dilations of the residual causal time convs in the bottleneck (rt)
    bottleneck_dilations: tuple[int, ...] = (1, 2, 4, 8)
    bottleneck_freq_kernel: int = 1
    se_reduction: int = 4
    se_min_hidden: int = 4
    #: SE squeeze window in STFT frames (the design's square window: 260 frames = 1 s; with
    #: frame_stride R that is context_frames / R network frames, the same second)
    context_frames: int = 260
    codebook_size: int = 512
    code_dim: int = 64
    commitment: float = 0.25
    vq_ema: bool = True
    ema_decay: float = 0.99
    dead_code_threshold: float = 0.5
    dropout: float = 0.0
    #: future frames the mask may depend on (0 = strictly causal)
    lookahead_frames: int = 0
    feat_eps: float = 1e-10
    #: seed preset: 260-frame windows overlap-added at this hop
    window_frames: int = 260
    window_hop: int = 130
    #: initial bias of the mask logit (sigmoid(2) = 0.88: start close to passthrough)
    mask_bias_init: float = 2.0
    #: STFT framing the model is trained for (``rtdenoise.stft.StftConfig``): window family
    #: and synthesis length (0 = the design's symmetric Hann, 64.75 ms; 124 = 15.4 ms)
    stft_window: str = "hann"
    stft_synthesis_len: int = 0
    #: rt: the network runs on every R-th STFT frame, on the R frames since the previous one
    #: stacked as channels; its head output is held for R frames (``coarse_grid``). 1 = every
    #: frame (needs mask_head 'affine' when > 1)
    frame_stride: int = 1
    #: rt: bins from band_split up are averaged into bands of band_width bins at the input and
    #: the head output is repeated over them (band_width 1 = full resolution everywhere;
    #: band_split 130 = 2003 Hz)
    band_split: int = 0
    band_width: int = 1
    #: rt: 'conv' = the mask logit is a conv over [last decoder stage, input]; 'affine' = that
    #: conv gives a per-bin offset and slope, and the logit of every STFT frame is
    #: offset + slope x that frame's full-resolution feature (a per-frame refinement of a held
    #: or banded output)
    mask_head: str = "conv"
    #: rt: groups of the residual bottleneck convs
    bottleneck_groups: int = 1
    #: rt: one more input channel per network frame, the harmonic comb of that frame's log
    #: power below the band split (``harmonic.HarmonicComb``), read by the first stage and head
    harmonic_channel: bool = False
    #: rt: one more input channel per network frame, the per-band pitch correlation of the
    #: noisy waveform (``pitch_corr.PitchCorrelation``); training and the offline forward only
    #: (the engine does not compute it yet, so such a model does not export)
    pitch_channel: bool = False

    def __post_init__(self) -> None:
        r = self.frame_stride
        if self.mask_head not in ("conv", "affine"):
            raise ValueError(f"mask_head must be 'conv' or 'affine', got {self.mask_head!r}")
        if r < 1 or (r > 1 and self.mask_head != "affine"):
            raise ValueError(f"frame_stride {r}: must be >= 1, and > 1 needs mask_head 'affine'")
        if self.context_frames % r or self.context_frames // r < 2:
            raise ValueError(
                f"context_frames {self.context_frames} must be a multiple of frame_stride {r} "
                "(at least 2 network frames)"
            )
        if self.band_width < 1 or not 0 <= self.band_split < self.n_freqs:
            raise ValueError(f"bad bands: split {self.band_split}, width {self.band_width}")
        if self.band_width > 1 and (self.n_freqs - self.band_split) % self.band_width:
            raise ValueError(
                f"bins {self.band_split}..{self.n_freqs - 1} do not split into bands of "
                f"{self.band_width}"
            )
        if self.widths[-1] % self.bottleneck_groups:
            raise ValueError(f"bottleneck_groups must divide {self.widths[-1]}")
        coarse = (r, self.band_width, self.mask_head, self.bottleneck_groups) != (1, 1, "conv", 1)
        coarse = coarse or self.harmonic_channel or self.pitch_channel
        if self.preset == "seed" and coarse:
            raise ValueError(
                "frame_stride, bands, mask_head, groups and harmonic_channel are rt options"
            )

    @property
    def stft(self) -> StftConfig:
        """The framing this model runs on; the engine refuses any other."""
        return StftConfig(window=self.stft_window, synthesis_len=self.stft_synthesis_len)

    @property
    def causal(self) -> bool:
        return self.preset == "rt"

    def to_dict(self) -> dict:
        """Plain types (tuples as lists), as stored in checkpoints and JSON metadata."""
        return to_plain(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        fields = {f.name for f in dataclasses.fields(cls)}
        kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in fields}
        return cls(**kw)


def preset_config(name: str = "rt", **overrides: object) -> ModelConfig:
    """The named preset (``rt`` or ``seed``) with optional field overrides."""
    if name == "rt":
        base = ModelConfig()
    elif name == "seed":
        base = ModelConfig(
            preset="seed",
            widths=(64, 128, 256, 512, 1024),
            freq_kernel=3,
            time_kernel=3,
            se_reduction=16,
            dropout=0.1,
            bottleneck_dilations=(),
        )
    else:
        raise ValueError(f"unknown preset {name!r} (expected 'rt' or 'seed')")
    return dataclasses.replace(base, **overrides)


# ============================================================================ rt U-Net
class RtUNet(nn.Module):
    """Causal frequency-only U-Net; features ``[B, 1, T, F]`` -> mask logits ``[B, 1, T, F]``.

    The network runs on the coarse grid of ``coarse_grid`` (``F_c`` bins, one network frame
    every ``frame_stride`` STFT frames; the identity at the defaults); ``logits`` brings its head
    output back to every frame and bin.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        w = list(cfg.widths)
        kt, kf = cfg.time_kernel, cfg.freq_kernel
        r = cfg.frame_stride
        self.stride = r
        self.affine = cfg.mask_head == "affine"
        self.bands = Bands(cfg.n_freqs, cfg.band_split, cfg.band_width)
        self.rate = FrameRate(r)
        freqs = [self.bands.n_bins]
        for _ in w:
            freqs.append((freqs[-1] + 1) // 2)
        self.freqs = freqs
        ctx = cfg.context_frames // r  # in network frames: the same time span
        se = lambda c: SqueezeExcite(c, cfg.se_reduction, cfg.se_min_hidden, ctx, True)  # noqa: E731
        #: the harmonic comb channel (None: off), appended to the network input
        bin_hz = cfg.stft.sample_rate / cfg.stft.nperseg
        self.harmonic = (
            HarmonicComb(cfg.n_freqs, bin_hz, cfg.band_split, cfg.band_width)
            if cfg.harmonic_channel
            else None
        )
        #: the pitch channel: one more input, its rows given by the caller
        self.has_pitch = bool(cfg.pitch_channel)
        n_in = r + (1 if cfg.harmonic_channel else 0) + (1 if cfg.pitch_channel else 0)
        self.enc = nn.ModuleList()
        cin = n_in  # the R frames up to a network frame (and the comb), as channels
        for c in w:
            self.enc.append(
                DownStage(CausalConv(cin, c, (kt, kf), stride_f=2, dropout=cfg.dropout), se(c))
            )
            cin = c
        self.mid = nn.ModuleList(
            CausalConv(
                w[-1],
                w[-1],
                (kt, cfg.bottleneck_freq_kernel),
                dilation_t=d,
                residual=True,
                groups=cfg.bottleneck_groups,
            )
            for d in cfg.bottleneck_dilations
        )
        self.mid_se = se(w[-1])
        self.pre_vq = nn.Conv2d(w[-1], cfg.code_dim, 1)
        self.vq = VectorQuantizer(
            cfg.codebook_size,
            cfg.code_dim,
            cfg.commitment,
            cfg.vq_ema,
            cfg.ema_decay,
            dead_threshold=cfg.dead_code_threshold,
        )
        # post-quantizer conv is causal: its cache holds the quantized codes of past frames
        self.post_vq = CausalConv(cfg.code_dim, w[-1], (kt, 1))
        self.dec = nn.ModuleList()
        n = len(w)
        for i in range(n - 1, -1, -1):  # level i: cat(u, skip_i) at freqs[i+1] -> freqs[i]
            cout = w[i - 1] if i > 0 else w[0]
            self.dec.append(UpStage(2 * w[i], cout, freqs[i + 1], freqs[i], se(cout)))
        # head over [last decoder stage, network input]: the logit, or offset and slope (affine)
        self.out = nn.Conv2d(w[0] + n_in, 2 if self.affine else 1, (1, kf), padding=(0, kf // 2))
        nn.init.constant_(self.out.bias, cfg.mask_bias_init)
        if self.affine:
            nn.init.zeros_(self.out.bias[1:])
        self._names, self._shapes = self._state_layout(cfg)
        #: where the decoder's states begin, and the coarse grid's (frames, held, phase)
        self._dec_state = 2 * len(self.enc) + len(self.mid) + 1
        self._grid_state = self._dec_state + 1 + len(self.dec)
        # not a parameter and not saved: rebuilt from the config
        self.register_buffer("band", window_band(ctx, MAX_BLOCK), persistent=False)

    def _state_layout(self, cfg: ModelConfig) -> tuple[list[str], list[list[int]]]:
        names: list[str] = []
        shapes: list[tuple[int, ...]] = []  # per stream: conv [C, frames, F], SE [C, frames]
        hist = cfg.context_frames // self.stride - 1
        for i, stage in enumerate(self.enc):
            names.append(f"enc{i}_conv")
            shapes.append((stage.conv.cin, stage.conv.ctx, self.freqs[i]))
            names.append(f"enc{i}_se")
            shapes.append((cfg.widths[i], hist))
        for j, conv in enumerate(self.mid):
            names.append(f"mid{j}_conv")
            shapes.append((conv.cin, conv.ctx, self.freqs[-1]))
        names.append("mid_se")
        shapes.append((cfg.widths[-1], hist))
        names.append("codes")
        shapes.append((cfg.code_dim, self.post_vq.ctx, self.freqs[-1]))
        for k, stage in enumerate(self.dec):
            names.append(f"dec{k}_se")
            shapes.append((stage.norm.num_features, hist))
        if self.stride > 1:  # coarse_grid.FrameRate: input frames, held head output, phase
            names += ["frames", "held", "phase"]
            shapes += [(self.stride - 1, self.freqs[0]), (self.out.out_channels, 1, self.freqs[0])]
            shapes.append((1,))
        return names, [list(x) for x in shapes]

    def window_band(self, frames: int) -> torch.Tensor:
        """``[context-1+T, T]`` matrix of the causal SE window means of a T-frame block."""
        return self.band[: self.band.shape[0] - self.band.shape[1] + frames, :frames]

    def encode(
        self,
        x: torch.Tensor,
        state: list[torch.Tensor],
        band: torch.Tensor,
        drop: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """x ``[B, R, T, F_c]`` -> (pre-quantizer latent ``[B, D, T, F_b]``, skips, new states)."""
        new: list[torch.Tensor] = []
        skips: list[torch.Tensor] = []
        si = 0
        for stage in self.enc:
            x, c, h = stage(x, state[si], state[si + 1], band, drop)
            new.append(c)
            new.append(h)
            skips.append(x)
            si += 2
        for conv in self.mid:
            x, c = conv(x, state[si], drop)
            new.append(c)
            si += 1
        x, h = self.mid_se(x, state[si], band, drop)
        new.append(h)
        return self.pre_vq(x), skips, new

    def decode(
        self,
        q: torch.Tensor,
        skips: list[torch.Tensor],
        x: torch.Tensor,
        state: list[torch.Tensor],
        band: torch.Tensor,
        drop: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """quantized ``[B, D, T, F_b]``, network input x -> (head ``[B, 1|2, T, F_c]``, states)."""
        si = self._dec_state
        new: list[torch.Tensor] = []
        u, c = self.post_vq(q, state[si], drop)
        new.append(c)
        si += 1
        n = len(skips)
        for k, stage in enumerate(self.dec):
            u, h = stage(torch.cat([u, skips[n - 1 - k]], dim=1), state[si], band, drop)
            new.append(h)
            si += 1
        return self.out(torch.cat([u, x], dim=1)), new

    def _with_comb(self, x: torch.Tensor) -> torch.Tensor:
        """Network input ``[B, R, N, F_c]`` -> with the comb of its last frame appended as a
        channel (``harmonic_channel``), else unchanged."""
        if self.harmonic is None:
            return x
        return torch.cat([x, self.harmonic(x[:, -1])], dim=1)

    def _with_pitch(self, x: torch.Tensor, pitch: torch.Tensor | None) -> torch.Tensor:
        """Network input ``[B, C, N, F_c]`` -> with the pitch rows of its frames ``[B, N, F_c]``
        appended as a channel (``pitch_channel``), else unchanged."""
        if not self.has_pitch:
            return x
        if pitch is None:
            raise ValueError("this model's pitch channel needs its rows (the noisy waveform)")
        return torch.cat([x, pitch.unsqueeze(1)], dim=1)

    def logits(self, head: torch.Tensor, feat: torch.Tensor) -> torch.Tensor:
        """Head output ``[B, 1|2, T, F_c]`` per STFT frame + features ``[B, 1, T, F]`` -> mask
        logits ``[B, 1, T, F]`` (affine: offset + slope x the frame's own feature, per bin)."""
        h = self.bands.expand(head)
        if self.affine:
            return h[:, :1] + h[:, 1:] * feat
        return h

    def init_state(self, batch: int) -> list[torch.Tensor]:
        p = self.out.weight
        return [torch.zeros([batch] + s, dtype=p.dtype, device=p.device) for s in self._shapes]

    @torch.jit.unused
    def forward_offline(
        self, feat: torch.Tensor, pitch: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """feat ``[B, 1, T, F]`` (+ the pitch channel ``[B, T, F_c]`` where the config has
        it) -> (mask logits, VQ loss, perplexity)."""
        state = self.init_state(feat.shape[0])
        x = self.bands.compress(feat)
        g = self._grid_state
        if self.stride > 1:
            x, index, _, _, _, pos = self.rate.select(x, state[g], state[g + 2])
            if pitch is not None:  # network frame n at STFT frame nR (offline: phase 0)
                pitch = pitch.index_select(1, pos)
        x = self._with_pitch(self._with_comb(x), pitch)
        band = self.window_band(min(x.shape[2], MAX_BLOCK))
        z, skips, _ = self.encode(x, state, band)
        q, loss, ppl = self.vq(z)
        head, _ = self.decode(q, skips, x, state, band)
        if self.stride > 1:
            head, _ = self.rate.hold(head, state[g + 1], index)
        return self.logits(head, feat), loss, ppl

    def step(
        self, feat: torch.Tensor, state: list[torch.Tensor], pitch: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """feat ``[B, 1, K, F]``, state (+ the pitch rows ``[B, K, F_c]`` of the block's frames
        where the config has the pitch channel; only the network frames' rows are read) ->
        (mask logits, new state)."""
        x = self.bands.compress(feat)
        if self.stride == 1:
            x = self._with_pitch(self._with_comb(x), pitch)
            band = self.window_band(x.shape[2])
            z, skips, new_enc = self.encode(x, state, band)
            head, new_dec = self.decode(self.vq.quantize(z), skips, x, state, band)
            return self.logits(head, feat), new_enc + new_dec
        g = self._grid_state
        x, index, drop, frames, phase, pos = self.rate.select(x, state[g], state[g + 2])
        if pitch is not None:
            pitch = pitch.index_select(1, pos)
        x = self._with_pitch(self._with_comb(x), pitch)
        band = self.window_band(x.shape[2])
        z, skips, new_enc = self.encode(x, state, band, drop)
        head, new_dec = self.decode(self.vq.quantize(z), skips, x, state, band, drop)
        head, held = self.rate.hold(head, state[g + 1], index)
        return self.logits(head, feat), new_enc + new_dec + [frames, held, phase]


# ============================================================================ seed U-Net
class SeedUNet(nn.Module):
    """The design's non-causal U-Net over 260 x 260 windows (offline only)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        w = list(cfg.widths)
        k = (cfg.time_kernel, cfg.freq_kernel)
        pad_t = cfg.time_kernel // 2
        self.cfg = cfg

        def double(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                ConvNormAct(cin, cout, k, pad_t=pad_t, dropout=cfg.dropout),
                ConvNormAct(cout, cout, k, pad_t=pad_t, dropout=cfg.dropout),
            )

        def se(c: int) -> SqueezeExcite:
            return SqueezeExcite(c, cfg.se_reduction, 1, cfg.window_frames, False)

        self.down = nn.ModuleList()
        self.down_se = nn.ModuleList()
        cin = 1
        for c in w[:-1]:
            self.down.append(double(cin, c))
            self.down_se.append(se(c))
            cin = c
        self.bottom = double(w[-2], w[-1])
        self.bottom_se = se(w[-1])
        self.pre_vq = nn.Conv2d(w[-1], cfg.code_dim, 1)
        self.vq = VectorQuantizer(
            cfg.codebook_size,
            cfg.code_dim,
            cfg.commitment,
            cfg.vq_ema,
            cfg.ema_decay,
            dead_threshold=cfg.dead_code_threshold,
        )
        self.post_vq = nn.Conv2d(cfg.code_dim, w[-1], 1)
        self.up = nn.ModuleList()
        self.up_conv = nn.ModuleList()
        self.up_se = nn.ModuleList()
        for i in range(len(w) - 1, 0, -1):
            self.up.append(nn.ConvTranspose2d(w[i], w[i - 1], 2, stride=2))
            self.up_conv.append(double(2 * w[i - 1], w[i - 1]))
            self.up_se.append(se(w[i - 1]))
        self.out = nn.Conv2d(w[0], 1, 1)
        nn.init.constant_(self.out.bias, cfg.mask_bias_init)
        self._empty = torch.zeros(0)

    def window(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One batch of windows ``[N, 1, W, F]`` -> (logits ``[N, 1, W, F]``, loss, perplexity)."""
        e = self._empty
        skips = []
        for conv, se in zip(self.down, self.down_se, strict=True):
            x, _ = se(conv(x), e, e)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x, _ = self.bottom_se(self.bottom(x), e, e)
        q, loss, ppl = self.vq(self.pre_vq(x))
        x = self.post_vq(q)
        for up, conv, se, skip in zip(
            self.up, self.up_conv, self.up_se, reversed(skips), strict=True
        ):
            x = up(x)
            x = F.pad(x, (0, skip.shape[3] - x.shape[3], 0, skip.shape[2] - x.shape[2]))
            x, _ = se(conv(torch.cat([x, skip], dim=1)), e, e)
        return self.out(x), loss, ppl

    def forward_offline(
        self, feat: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """feat ``[B, 1, T, F]`` -> logits via Hann-weighted overlap-add of 260-frame windows."""
        b, _, t, f = feat.shape
        win, hop = self.cfg.window_frames, self.cfg.window_hop
        n = max(1, math.ceil((t - win) / hop) + 1) if t > win else 1
        total = (n - 1) * hop + win
        x = F.pad(feat, (0, 0, 0, total - t))
        frames = torch.stack([x[:, :, i * hop : i * hop + win] for i in range(n)], dim=1)
        logits, loss, ppl = self.window(frames.reshape(b * n, 1, win, f))
        logits = logits.reshape(b, n, win, f)
        wt = torch.hann_window(win + 2, periodic=False, dtype=feat.dtype, device=feat.device)[1:-1]
        out = feat.new_zeros(b, total, f)
        norm = feat.new_zeros(total, 1)
        for i in range(n):
            out[:, i * hop : i * hop + win] += logits[:, i] * wt[:, None]
            norm[i * hop : i * hop + win] += wt[:, None]
        return (out / norm)[:, None, :t], loss, ppl

    def init_state(self, batch: int) -> list[torch.Tensor]:
        return []

    def step(
        self, feat: torch.Tensor, state: list[torch.Tensor], pitch: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        raise RuntimeError("the seed preset is offline only (non-causal); use preset 'rt'")


# ============================================================================ the model
class DenoiserNet(nn.Module):
    """Mask estimator: complex noisy STFT ``[B, T, F, 2]`` -> gain mask ``[B, T, F]`` in [0, 1].

    ``forward`` (offline, whole utterance) -> (mask, vq_loss ``[]``, perplexity ``[]``).
    ``step(spec [B, K, F, 2], state)`` -> (mask ``[B, K, F]``, new state), pure, any K >= 1;
    mask frame k of a step belongs to input frame ``n + k - lookahead_frames``.
    """

    def __init__(self, cfg: ModelConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or ModelConfig()
        self.cfg = cfg
        self.lookahead = cfg.lookahead_frames
        self.feat_eps = cfg.feat_eps
        self.register_buffer("feat_mean", torch.full((cfg.n_freqs,), -14.0))
        self.register_buffer("feat_std", torch.full((cfg.n_freqs,), 4.0))
        self.net = RtUNet(cfg) if cfg.causal else SeedUNet(cfg)
        #: the pitch channel's input from the noisy waveform (None: the config has none)
        self.pitch = (
            PitchCorrelation(cfg.stft, cfg.n_freqs, cfg.band_split, cfg.band_width)
            if cfg.pitch_channel
            else None
        )

    @torch.jit.unused
    def set_feature_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Per-bin mean/std ``[F]`` of ``log(|X|^2 + eps)`` over training data."""
        with torch.no_grad():
            self.feat_mean.copy_(torch.as_tensor(mean, dtype=self.feat_mean.dtype))
            self.feat_std.copy_(torch.as_tensor(std, dtype=self.feat_std.dtype).clamp_min(1e-3))

    @torch.jit.unused
    def raw_features(self, spec: torch.Tensor) -> torch.Tensor:
        """spec ``[B, T, F, 2]`` -> un-normalised ``log(|X|^2 + eps)`` ``[B, T, F]``."""
        return torch.log((spec * spec).sum(dim=3) + self.feat_eps)

    def features(self, spec: torch.Tensor) -> torch.Tensor:
        """spec ``[B, T, F, 2]`` -> normalised log power ``[B, 1, T, F]``."""
        p = (spec * spec).sum(dim=3)
        return ((torch.log(p + self.feat_eps) - self.feat_mean) / self.feat_std).unsqueeze(1)

    @torch.jit.unused
    def forward(
        self, spec: torch.Tensor, wave: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """spec ``[B, T, F, 2]`` (+ the noisy waveform ``[B, n]`` it came from, for a model
        with the pitch channel) -> (mask ``[B, T, F]``, vq_loss ``[]``, perplexity ``[]``)."""
        t = spec.shape[1]
        if self.lookahead > 0:
            spec = F.pad(spec, (0, 0, 0, 0, 0, self.lookahead))
        feat = self.features(spec)
        if self.pitch is None:
            logits, loss, ppl = self.net.forward_offline(feat)
        elif wave is None:
            raise ValueError("this model's pitch channel needs the noisy waveform")
        else:
            logits, loss, ppl = self.net.forward_offline(feat, self.pitch(wave))
        mask = torch.sigmoid(logits[:, 0])
        return mask[:, self.lookahead : self.lookahead + t], loss, ppl

    @torch.jit.export
    def init_state(self, batch: int = 1) -> list[torch.Tensor]:
        """All-zero streaming state for ``batch`` streams (list, order of ``state_names``)."""
        return self.net.init_state(batch)

    @torch.jit.unused
    def state_names(self) -> list[str]:
        return list(self.net._names) if self.cfg.causal else []

    @torch.jit.export
    def step(
        self, spec: torch.Tensor, state: list[torch.Tensor], pitch: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """spec ``[B, K, F, 2]`` + state (+ the pitch rows ``[B, K, F_c]`` for a model with the
        pitch channel: ``pitch_frame``) -> (mask ``[B, K, F]``, new state); inputs untouched."""
        logits, new_state = self.net.step(self.features(spec), state, pitch)
        return torch.sigmoid(logits[:, 0]), new_state


# ============================================================================ complexity
@torch.no_grad()
def model_complexity(cfg: ModelConfig | None = None, frames: int = 64) -> dict[str, float]:
    """Parameter count (+ EMA codebook values) and multiply-accumulates per STFT frame and per
    second of audio.

    Counted with hooks on convs and pools during an eval-mode offline forward of ``frames``
    frames (seed: one 260-frame window), plus the quantizer's distance matmul, the SE window
    sums and the affine head's per-frame multiply-add. With ``frame_stride`` R the network
    runs on one frame in R, so its MACs are divided by R (the streaming step wastes a network
    frame on some blocks whose K is not a multiple of R; see ``coarse_grid``).
    """
    cfg = cfg or ModelConfig()
    model = DenoiserNet(cfg).eval()
    if not cfg.causal:
        frames = cfg.window_frames
    r = cfg.frame_stride
    frames = -(-frames // r) * r  # whole network frames
    macs = [0]

    def hook(mod: nn.Module, inp: tuple, out: torch.Tensor) -> None:
        if isinstance(mod, nn.ConvTranspose2d):
            k = mod.kernel_size[0] * mod.kernel_size[1]
            macs[0] += inp[0].numel() * mod.out_channels // mod.groups * k
        elif isinstance(mod, nn.Conv2d):
            k = mod.kernel_size[0] * mod.kernel_size[1]
            macs[0] += out.numel() * mod.in_channels // mod.groups * k
        elif isinstance(mod, VectorQuantizer):
            macs[0] += out[0].numel() * mod.codebook_size  # [M, D] x [D, N]

    handles = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, VectorQuantizer))
    ]
    spec = torch.randn(1, frames, cfg.n_freqs, 2) * 0.01
    if cfg.pitch_channel:  # its rows come from outside the network (``pitch_frame``)
        model.net.forward_offline(
            model.features(spec), torch.zeros(1, frames, model.net.bands.n_bins)
        )
    else:
        model(spec)
    for h in handles:
        h.remove()
    # causal SE window averages: context adds per channel per network frame
    se_adds = sum(
        m.fc1.in_channels * m.context / r
        for m in model.modules()
        if isinstance(m, SqueezeExcite) and m.causal
    )
    # affine head: offset + slope x feature, per bin of every STFT frame
    head = cfg.n_freqs if cfg.causal and cfg.mask_head == "affine" else 0
    per_frame = macs[0] / frames + se_adds + head
    params = sum(p.numel() for p in model.parameters())
    vq = model.net.vq
    return {
        "params": params,
        # an EMA codebook is a buffer, not a parameter: its values are counted separately
        "codebook_values": 0 if isinstance(vq.codebook, nn.Parameter) else vq.codebook.numel(),
        "macs_per_frame": per_frame,
        "macs_per_second": per_frame * FRAMES_PER_SECOND,
    }


# ============================================================================ checkpoints
def save_checkpoint(path: str | Path, model: DenoiserNet, **extra: object) -> None:
    """Weights, buffers and config in one file (``extra``: e.g. step, metrics, train config).

    Everything beside the tensors is stored as plain types (``checkpoint.to_plain``), so the
    file loads with ``weights_only=True``.
    """
    payload = {
        "config": model.cfg.to_dict(),
        "state_dict": model.state_dict(),
        "extra": to_plain(extra),
    }
    torch.save(payload, str(path))


def load_checkpoint(path: str | Path, map_location: str = "cpu") -> DenoiserNet:
    """Rebuild the model from a checkpoint alone (eval mode); ``.extra`` holds the extras.

    Reads ``save_checkpoint`` files and also the trainer's resume files (``last.pt``: weights
    under ``model``, the training config with its ``model`` section under ``config``). The file
    is read with ``weights_only=True`` (``checkpoint.read_checkpoint``): one that holds code is
    refused with a ``UserError`` before anything in it runs.
    """
    from .errors import UserError

    path = Path(path)
    payload = read_checkpoint(path, map_location)
    try:
        if "state_dict" in payload:
            cfg = ModelConfig.from_dict(payload["config"])
            weights, extra = payload["state_dict"], payload.get("extra", {})
        else:  # trainer resume file
            section = dict(payload["config"]["model"])
            section = {k: tuple(v) if isinstance(v, list) else v for k, v in section.items()}
            cfg = preset_config(section.pop("preset", "rt"), **section)
            weights, extra = payload["model"], {"step": payload.get("step")}
        model = DenoiserNet(cfg)
        model.load_state_dict(weights)
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
        raise UserError(f"not an rtdenoise checkpoint: {path} ({exc})") from exc
    model.extra = extra
    return model.eval()
