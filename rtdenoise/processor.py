"""Frame processors: what the streamer does to each block of STFT frames.

A processor sees complex STFT frames ``[C, K, F]`` (C channels, K frames, F bins) and writes the
processed frames into a preallocated output of the same shape. The identity processor is the
passthrough; the mask processor runs a model backend and applies its mask to the noisy spectrum.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np


class FrameProcessor(Protocol):
    #: frames per call (K); the streamer buffers frames until it has this many
    block_frames: int
    #: future frames the processor needs beyond the block (0 = causal). A processor with
    #: lookahead L is a delay line: given input frames [j, j+K) it writes the processed frames
    #: [j-L, j-L+K) (frame j-L is final once frame j is seen). The streamer discards the first L
    #: frames written after reset() and adds L*hop samples to its latency.
    lookahead_frames: int

    def reset(self, channels: int) -> None:
        """Forget all state; the next call starts a new stream of ``channels`` channels."""

    def process(self, frames: np.ndarray, out: np.ndarray) -> None:
        """frames: complex64 ``[C, K, F]`` -> out (same shape, preallocated, written in place)."""


class IdentityProcessor:
    """Passthrough: output frames equal input frames."""

    def __init__(self, block_frames: int = 1) -> None:
        self.block_frames = block_frames
        self.lookahead_frames = 0

    def reset(self, channels: int) -> None:
        pass

    def process(self, frames: np.ndarray, out: np.ndarray) -> None:
        out[...] = frames
