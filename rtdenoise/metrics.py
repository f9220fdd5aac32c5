"""Speech-quality metrics: alignment, SI-SDR, the seed's NSR, PESQ-nb (8 kHz), PESQ-wb (16 kHz)
and STOI.

numpy/scipy/pesq/pystoi only (no torch): ``rtdenoise eval`` runs on the ONNX path.
Every score aligns the degraded signal to the reference first (a delayed output scores as
garbage otherwise) and reports the lag it removed.
"""

from __future__ import annotations

import logging
import math
import warnings

import numpy as np
from scipy.signal import fftconvolve

log = logging.getLogger(__name__)

SAMPLE_RATE = 8000
_EPS = 1e-12


def _as_1d(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"expected a mono signal [n], got shape {x.shape}")
    return x


def estimate_lag(ref: np.ndarray, deg: np.ndarray, max_lag: int = 800) -> int:
    """Lag (samples) by which ``deg`` trails ``ref``: ``deg[n] ~ ref[n - lag]``.

    ref, deg: [n] float. Searches ``-max_lag..max_lag`` by cross-correlation (FFT).
    """
    ref, deg = _as_1d(ref), _as_1d(deg)
    n = min(len(ref), len(deg))
    if n == 0 or max_lag <= 0:
        return 0
    # xc[k] = sum_n deg[n] * ref[n - lag], with lag = k - (len(ref) - 1)
    xc = fftconvolve(deg, ref[::-1], mode="full")
    zero = len(ref) - 1
    lo, hi = max(0, zero - max_lag), min(len(xc), zero + max_lag + 1)
    return int(np.argmax(xc[lo:hi]) + lo - zero)


def align(
    ref: np.ndarray, deg: np.ndarray, max_lag: int = 800
) -> tuple[np.ndarray, np.ndarray, int]:
    """Remove the lag of ``deg`` relative to ``ref`` and trim both to a common length.

    ref, deg: [n] float -> (ref_aligned [m], deg_aligned [m], lag). A positive lag means
    ``deg`` is late (its first ``lag`` samples are dropped).
    """
    ref, deg = _as_1d(ref), _as_1d(deg)
    lag = estimate_lag(ref, deg, max_lag)
    if lag > 0:
        deg = deg[lag:]
    elif lag < 0:
        ref = ref[-lag:]
    m = min(len(ref), len(deg))
    return ref[:m], deg[:m], lag


def si_sdr(ref: np.ndarray, deg: np.ndarray) -> float:
    """Scale-invariant signal-to-distortion ratio in dB (inputs already aligned, [n])."""
    ref, deg = _as_1d(ref), _as_1d(deg)
    ref = ref - ref.mean()
    deg = deg - deg.mean()
    alpha = np.dot(deg, ref) / (np.dot(ref, ref) + _EPS)
    target = alpha * ref
    noise = deg - target
    return float(10 * np.log10((np.dot(target, target) + _EPS) / (np.dot(noise, noise) + _EPS)))


def nsr_db(ref: np.ndarray, deg: np.ndarray) -> float:
    """The seed's noise-to-signal ratio in dB: power(deg - ref) / power(ref) ([n], aligned)."""
    ref, deg = _as_1d(ref), _as_1d(deg)
    err = np.mean((deg - ref) ** 2)
    return float(10 * np.log10((err + _EPS) / (np.mean(ref**2) + _EPS)))


def _pesq(ref: np.ndarray, deg: np.ndarray, sample_rate: int, mode: str) -> float:
    from pesq import PesqError, pesq

    ref, deg = _as_1d(ref), _as_1d(deg)
    try:
        return float(pesq(sample_rate, ref, deg, mode))
    except PesqError as exc:  # NoUtterancesError, BufferTooShortError, ...
        log.debug("PESQ failed: %s", exc)
        return math.nan


def pesq_nb(ref: np.ndarray, deg: np.ndarray, sample_rate: int = SAMPLE_RATE) -> float:
    """Narrowband PESQ (P.862) at 8 kHz; nan when PESQ finds no utterance or fails."""
    return _pesq(ref, deg, sample_rate, "nb")


def pesq_wb(ref: np.ndarray, deg: np.ndarray, sample_rate: int = 16000) -> float:
    """Wideband PESQ (P.862.2) at 16 kHz; nan when PESQ finds no utterance or fails."""
    return _pesq(ref, deg, sample_rate, "wb")


def stoi(ref: np.ndarray, deg: np.ndarray, sample_rate: int = SAMPLE_RATE) -> float:
    """Short-time objective intelligibility (pystoi); nan if the signal is too short.

    pystoi returns 1e-5 (with a warning) when fewer than 30 non-silent frames (~0.4 s of speech)
    remain; that is "undefined", not "unintelligible", so it is reported as nan here and left
    out of aggregates (FSDD digits are often that short).
    """
    from pystoi import stoi as _stoi

    ref, deg = _as_1d(ref), _as_1d(deg)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            val = float(_stoi(ref, deg, sample_rate, extended=False))
        except Exception as exc:  # pystoi raises on signals shorter than its window
            log.debug("STOI failed: %s", exc)
            return math.nan
    if any("Not enough STFT frames" in str(w.message) for w in caught):
        return math.nan
    return val


def score(
    ref: np.ndarray,
    deg: np.ndarray,
    sample_rate: int = SAMPLE_RATE,
    max_lag: int = 800,
    metrics: tuple[str, ...] = ("pesq", "stoi", "si_sdr", "nsr"),
) -> dict[str, float]:
    """Align, then score: dict with ``lag`` (samples) and the requested metrics.

    ref, deg: [n] float at ``sample_rate`` (8 kHz for PESQ-nb ``"pesq"``, 16 kHz for PESQ-wb
    ``"pesq_wb"``).
    """
    r, d, lag = align(ref, deg, max_lag)
    out: dict[str, float] = {"lag": float(lag)}
    if "pesq" in metrics:
        out["pesq"] = pesq_nb(r, d, sample_rate)
    if "pesq_wb" in metrics:
        out["pesq_wb"] = pesq_wb(r, d, sample_rate)
    if "stoi" in metrics:
        out["stoi"] = stoi(r, d, sample_rate)
    if "si_sdr" in metrics:
        out["si_sdr"] = si_sdr(r, d)
    if "nsr" in metrics:
        out["nsr"] = nsr_db(r, d)
    return out
