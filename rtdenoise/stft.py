"""STFT analysis and synthesis with the design's framing (8 kHz, nperseg 519, noverlap 488).

TODO(engine issue): offline stft/istft matching scipy, streaming analysis + overlap-add.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StftConfig:
    """Framing of the design: one second at 8 kHz is a square 260 x 260 spectrogram."""

    sample_rate: int = 8000
    nperseg: int = 519
    noverlap: int = 488
    window: str = "hann"

    @property
    def hop(self) -> int:
        return self.nperseg - self.noverlap

    @property
    def n_freqs(self) -> int:
        return self.nperseg // 2 + 1
