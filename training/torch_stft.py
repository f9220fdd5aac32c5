"""Torch STFT/iSTFT identical to ``rtdenoise.stft.stft/istft`` for any ``StftConfig``.

The symmetric framing equals ``scipy.signal.stft/istft`` (boundary='zeros', padded=True,
scaling='spectrum'); the asymmetric low-latency framing pads ``pad`` zeros before and
``pad_end`` after, analyses with its long asymmetric window and overlap-adds only the last
``seg_len`` samples of each frame with its short synthesis window, normalised by the
overlap-added product of the two windows. Same numbers as the numpy pair, so the features the
model trains on are exactly the ones the streaming engine gives at inference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rtdenoise.stft import StftConfig


class TorchStft(torch.nn.Module):
    """``stft(x [B, n]) -> spec [B, T, F, 2]`` and ``istft(spec, n) -> x [B, n]``."""

    def __init__(self, cfg: StftConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or StftConfig()
        c = self.cfg
        win = torch.from_numpy(c.window_array.copy())
        syn = torch.from_numpy(c.synthesis_array.copy())
        self.scale = float(win.sum())
        self.register_buffer("window", win.float(), persistent=False)
        # synthesis window (times the analysis sum: 'spectrum' scaling) on the synthesised part
        self.register_buffer("wsyn", (syn * self.scale)[c.seg_start :].float(), persistent=False)
        self.register_buffer("wprod", (win * syn)[c.seg_start :].float(), persistent=False)

    def _extra(self, n: int) -> int:
        c = self.cfg
        padded = n + c.pad + c.pad_end
        return (-(padded - c.nperseg)) % c.hop

    def n_frames(self, n: int) -> int:
        c = self.cfg
        padded = n + c.pad + c.pad_end + self._extra(n)
        return (padded - c.nperseg) // c.hop + 1

    def stft(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, n] float -> [B, T, F, 2] (real, imag), scaled by the analysis window's sum."""
        c = self.cfg
        x = F.pad(x, (c.pad, c.pad_end + self._extra(x.shape[-1])))
        z = torch.stft(
            x, c.nperseg, c.hop, window=self.window, center=False, return_complex=True
        )  # [B, F, T]
        z = z / self.scale
        return torch.view_as_real(z.transpose(1, 2).contiguous())

    def _overlap_add(self, seg: torch.Tensor) -> torch.Tensor:
        """seg [B, T, L] -> [B, (T-1)*hop + L]."""
        b, t, n = seg.shape
        out = F.fold(
            seg.transpose(1, 2),
            output_size=(1, (t - 1) * self.cfg.hop + n),
            kernel_size=(1, n),
            stride=(1, self.cfg.hop),
        )
        return out.reshape(b, -1)

    def istft(self, spec: torch.Tensor, length: int) -> torch.Tensor:
        """spec: [B, T, F, 2] -> x [B, length] (inverse of :meth:`stft`, as the numpy istft)."""
        c = self.cfg
        z = torch.view_as_complex(spec.float().contiguous())  # [B, T, F]
        frames = torch.fft.irfft(z, n=c.nperseg, dim=-1)[..., c.seg_start :] * self.wsyn
        y = self._overlap_add(frames)
        t = z.shape[1]
        norm = self._overlap_add(self.wprod.expand(1, t, -1))
        y = y / torch.where(norm > 1e-10, norm, torch.ones_like(norm))
        start = c.pad - c.seg_start  # segment coordinates -> input sample 0
        y = y[..., start : start + length]
        if y.shape[-1] < length:
            y = F.pad(y, (0, length - y.shape[-1]))
        return y
