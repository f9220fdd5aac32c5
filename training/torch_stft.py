"""Torch STFT/iSTFT identical to ``scipy.signal.stft/istft`` with the design's framing.

scipy (boundary='zeros', padded=True, scaling='spectrum') zero-pads ``nperseg // 2`` samples at
both ends, pads the end further so the frames tile the signal, and divides by the window sum.
``torch.stft(center=True, pad_mode='constant')`` does the first; we add the second and third, so
that the features the model trains on are exactly the ones ``rtdenoise.stft`` gives at inference.
"""

from __future__ import annotations

import torch

from rtdenoise.stft import StftConfig


class TorchStft(torch.nn.Module):
    """``stft(x [B, n]) -> spec [B, T, F, 2]`` and ``istft(spec, n) -> x [B, n]``."""

    def __init__(self, cfg: StftConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or StftConfig()
        win = torch.hann_window(self.cfg.nperseg, periodic=True, dtype=torch.float64)
        self.register_buffer("window", win.float(), persistent=False)
        self.scale = float(win.sum())

    def n_frames(self, n: int) -> int:
        c = self.cfg
        padded = n + 2 * (c.nperseg // 2)
        extra = (-(padded - c.nperseg)) % c.hop
        return (padded + extra - c.nperseg) // c.hop + 1

    def stft(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, n] float -> [B, T, F, 2] (real, imag), scipy's scaling='spectrum'."""
        c = self.cfg
        padded = x.shape[-1] + 2 * (c.nperseg // 2)
        extra = (-(padded - c.nperseg)) % c.hop
        if extra:
            x = torch.nn.functional.pad(x, (0, extra))
        z = torch.stft(
            x,
            c.nperseg,
            c.hop,
            window=self.window,
            center=True,
            pad_mode="constant",
            return_complex=True,
        )  # [B, F, T]
        z = z / self.scale
        return torch.view_as_real(z.transpose(1, 2).contiguous())

    def istft(self, spec: torch.Tensor, length: int) -> torch.Tensor:
        """spec: [B, T, F, 2] -> x [B, length] (inverse of :meth:`stft`, as scipy's istft)."""
        c = self.cfg
        z = torch.view_as_complex(spec.float().contiguous()).transpose(1, 2) * self.scale
        n_out = (z.shape[-1] - 1) * c.hop  # full length without the centre padding
        x = torch.istft(z, c.nperseg, c.hop, window=self.window, center=True, length=n_out)
        if x.shape[-1] < length:
            x = torch.nn.functional.pad(x, (0, length - x.shape[-1]))
        return x[..., :length]
