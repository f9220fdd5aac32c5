"""One-frame transforms: the split analysis DFT equals the FFT for every length it takes."""

import numpy as np
import pytest
import scipy.fft

from rtdenoise.frame_dft import split_rdft_plan, split_rdft_scratch, window_rdft
from rtdenoise.stft import StftAnalyzer, StftConfig


@pytest.mark.parametrize(("n", "p"), [(519, 3), (74, 2), (123, 3), (215, 5), (371, 7), (8 * 41, 8)])
def test_split_dft_equals_the_fft(n, p):
    """Windowed real DFT of one frame per channel, from any offset, into a strided output:
    equal to the float64 FFT to float32 precision, all n // 2 + 1 bins."""
    plan = split_rdft_plan(n)
    assert plan is not None and plan[1].shape == (p, n // 2 + 1)
    rng = np.random.default_rng(n)
    buf = rng.standard_normal((2, n + 40)).astype(np.float32)
    win = rng.uniform(0.0, 1.0, n).astype(np.float32)
    out = np.zeros((2, 3, n // 2 + 1), np.complex64)  # out[:, 1] is a strided view
    wq, y = split_rdft_scratch(plan)
    window_rdft(buf, 17, win, *plan, wq, y, out[:, 1])
    want = scipy.fft.rfft(buf[:, 17 : 17 + n].astype(np.float64) * win, axis=-1)
    np.testing.assert_allclose(out[:, 1], want, rtol=0, atol=2e-6 * np.abs(want).max())
    assert not out[:, 0].any() and not out[:, 2].any()


@pytest.mark.parametrize("n", [512, 520, 521, 2 * 31, 11 * 53])
def test_split_dft_only_where_it_pays(n):
    """Lengths pocketfft handles fast (small prime factors), primes, and a cofactor above
    MAX_SPLIT keep the FFT."""
    assert split_rdft_plan(n) is None


def test_streaming_one_frame_pops_take_the_split_dft():
    """The design's 519-point frames (both families) take it in streaming's one-frame pops."""
    for cfg in (StftConfig(), StftConfig(synthesis_len=124)):
        assert StftAnalyzer(cfg)._split is not None
