"""The harmonic comb channel: finds the comb of a voiced frame, stays silent on noise, and live
mode's compiled network frame computes it as the module does. (Streaming == offline, export
parity and growth from a checkpoint without it: test_model, test_export, test_network_frame,
test_training.)"""

import math

import pytest
import torch

from rtdenoise.harmonic import HarmonicComb, bin_centres_hz

BIN_HZ = 8000 / 519
SPLIT = 130


def _comb() -> HarmonicComb:
    return HarmonicComb(260, BIN_HZ, SPLIT, 5)


def _voiced(f0: float, noise: float = 0.0, seed: int = 0) -> torch.Tensor:
    """A normalised log-power frame [1, 1, 156] of a harmonic series at f0 (peaks 2 bins wide)."""
    hz = bin_centres_hz(260, BIN_HZ, SPLIT, 5)
    p = torch.zeros_like(hz)
    for h in range(1, int(4000 / f0)):
        p += torch.exp(-0.5 * ((hz - h * f0) / (2 * BIN_HZ)) ** 2)
    g = torch.Generator().manual_seed(seed)
    x = torch.log(p + 0.05) + noise * torch.randn(hz.shape, generator=g, dtype=hz.dtype)
    return ((x - x.mean()) / x.std()).float()[None, None]


@pytest.mark.parametrize("f0", [140.0, 180.0, 260.0])
def test_comb_marks_the_harmonics_of_a_voiced_frame(f0):
    ch = _comb()(_voiced(f0))[0, 0, 0]  # [156]
    hz = bin_centres_hz(260, BIN_HZ, SPLIT, 5)
    on = [int(torch.argmin((hz - h * f0).abs())) for h in range(1, int(1800 / f0))]
    off = [int(torch.argmin((hz - (h + 0.5) * f0).abs())) for h in range(1, int(1800 / f0) - 1)]
    assert ch[on].min() > 0.2 and ch[off].max() < -0.2
    assert ch[SPLIT:].abs().max() == 0.0  # bands above the split cannot resolve harmonics


def test_comb_is_silent_on_noise():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, 200, 156, generator=g)
    assert _comb()(x).abs().mean() < 0.05


def test_bin_centres():
    hz = bin_centres_hz(260, BIN_HZ, SPLIT, 5)
    assert hz.shape == (156,)
    assert math.isclose(float(hz[129]), 129 * BIN_HZ)
    assert math.isclose(float(hz[130]), 132 * BIN_HZ)  # bins 130..134, centre 132
    assert torch.equal(bin_centres_hz(33, 10.0, 0, 1), torch.arange(33, dtype=torch.float64) * 10)


@pytest.mark.parametrize("f0", [None, 150.0, 230.0])
def test_the_compiled_comb_equals_the_module(f0):
    """``network_frame._comb_channel`` (live mode's network frame) == ``HarmonicComb``."""
    import numpy as np

    from rtdenoise.network_frame import _comb_channel

    comb = _comb()
    g = torch.Generator().manual_seed(2)
    x = _voiced(f0, noise=0.3) if f0 else torch.randn(1, 1, 156, generator=g)
    want = comb(x)[0, 0, 0].numpy()
    if f0:
        assert np.abs(want).max() > 0.3
    out = np.zeros(156, np.float32)
    sc = np.zeros((2, comb.comb.shape[0]), np.float32)
    _comb_channel(x[0, 0].numpy().copy(), comb.comb.numpy(), comb.scored.numpy(),
                  comb.window.numpy(), comb.mask.numpy(), np.float32(comb.beta),
                  np.float32(comb.noise_score), sc, out)  # fmt: skip
    np.testing.assert_allclose(out, want, atol=2e-5, rtol=0)
