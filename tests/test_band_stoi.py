"""benchmarks.band_stoi: its per-band correlations average to pystoi's STOI."""

import numpy as np
from pystoi import stoi

from benchmarks.band_stoi import band_scores


def test_band_correlations_average_to_stoi():
    rng = np.random.default_rng(0)
    t = np.arange(3 * 8000) / 8000
    # speech-like: noise carriers under slow, band-dependent envelopes
    clean = sum(
        np.sin(2 * np.pi * f * t) * (1 + np.sin(2 * np.pi * (3 + i) * t)) ** 2
        for i, f in enumerate((220, 450, 900, 1700, 3100))
    ) + 0.05 * rng.standard_normal(t.size)
    noisy = clean + 0.8 * rng.standard_normal(t.size)
    corr, level = band_scores(clean, noisy, 8000)
    assert corr.shape == (15,) and level.shape == (15,)
    np.testing.assert_allclose(corr.mean(), stoi(clean, noisy, 8000), atol=1e-9)
    assert (level > 0).all()  # white noise added: more energy than the clean in every band
    empty, _ = band_scores(clean[:1000], noisy[:1000], 8000)  # < 30 speech frames
    assert empty.size == 0
