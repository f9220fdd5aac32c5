"""Per-band pitch correlation of the noisy input: an input channel for the ``rt`` network
(``ModelConfig.pitch_channel``; this module: training and the offline forward; the streaming
engine computes the same rows frame by frame in ``pitch_frame``).

Where the shipped network loses STOI to RNNoise (0.75-2.4 kHz at low band SNR, and voices with a
strong fundamental: ``benchmarks.voice_variant``) its only input is the log power of the last
frames; RNNoise also sees, per band, how well the frame correlates with the signal one pitch
period earlier (high in voiced speech, whatever its level against the noise). This module
computes that cue on the model's own STFT framing, per STFT frame ``t``:

* lag: the pitch period ``L`` in 20..100 samples (400..80 Hz at 8 kHz) that maximises the
  normalised autocorrelation of the frame's newest 256 samples;
* the frame one period earlier: the same window over the samples ``L`` before the frame's, ``P``;
* per band of ``BAND`` bins (246 Hz: wide enough that band-passed noise decorrelates within a
  pitch period), ``sum Re(X P*) / sqrt(sum |X|^2 sum |P|^2)`` in [-1, 1]; each bin of the
  network's grid takes its band's value.

Causal (samples up to the frame's last only). ``forward(x [B, n]) -> [B, T, F_c]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .pitch_frame import BAND, EPS, LAG_MAX, LAG_MIN, SEG, grid_bins
from .stft import StftConfig


class PitchCorrelation(nn.Module):
    """Noisy waveform ``[B, n]`` -> per-band pitch correlation ``[B, T, F_c]`` on the frames of
    ``stft`` (as ``training.torch_stft.TorchStft.stft``) and the network's grid (bins below
    ``split``, then bands of ``width``)."""

    def __init__(self, stft: StftConfig, n_freqs: int, split: int, width: int) -> None:
        super().__init__()
        self.cfg = stft
        self.register_buffer(
            "window", torch.from_numpy(stft.window_array.copy()).float(), persistent=False
        )
        band = torch.arange(n_freqs) // BAND  # correlation band of each bin
        cells = torch.from_numpy(grid_bins(n_freqs, split, width))  # a bin per grid cell
        self.n_bands = int(band[-1]) + 1
        self.register_buffer("band", band, persistent=False)
        self.register_buffer("grid_band", band[cells], persistent=False)

    @torch.jit.unused  # training and the offline forward; the exported step takes the rows
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.cfg
        n = x.shape[-1]
        padded = n + c.pad + c.pad_end
        extra = (-(padded - c.nperseg)) % c.hop
        xp = F.pad(x.float(), (c.pad + LAG_MAX, c.pad_end + extra))  # LAG_MAX more zeros first
        t = (xp.shape[-1] - LAG_MAX - c.nperseg) // c.hop + 1
        starts = torch.arange(t, device=x.device) * c.hop + LAG_MAX  # frame t in xp
        # the lag: normalised correlation of the newest SEG samples with those L earlier
        span = SEG + LAG_MAX
        idx = (starts + c.nperseg - span)[:, None] + torch.arange(span, device=x.device)
        w = xp[:, idx]  # [B, T, span]
        cur = w[..., LAG_MAX:]
        nfft = 512  # >= span: no circular wrap for the lags searched
        cc = torch.fft.irfft(
            torch.fft.rfft(w, nfft) * torch.fft.rfft(cur, nfft).conj(), nfft
        )  # cc[k] = sum_n w[n + k] cur[n]: lag L = LAG_MAX - k
        k = torch.arange(0, LAG_MAX - LAG_MIN + 1, device=x.device)
        cs = F.pad(torch.cumsum(w * w, -1), (1, 0))
        e_lag = cs[..., k + SEG] - cs[..., k]
        e_cur = cs[..., -1:] - cs[..., LAG_MAX : LAG_MAX + 1]
        r = cc[..., k] / torch.sqrt(e_lag * e_cur + 1e-12)
        lag = LAG_MAX - r.argmax(-1)  # [B, T]
        # the frame and the frame one period earlier, same window
        frame_idx = starts[:, None] + torch.arange(c.nperseg, device=x.device)  # [T, N]
        spec_x = torch.fft.rfft(xp[:, frame_idx] * self.window, dim=-1)
        b_idx = torch.arange(x.shape[0], device=x.device)[:, None, None]
        delayed = xp[b_idx, frame_idx[None] - lag[..., None]]  # [B, T, N]
        spec_p = torch.fft.rfft(delayed * self.window, dim=-1)
        num = (spec_x * spec_p.conj()).real
        ex, ep = spec_x.abs() ** 2, spec_p.abs() ** 2
        sums = torch.zeros(*num.shape[:2], 3, self.n_bands, device=x.device)
        stacked = torch.stack([num, ex, ep], dim=2)  # [B, T, 3, F]
        sums.index_add_(3, self.band, stacked)
        corr = sums[:, :, 0] / torch.sqrt(sums[:, :, 1] * sums[:, :, 2] + EPS)
        return corr.index_select(2, self.grid_band)  # [B, T, F_c]
