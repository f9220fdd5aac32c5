"""A harmonic-comb input channel for the ``rt`` network (``ModelConfig.harmonic_channel``).

At low input SNR the mid band (0.75-2.4 kHz) is where the network's STOI falls behind RNNoise's
(per one-third-octave band on ``val2`` at -5 / 0 dB; RNNoise's pitch filter and per-band pitch
correlations are its cue there). The network sees the log power spectrum, where the harmonics of
a voiced frame are resolved below the band split (15.4 Hz bins), but its convolutions see three
bins at a time and halve the frequency axis per stage, so the comb's alignment is not what its
head sees at full resolution.

``HarmonicComb`` gives it that alignment as one more input channel, per network frame, from that
frame's own (band-compressed, normalised) log power ``x [B, N, F_c]``:

* score: the normalised correlation of the frame's mean-removed log power over 100-1800 Hz with
  a cosine comb ``cos(2 pi f / f0)`` for 48 candidate f0 from 80 to 400 Hz (geometric);
* a soft choice of f0: ``p = softmax(beta x score)`` over the candidates;
* the channel: the chosen comb ``p @ comb``, +1 on the harmonics and -1 between them, scaled
  by how far the expected score rises above that of a noise frame (0 for noise); 0 above the
  band split, where bands of 77 Hz cannot resolve harmonics.

Causal, per frame, no state; a few matrix products (exportable to TorchScript and ONNX).
"""

from __future__ import annotations

import math

import torch
from torch import nn

F0_MIN, F0_MAX, N_CANDIDATES = 80.0, 400.0, 48
BAND_LO, BAND_HI = 100.0, 1800.0  # Hz: the bins that score a candidate
BETA = 30.0
NOISE_SCORE = 0.25  # the expected best score of a frame of white noise (measured)


class HarmonicComb(nn.Module):
    """Log-power frame ``[B, N, F_c]`` -> comb channel ``[B, 1, N, F_c]`` (see module doc), on
    the network's grid: ``n_freqs`` bins of ``bin_hz``, bands of ``width`` from ``split`` up."""

    def __init__(self, n_freqs: int, bin_hz: float, split: int, width: int) -> None:
        super().__init__()
        split_hz = split * bin_hz if width > 1 else math.inf
        bin_hz = bin_centres_hz(n_freqs, bin_hz, split, width)
        f0 = F0_MIN * (F0_MAX / F0_MIN) ** (torch.arange(N_CANDIDATES) / (N_CANDIDATES - 1))
        comb = torch.cos(2 * math.pi * bin_hz[None, :] / f0[:, None].double()).float()
        comb[:, bin_hz >= split_hz] = 0.0
        window = ((bin_hz >= BAND_LO) & (bin_hz <= BAND_HI)).float()
        scored = comb * window
        scored = scored - (scored.sum(1, keepdim=True) / window.sum()) * window
        scored = scored / scored.norm(dim=1, keepdim=True).clamp_min(1e-6)
        # not saved: rebuilt from the config
        self.register_buffer("comb", comb, persistent=False)  # [C, F_c]
        self.register_buffer("scored", scored.t().contiguous(), persistent=False)  # [F_c, C]
        self.register_buffer("window", window / window.sum(), persistent=False)  # [F_c]
        self.register_buffer("mask", (window > 0).float(), persistent=False)
        self.beta = BETA
        self.noise_score = NOISE_SCORE

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        centred = (x - (x * self.window).sum(-1, keepdim=True)) * self.mask
        norm = torch.sqrt((centred * centred).sum(-1, keepdim=True)) + 1e-6
        score = (centred @ self.scored) / norm  # [B, N, C] in [-1, 1]
        p = torch.softmax(self.beta * score, dim=-1)
        # a noise frame's best candidate scores ~0.2-0.3 by chance: strength 0 there
        strength = ((p * score).sum(-1, keepdim=True) - self.noise_score).clamp_min(0.0) * 2.0
        return ((p @ self.comb) * strength).unsqueeze(1)


def bin_centres_hz(n_freqs: int, bin_hz: float, split: int, width: int) -> torch.Tensor:
    """Centre frequency of each bin of the network's grid (bins below ``split``, then bands of
    ``width`` bins), float64 ``[F_c]``."""
    k = torch.arange(n_freqs, dtype=torch.float64)
    if width == 1:
        return k * bin_hz
    lo = k[:split]
    hi = split + torch.arange((n_freqs - split) // width, dtype=torch.float64) * width
    return torch.cat([lo, hi + (width - 1) / 2]) * bin_hz
