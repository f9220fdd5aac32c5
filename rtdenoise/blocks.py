"""Building blocks of the mask networks, over ``[B, C, T, F]`` (time, frequency).

Causal conv with an explicit cache of past frames, causal Squeeze-and-Excitation over a window
of past frames, and the encoder/decoder stages of the ``rt`` U-Net built from them. Every
stateful block takes its state and returns the new one, so a whole utterance (zero state) and
any split of it into blocks compute the same thing.

``drop`` (optional, a 0-dim bool tensor): the last frame of this call is a placeholder whose
output is discarded (the low-frame-rate step runs a fixed number of network frames per block
size); when true, the returned state ends before that frame, as if it had never been seen.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: most frames per streaming step; longer inputs take the cumulative-sum path of the SE window
MAX_BLOCK = 16


def tail(seq: torch.Tensor, n: int, drop: torch.Tensor | None) -> torch.Tensor:
    """The last ``n`` frames (dim 2) of seq, or the ``n`` before its last one where ``drop``."""
    if drop is None:
        return seq[:, :, -n:]
    return torch.where(drop, seq[:, :, -n - 1 : -1], seq[:, :, -n:])


class ConvNormAct(nn.Module):
    """Conv2d (no time padding) + BatchNorm + ReLU + Dropout over ``[B, C, T, F]``."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: tuple[int, int],
        stride_f: int = 1,
        dilation_t: int = 1,
        pad_t: int = 0,
        dropout: float = 0.0,
        act: bool = True,
        groups: int = 1,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            cin,
            cout,
            kernel,
            stride=(1, stride_f),
            padding=(pad_t, kernel[1] // 2),
            dilation=(dilation_t, 1),
            groups=groups,
            bias=False,
        )
        self.norm = nn.BatchNorm2d(cout)
        self.act = nn.ReLU() if act else nn.Identity()
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.act(self.norm(self.conv(x))))


class CausalConv(nn.Module):
    """Causal-in-time conv block with an explicit cache of past input frames.

    forward(x ``[B, Cin, T, F]``, cache ``[B, Cin, ctx, F]``, drop) -> (y ``[B, Cout, T, F']``,
    new cache ``[B, Cin, ctx, F]``) with ``ctx = (time_kernel - 1) * dilation``. A zero cache is
    the offline left padding, so a whole utterance and any split into blocks give the same output.
    """

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: tuple[int, int],
        stride_f: int = 1,
        dilation_t: int = 1,
        dropout: float = 0.0,
        residual: bool = False,
        groups: int = 1,
    ) -> None:
        super().__init__()
        self.ctx = (kernel[0] - 1) * dilation_t
        assert self.ctx > 0, "a causal conv needs a time kernel > 1"
        self.cin = cin
        self.residual = residual
        self.block = ConvNormAct(cin, cout, kernel, stride_f, dilation_t, 0, dropout, groups=groups)

    def forward(
        self, x: torch.Tensor, cache: torch.Tensor, drop: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        xx = torch.cat([cache, x], dim=2)
        y = self.block(xx)
        if self.residual:
            y = y + x
        return y, tail(xx, self.ctx, drop)


class SqueezeExcite(nn.Module):
    """Squeeze-and-Excitation: channel gains from a squeezed context, ``[B, C, T, F]`` in/out.

    causal: per-frame channel means over frequency, averaged over the last ``context`` frames
    (zero history before the start; the window sums are recomputed from the cached history each
    call, so streaming equals offline exactly and nothing drifts). Blocks of up to ``MAX_BLOCK``
    frames (streaming) take the window means as one matmul with ``band`` (``window_band``,
    computed once per step and shared by every SE block); longer inputs (training, offline) take
    differences of a float64 cumulative sum, O(T) instead of O(T * context).
    Non-causal (seed): global mean over T and F.
    forward(x, hist ``[B, C, context-1]``, band, drop) -> (y, new hist).
    """

    def __init__(
        self, channels: int, reduction: int, min_hidden: int, context: int, causal: bool
    ) -> None:
        super().__init__()
        hidden = max(min_hidden, channels // reduction)
        self.context = context
        self.causal = causal
        self.max_block = MAX_BLOCK
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, channels, 1)

    def forward(
        self,
        x: torch.Tensor,
        hist: torch.Tensor,
        band: torch.Tensor,
        drop: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.causal:
            mm = torch.cat([hist, x.mean(dim=3)], dim=2)  # [B, C, context-1+T]
            n = self.context
            if x.shape[2] > self.max_block:
                c = F.pad(torch.cumsum(mm.double(), dim=2), (1, 0))
                s = ((c[:, :, n:] - c[:, :, :-n]) / n).to(x.dtype)
            else:
                s = torch.matmul(mm, band)  # [B, C, T]
            s = s.unsqueeze(3)
            new_hist = tail(mm, n - 1, drop)
        else:
            s = x.mean(dim=(2, 3), keepdim=True)
            new_hist = hist
        g = torch.sigmoid(self.fc2(torch.relu(self.fc1(s))))
        return x * g, new_hist


def window_band(context: int, frames: int) -> torch.Tensor:
    """``[context-1+frames, frames]``: column k averages rows k .. k+context-1 (1/context)."""
    i = torch.arange(context - 1 + frames).unsqueeze(1)
    k = torch.arange(frames).unsqueeze(0)
    return ((i >= k) & (i < k + context)).float() / context


class DownStage(nn.Module):
    """Encoder stage of rt: causal stride-2 (in frequency) conv + SE.

    forward(x, conv cache, SE history, SE band, drop) -> (y, new conv cache, new SE history).
    """

    def __init__(self, conv: CausalConv, se: SqueezeExcite) -> None:
        super().__init__()
        self.conv = conv
        self.se = se

    def forward(
        self,
        x: torch.Tensor,
        cache: torch.Tensor,
        hist: torch.Tensor,
        band: torch.Tensor,
        drop: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        y, c = self.conv(x, cache, drop)
        y, h = self.se(y, hist, band, drop)
        return y, c, h


def up_output_padding(f_in: int, f_out: int) -> int:
    """Output padding of a (1, 3) stride-2 padding-1 transposed conv mapping f_in -> f_out."""
    op = f_out - (2 * f_in - 1)
    assert op in (0, 1), (f_in, f_out)
    return op


class UpStage(nn.Module):
    """Decoder stage of rt: frame-local (1, 3) stride-2 transposed conv + BN + ReLU + SE."""

    def __init__(self, cin: int, cout: int, f_in: int, f_out: int, se: SqueezeExcite) -> None:
        super().__init__()
        self.conv = nn.ConvTranspose2d(
            cin,
            cout,
            (1, 3),
            stride=(1, 2),
            padding=(0, 1),
            output_padding=(0, up_output_padding(f_in, f_out)),
            bias=False,
        )
        self.norm = nn.BatchNorm2d(cout)
        self.se = se

    def forward(
        self,
        x: torch.Tensor,
        hist: torch.Tensor,
        band: torch.Tensor,
        drop: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.se(torch.relu(self.norm(self.conv(x))), hist, band, drop)
