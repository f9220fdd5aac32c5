"""The engine's pitch rows (``pitch_frame``, numba, one frame at a time) equal the torch
channel training computes for the whole utterance (``pitch_corr``)."""

import numpy as np
import torch

from rtdenoise.pitch_corr import PitchCorrelation
from rtdenoise.pitch_frame import HISTORY, PitchFrames
from tests.test_pitch_corr import LOW, _voiced


def _engine_rows(x: np.ndarray, cfg=LOW) -> np.ndarray:
    """Every frame's row, as the engine computes it: from a buffer laid out as the analyzer's
    (HISTORY zeros, the boundary pad, the signal, the end pad)."""
    c = cfg.stft
    pf = PitchFrames(c, cfg.n_freqs, cfg.band_split, cfg.band_width)
    buf = np.concatenate([np.zeros(HISTORY + c.pad), x, np.zeros(c.pad_end + c.nperseg)])
    buf = buf.astype(np.float32)
    n_frames = -(-(len(x) + c.pad + c.pad_end - c.nperseg) // c.hop) + 1
    out = np.zeros((n_frames, pf.n_grid), np.float32)
    win = c.window_array / c.window_array.sum()
    for t in range(n_frames):
        s = HISTORY + t * c.hop
        spec = np.fft.rfft(buf[s : s + c.nperseg] * win).astype(np.complex64)
        pf.row(buf, s, np.stack([spec.real, spec.imag], -1), out[t])
    return out


def test_engine_rows_equal_the_torch_channel():
    rng = np.random.default_rng(3)
    n = 12000
    x = 0.3 * _voiced(n, 160.0) * (np.arange(n) > 3000) + 0.05 * rng.standard_normal(n)
    pc = PitchCorrelation(LOW.stft, LOW.n_freqs, LOW.band_split, LOW.band_width)
    ref = pc(torch.from_numpy(x.astype(np.float32))[None])[0].numpy()
    got = _engine_rows(x)
    assert got.shape == ref.shape
    err = np.abs(got - ref).max(axis=1)
    # a near-tie between two lags may fall either way in float32 vs float64: rare
    assert np.mean(err < 1e-3) > 0.98, err
    assert np.median(err) < 1e-4
