"""One-frame calls between network frames, without the network (``frame_stride`` R > 1).

With R > 1 the network runs on one STFT frame in R (``coarse_grid``). A one-frame step (live
mode's call) then has nothing for the network to do on R - 1 calls out of R: the exported graph
still runs every conv on those calls and discards the result (``coarse_grid``'s ``drop``
placeholder), so at one frame per call the saving of the coarse frame rate would be lost.

``HeldFrames`` computes exactly what the graph returns on those calls, in numpy, from the
state alone:

* mask: ``sigmoid(offset + slope x feature)`` per bin, the affine head's held output (state
  ``held``, expanded from bands to bins) applied to the frame's own normalised log power;
* state: the last R - 1 input frames (``frames``, band-compressed features) shift by one, the
  phase advances by one; every other state is what the graph would return, unchanged.

It runs on call n exactly when the phase (state ``phase``) is not 0. The features' statistics,
frame stride and bands come from the exported metadata (``export.metadata``). Nothing is
allocated per call: one compiled pass (numba) updates the state in place.
"""

from __future__ import annotations

import numpy as np
from numba import njit


class HeldFrames:
    """The graph's result on a one-frame call that holds the last network frame's output."""

    def __init__(self, meta: dict, state_names: list[str], n_freqs: int) -> None:
        cfg = meta["model_config"]
        self.stride = int(cfg["frame_stride"])
        self.eps = np.float32(cfg.get("feat_eps", 1e-10))
        feats = meta["features"]
        self.mean = np.asarray(feats["mean"], np.float32)
        self.inv_std = (1.0 / np.asarray(feats["std"], np.float64)).astype(np.float32)
        split, width = int(cfg.get("band_split", 0)), int(cfg.get("band_width", 1))
        self.split, self.width = (split, width) if width > 1 else (n_freqs, 1)
        self.n_freqs = n_freqs
        self.n_bands = self.split + (n_freqs - self.split) // self.width
        index = np.arange(n_freqs)
        index[self.split :] = self.split + (index[self.split :] - self.split) // self.width
        #: band of each bin
        self.index = index
        self.i_frames = state_names.index("frames")
        self.i_held = state_names.index("held")
        self.i_phase = state_names.index("phase")
        self.calls = 0  # held calls so far (tests, benchmarks)
        self._alloc(1)

    @staticmethod
    def applies(meta: dict, state_names: list[str]) -> bool:
        """True for a model with R > 1, an affine head, and the features in its metadata."""
        cfg = meta.get("model_config") or {}
        return (
            int(cfg.get("frame_stride", 1)) > 1
            and cfg.get("mask_head") == "affine"
            and "features" in meta
            and {"frames", "held", "phase"} <= set(state_names)
        )

    def _alloc(self, channels: int) -> None:
        self._band = np.zeros((channels, self.n_bands), np.float32)

    def due(self, state: list[np.ndarray]) -> bool:
        """Whether the next one-frame call holds (phase != 0; the same for every stream)."""
        return bool(state[self.i_phase][0, 0] != 0.0)

    def step(
        self, spec_ri: np.ndarray, state: list[np.ndarray], mask: np.ndarray, frame: int = 0
    ) -> None:
        """Frame ``frame`` of spec_ri ``[C, K, F, 2]`` -> that frame of mask ``[C, K, F]``
        (written), state updated in place."""
        if self._band.shape[0] != spec_ri.shape[0]:
            self._alloc(spec_ri.shape[0])
        _held_step(
            spec_ri,
            self.mean,
            self.inv_std,
            self.eps,
            self.index,
            self.split,
            self.width,
            state[self.i_held],
            state[self.i_frames],
            state[self.i_phase],
            float(self.stride),
            self._band,
            mask,
            frame,
        )
        self.calls += 1


@njit(cache=True, nogil=True)
def _held_step(spec, mean, inv_std, eps, index, split, width, held, frames, phase, stride, band,
               mask, k):  # fmt: skip
    """One fused pass per stream: normalised log power, the affine head's mask from the held
    output, the band-compressed frame appended to ``frames``, the phase advanced; on frame ``k``
    of the block."""
    n_c, n_f = spec.shape[0], spec.shape[2]
    for c in range(n_c):
        band[c, :] = 0.0
        for f in range(n_f):
            re = spec[c, k, f, 0]
            im = spec[c, k, f, 1]
            v = (np.log(re * re + im * im + eps) - mean[f]) * inv_std[f]
            b = index[f]
            z = held[c, 0, 0, b] + held[c, 1, 0, b] * v
            z = min(max(z, -80.0), 80.0)
            mask[c, k, f] = 1.0 / (1.0 + np.exp(-z))
            band[c, b] += v
        for b in range(split, band.shape[1]):
            band[c, b] /= width
        for j in range(frames.shape[1] - 1):
            frames[c, j, :] = frames[c, j + 1, :]
        frames[c, frames.shape[1] - 1, :] = band[c, :]
        phase[c, 0] = (phase[c, 0] + 1.0) % stride


def built_here() -> bool:
    """Whether this process compiled the kernel (numba found no usable cache for it)."""
    return bool(getattr(getattr(_held_step, "stats", None), "cache_misses", None))
