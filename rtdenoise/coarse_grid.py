"""The network's coarse time-frequency grid: bands above a split bin, one network frame every R.

Two levers that shrink every conv of the ``rt`` U-Net (``ModelConfig.band_*``, ``frame_stride``):

**Bands** (frequency). Bins below ``split`` keep full resolution; from ``split`` up, groups of
``width`` bins become one band. ``compress`` averages the features over each band
(``[..., F] -> [..., F_c]``), ``expand`` repeats a band's value over its bins
(``[..., F_c] -> [..., F]``). Width 1 is the identity.

**Frame rate** (time). Network frame n sits at STFT frame ``nR`` and sees the R frames
``nR-R+1 .. nR`` stacked as input channels (frames before the stream are zero); its output holds
for frames ``nR .. nR+R-1``. Nothing waits for a future frame, so this adds no latency: the mask
of frame t depends on frames <= t only.

A streaming block of K frames starting at frame ``t0`` (phase ``p = t0 mod R``) holds
``N = ceil(K/R)`` candidate network frames at block positions ``q, q+R, ...`` with
``q = (R - p) mod R``. Either all N are real, or the last lies past the block: it is then computed
on the block's last frame and discarded (``drop``: the stateful blocks return the state from
before it). So the graph's shapes depend on K only, never on the phase, and the step stays one
static graph for TorchScript and ONNX. When R divides K nothing is wasted. The grid's own state:
the last R-1 input frames (``frames [B, R-1, F_c]``), the head output of the last network frame
(``held [B, C, 1, F_c]``) and the phase (``phase [B, 1]``, float, the same for every stream).
The offline forward runs the same code with a zero state and K = T.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Bands(nn.Module):
    """Full resolution below bin ``split``, bands of ``width`` bins above (width 1: identity)."""

    def __init__(self, n_freqs: int, split: int, width: int) -> None:
        super().__init__()
        assert width == 1 or (n_freqs - split) % width == 0, (n_freqs, split, width)
        self.split = split
        self.width = width
        self.n_bins = n_freqs if width == 1 else split + (n_freqs - split) // width
        index = torch.arange(n_freqs)
        index[split:] = split + (index[split:] - split) // width
        #: band of each bin [F]; not saved: rebuilt from the config
        self.register_buffer("index", index, persistent=False)

    def compress(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, T, F]`` -> ``[B, C, T, F_c]``: band means above the split."""
        if self.width == 1:
            return x
        # a pool, not a reshape: a reshape would fix the dynamic T of a traced ONNX graph
        hi = F.avg_pool2d(x[:, :, :, self.split :], (1, self.width))
        return torch.cat([x[:, :, :, : self.split], hi], dim=3)

    def expand(self, y: torch.Tensor) -> torch.Tensor:
        """``[B, C, T, F_c]`` -> ``[B, C, T, F]``: each band's value on all its bins."""
        if self.width == 1:
            return y
        return y.index_select(3, self.index)


class FrameRate(nn.Module):
    """Network frames every ``stride`` STFT frames: input stacking and output holding."""

    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def select(
        self, x: torch.Tensor, frames: torch.Tensor, phase: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Network input of a block.

        x ``[B, 1, K, F_c]``, frames ``[B, R-1, F_c]``, phase ``[B, 1]`` -> (network input
        ``[B, R, N, F_c]``, hold index ``[K]`` (0: the held output, j+1: network frame j),
        drop ``[]`` bool (the last network frame is a placeholder), new frames, new phase,
        the block position of each network frame ``[N]``).
        """
        r = self.stride
        seq = torch.cat([frames, x[:, 0]], dim=1)  # [B, R-1+K, F_c]; block frame i at i+R-1
        # [K] block positions, as a tensor op on x (torch.arange(K) would be a constant in a
        # traced ONNX graph: K is dynamic)
        i = torch.cumsum(torch.ones_like(x[0, 0, :, 0], dtype=torch.long), dim=0) - 1
        last = i[-1]
        p = phase[0, 0].long()
        q = torch.remainder(r - p, r)
        cand = q + i[::r]  # [N] block positions of the network frames
        drop = cand[-1] > last
        pos = torch.minimum(cand, last)
        # channel j: frame j of the R frames ending at each network frame, seq[pos + j]
        net_in = torch.stack([seq.index_select(1, pos + j) for j in range(r)], dim=1)
        hold = torch.div(i - q + r, r, rounding_mode="floor")
        new_phase = torch.remainder(phase + (last + 1).to(phase.dtype), float(r))
        return net_in, hold, drop, seq[:, -(r - 1) :], new_phase, pos

    def hold(
        self, h: torch.Tensor, held: torch.Tensor, index: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-frame outputs: h ``[B, C, N, F_c]`` (network frames), held ``[B, C, 1, F_c]``,
        index ``[K]`` -> (``[B, C, K, F_c]``, new held ``[B, C, 1, F_c]``)."""
        hh = torch.cat([held, h], dim=2)
        return hh.index_select(2, index), hh.index_select(2, index[-1:])
