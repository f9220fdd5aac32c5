"""Metrics: known values for SI-SDR/NSR, alignment recovers a known lag, PESQ/STOI sanity."""

import math

import numpy as np
import pytest

from rtdenoise import metrics


def _speechlike(n: int, seed: int = 0) -> np.ndarray:
    """Amplitude-modulated harmonic tone + noise bursts: enough structure for PESQ/STOI."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 8000
    f0 = 140 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / 8000
    x = sum(np.sin(k * phase) / k for k in range(1, 12))
    env = 0.2 + (np.sin(2 * np.pi * 0.5 * t) > 0)  # talk spurts PESQ's VAD detects
    return (0.3 * env * x + 0.01 * rng.standard_normal(n)).astype(np.float64)


def test_si_sdr_scale_invariant_and_nsr_zero_for_copy():
    x = _speechlike(8000)
    assert metrics.si_sdr(x, 0.5 * x) > 100
    assert metrics.nsr_db(x, x) < -100


@pytest.mark.parametrize("snr", [-5.0, 0.0, 10.0])
def test_si_sdr_and_nsr_of_added_noise_match_snr(snr):
    rng = np.random.default_rng(1)
    x = _speechlike(16000)
    n = rng.standard_normal(len(x))
    n -= n.mean()
    n -= np.dot(n, x - x.mean()) / np.dot(x - x.mean(), x - x.mean()) * (x - x.mean())  # orthogonal
    n *= np.sqrt(np.mean(x**2) / np.mean(n**2) / 10 ** (snr / 10))
    assert metrics.nsr_db(x, x + n) == pytest.approx(-snr, abs=1e-6)
    assert metrics.si_sdr(x, x + n) == pytest.approx(snr, abs=0.05)


@pytest.mark.parametrize("lag", [-37, 0, 5, 123])
def test_align_recovers_known_lag(lag):
    x = _speechlike(8000, seed=2)
    deg = np.roll(x, lag)  # deg[n] = x[n - lag]
    r, d, found = metrics.align(x, deg, max_lag=200)
    assert found == lag
    assert len(r) == len(d) == len(x) - abs(lag)
    np.testing.assert_allclose(r[200:-200], d[200:-200])


def test_score_reports_lag_and_orders_quality():
    rng = np.random.default_rng(3)
    x = _speechlike(24000, seed=3)
    noisy = x + 0.3 * np.std(x) * rng.standard_normal(len(x))
    clean_delayed = np.concatenate([np.zeros(40), x])[: len(x)]
    s_noisy = metrics.score(x, noisy)
    s_clean = metrics.score(x, clean_delayed)
    assert s_clean["lag"] == 40
    assert s_clean["pesq"] > s_noisy["pesq"]
    assert s_clean["stoi"] > s_noisy["stoi"]
    assert s_clean["si_sdr"] > 50


def test_pesq_silence_is_nan_not_exception():
    z = np.zeros(8000)
    assert math.isnan(metrics.pesq_nb(z, z))


def test_stoi_too_short_is_nan_not_1e5():
    x = _speechlike(2000)
    assert math.isnan(metrics.stoi(x, x))


def test_wideband_pesq_at_16k_orders_quality_and_is_nan_on_silence():
    import soxr

    rng = np.random.default_rng(4)
    x = soxr.resample(_speechlike(24000, seed=4), 8000, 16000)
    noisy = x + 0.3 * np.std(x) * rng.standard_normal(len(x))
    s_noisy = metrics.score(x, noisy, 16000, metrics=("pesq_wb",))
    s_clean = metrics.score(x, x, 16000, metrics=("pesq_wb",))
    assert set(s_clean) == {"lag", "pesq_wb"}
    assert s_clean["pesq_wb"] > 4.0 > s_noisy["pesq_wb"] >= 1.0
    assert math.isnan(metrics.pesq_wb(np.zeros(16000), np.zeros(16000)))
