"""Synthetic noises and channel effects that real users meet (numpy, 8 kHz).

Every generator takes an explicit ``np.random.Generator`` and returns float64 ``[n]`` at
unit RMS (noises) or the processed signal (effects), so that a mixture is a pure function of
its seed: that is what makes training resumable to the exact sample.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.signal import butter, fftconvolve, resample_poly, sosfilt

SR = 8000


def unit_rms(x: np.ndarray) -> np.ndarray:
    """Scale ``x`` [n] to RMS 1 (silence stays silence)."""
    r = np.sqrt(np.mean(x**2))
    return x / r if r > 1e-10 else x


def colored_noise(n: int, rng: np.random.Generator, alpha: float | None = None) -> np.ndarray:
    """Noise with power spectrum ~ 1/f**alpha: 0 white, 1 pink, 2 brown. [n], unit RMS."""
    if alpha is None:
        alpha = float(rng.choice([0.0, 1.0, 2.0]) + rng.uniform(-0.25, 0.25))
    return _tilted_white(n, rng, alpha)


def _tilted_white(n, rng, alpha, envelope=None):
    """White noise drawn from ``rng``, power spectrum tilted by 1/f**alpha and, if given, times
    ``envelope(f)`` (amplitude; drawn after the noise), DC removed. [n], unit RMS."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / SR)
    f[0] = f[1] if n > 1 else 1.0
    gain = (f / 100.0) ** (-alpha / 2)
    spec *= gain if envelope is None else gain * envelope(f)
    spec[0] = 0.0
    return unit_rms(np.fft.irfft(spec, n))


def shaped_noise(
    n: int, rng: np.random.Generator, points: int = 8, depth_db: float = 12.0
) -> np.ndarray:
    """Stationary noise with a random smooth spectral envelope (fans, rain, engines, air).

    A power-law tilt as in :func:`colored_noise`, times an envelope through ``points`` random
    levels (uniform in +-``depth_db``) spaced evenly in log frequency from 60 Hz to 4 kHz and
    interpolated between them: broadband noise whose shape real steady noises have and pure
    power laws lack. [n], unit RMS.
    """
    alpha = float(rng.uniform(-0.5, 2.0))
    knots = np.linspace(np.log(60.0), np.log(SR / 2), points)

    def envelope(f: np.ndarray) -> np.ndarray:
        levels = rng.uniform(-depth_db, depth_db, points)
        return 10 ** (np.interp(np.log(np.maximum(f, 60.0)), knots, levels) / 20)

    return _tilted_white(n, rng, alpha, envelope)


def mains_hum(n: int, rng: np.random.Generator) -> np.ndarray:
    """50 or 60 Hz hum with harmonics up to 4 kHz (random, decaying, buzz-like). [n]."""
    f0 = float(rng.choice([50.0, 60.0])) * (1 + rng.uniform(-0.005, 0.005))
    t = np.arange(n) / SR
    decay = rng.uniform(0.5, 3.0)  # dB per harmonic
    x = np.zeros(n)
    for k in range(1, int((SR / 2 - 50) // f0) + 1):
        amp = 10 ** (-decay * (k - 1) / 20) * rng.uniform(0.3, 1.0)
        if k % 2 == 0:
            amp *= rng.uniform(0.1, 1.0)  # rectifier buzz: odd/even imbalance
        x += amp * np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 2 * np.pi))
    x *= 1 + 0.1 * np.sin(2 * np.pi * rng.uniform(0.1, 1.0) * t)  # slow wobble
    return unit_rms(x)


def clicks(n: int, rng: np.random.Generator) -> np.ndarray:
    """Clicks and keyboard-like transients: sparse, short, decaying band-passed bursts. [n]."""
    rate = rng.uniform(2.0, 15.0)  # events per second
    x = np.zeros(n)
    n_events = max(1, rng.poisson(rate * n / SR))
    for _ in range(n_events):
        length = int(rng.uniform(0.002, 0.03) * SR)
        burst = rng.standard_normal(length) * np.exp(-np.arange(length) / (length / 5 + 1))
        if rng.random() < 0.7:  # keyboard-like: band-passed thump/clack
            lo = rng.uniform(200, 1500)
            sos = butter(
                2, [lo, min(lo * rng.uniform(1.5, 4), 3900)], "bandpass", fs=SR, output="sos"
            )
            burst = sosfilt(sos, burst)
        start = int(rng.integers(0, max(1, n - length)))
        seg = x[start : start + length]
        seg += burst[: len(seg)] * 10 ** rng.uniform(-1.5, 0)
    return unit_rms(x)


def babble(n: int, rng: np.random.Generator, utterances: list[np.ndarray]) -> np.ndarray:
    """Babble: 3-7 other talkers, each a concatenation of random utterances. [n], unit RMS."""
    x = np.zeros(n)
    for _ in range(int(rng.integers(3, 8))):
        talker = concat_utterances(n, rng, utterances, gap_s=(0.0, 0.1))
        x += unit_rms(talker) * 10 ** rng.uniform(-0.5, 0)
    return unit_rms(x)


def concat_utterances(
    n: int,
    rng: np.random.Generator,
    utterances: list[np.ndarray],
    gap_s: tuple[float, float] = (0.0, 0.4),
    first: np.ndarray | None = None,
    pick: Callable[[np.random.Generator], np.ndarray] | None = None,
) -> np.ndarray:
    """Fill ``n`` samples with random crops/concatenations of ``utterances`` and short gaps
    (``pick(rng)`` chooses the next utterance; default: uniform over ``utterances``)."""
    if pick is None:

        def pick(r: np.random.Generator) -> np.ndarray:
            return utterances[int(r.integers(len(utterances)))]

    out = np.zeros(n)
    pos = 0
    u = first
    mode = 1
    if first is None:
        # how the crop begins, in equal parts: a gap (noise only), a speech onset, or the middle
        # of an utterance. Always starting with a gap teaches the causal model that a fresh
        # stream begins with noise, and it then mutes files whose speech starts at once.
        mode = int(rng.integers(3))
        if mode == 0:
            pos = int(rng.integers(0, int(gap_s[1] * SR) + 1))
        elif mode == 2:
            u = pick(rng)
            u = u[int(rng.integers(0, max(1, len(u) // 2))) :]
    while pos < n:
        if u is None:
            u = pick(rng)
        if len(u) > n - pos:
            random_start = pos == 0 and mode != 1
            off = int(rng.integers(0, len(u) - (n - pos) + 1)) if random_start else 0
            u = u[off : off + n - pos]
        out[pos : pos + len(u)] = u
        pos += len(u) + int(rng.uniform(*gap_s) * SR)
        u = None
        mode = 0
    return out


def speed(x: np.ndarray, rng: np.random.Generator, factors: tuple[float, float]) -> np.ndarray:
    """``x`` played faster or slower by a factor drawn in ``factors`` (pitch and formants move
    with it: 1.1 sounds like a smaller speaker, 0.9 a larger one; Ko et al. 2015's speed
    perturbation): polyphase resampling on a grid of 1/40, so the factor is ``40 / k``."""
    lo, hi = factors
    k = int(rng.integers(int(np.ceil(40 / hi)), int(np.floor(40 / lo)) + 1))
    return resample_poly(x, k, 40) if k != 40 else x


def telephone_band(x: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Second-order section filter of a random telephone band (~300-3400 Hz), returned with
    the filter so the same channel can be applied to speech, target and noise."""
    lo = rng.uniform(200, 400)
    hi = rng.uniform(3000, 3700)
    sos = butter(int(rng.integers(2, 5)), [lo, hi], "bandpass", fs=SR, output="sos")
    return sosfilt(sos, x), sos


def random_eq(rng: np.random.Generator, r: float = 0.375) -> tuple[np.ndarray, np.ndarray]:
    """A random second-order pole-zero filter ``(b, a)``: ``(1 + r1 z^-1 + r2 z^-2) /
    (1 + r3 z^-1 + r4 z^-2)`` with each ``r_i`` uniform in ``[-r, r]`` (RNNoise's training
    trick for microphones and channels it never saw: tilts and bumps of up to ~+-15 dB).
    Stable for ``r < 0.5`` (the poles stay inside the unit circle)."""
    c = rng.uniform(-r, r, 4)
    return np.array([1.0, c[0], c[1]]), np.array([1.0, c[2], c[3]])


def peaking(f0_hz: float, gain_db: float, q: float) -> tuple[np.ndarray, np.ndarray]:
    """A second-order peaking filter ``(b, a)`` at 8 kHz (RBJ's audio EQ cookbook): ``gain_db``
    at ``f0_hz``, 0 dB far from it, bandwidth set by ``q``."""
    amp = 10 ** (gain_db / 40)
    w = 2 * np.pi * f0_hz / SR
    alpha = np.sin(w) / (2 * q)
    b = np.array([1 + alpha * amp, -2 * np.cos(w), 1 - alpha * amp])
    a = np.array([1 + alpha / amp, -2 * np.cos(w), 1 - alpha / amp])
    return b / a[0], a / a[0]


def voice_boost(
    rng: np.random.Generator,
    f0_hz: tuple[float, float] = (100.0, 220.0),
    gain_db: tuple[float, float] = (3.0, 12.0),
    at: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """A :func:`peaking` filter (Q 0.6-1.2) that raises the band of a voice's fundamental,
    centre and gain drawn in ``f0_hz`` and ``gain_db``: voices with a strong fundamental (a
    prompt voice's close microphone, a chest voice). At a fixed full-band SNR such a voice has
    less of itself at 1-3 kHz, where the noise then dominates; on `val2`'s speech raised so
    (+9 dB at 140 Hz, ``benchmarks.voice_variant``) the shipped model lost 0.017 STOI and
    RNNoise 0.005 (model card, "The voice-boost arm"). ``at``: the centre (a voice's own f0,
    :func:`median_f0`) instead of one drawn."""
    f0 = rng.uniform(*f0_hz)  # drawn even with ``at``: the gain and Q draws stay the same
    if at is not None:
        f0 = at
    return peaking(f0, rng.uniform(*gain_db), rng.uniform(0.6, 1.2))


def median_f0(x: np.ndarray, frame: int = 320, min_corr: float = 0.5) -> float | None:
    """The median pitch (Hz, 80-400) of the voiced 40 ms frames of ``x`` at 8 kHz (normalised
    autocorrelation above ``min_corr`` at its best lag, frame within 30 dB of the loudest; the
    shortest lag that correlates within 10 % of the best), or None where no frame is voiced."""
    n = len(x) // frame
    if n == 0:
        return None
    f = x[: n * frame].reshape(n, frame).astype(np.float64)
    e = np.sum(f * f, axis=1)
    f = f[e > e.max() * 1e-3]
    if not len(f):
        return None
    lags = np.arange(SR // 400, SR // 80 + 1)
    r = np.stack(
        [
            np.sum(f[:, t:] * f[:, :-t], 1)
            / np.sqrt(np.sum(f[:, t:] ** 2, 1) * np.sum(f[:, :-t] ** 2, 1) + 1e-20)
            for t in lags
        ],
        axis=1,
    )
    peak = r.max(axis=1)
    # the shortest lag within 10 % of the best: a period's multiples correlate as well as it
    best = np.argmax(r >= 0.9 * peak[:, None], axis=1)
    voiced = peak > min_corr
    return float(np.median(SR / lags[best[voiced]])) if voiced.any() else None


def synthetic_rir(
    rng: np.random.Generator, rt60_s: tuple[float, float] = (0.15, 0.7), early_ms: float = 50.0
) -> tuple[np.ndarray, np.ndarray]:
    """Exponentially decaying noise room impulse response with a unit direct path.

    Returns ``(rir [L], early [L])``: ``early`` keeps the direct path and the first
    ``early_ms`` (the training target for reverberant inputs: early reflections help
    intelligibility, late reverberation is removed like noise).
    """
    rt60 = rng.uniform(*rt60_s)
    length = int(min(rt60, 1.0) * SR)
    t = np.arange(length) / SR
    tail = rng.standard_normal(length) * 10 ** (-3 * t / rt60)  # -60 dB at rt60
    tail[0] = 0.0
    drr = 10 ** (rng.uniform(-3, 12) / 10)  # direct-to-reverberant energy ratio
    tail *= np.sqrt(1.0 / (drr * np.sum(tail**2) + 1e-12))
    rir = tail.copy()
    rir[0] = 1.0
    early = rir.copy()
    early[int(early_ms * SR / 1000) :] = 0.0
    return rir, early


def convolve(x: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Causal convolution trimmed to ``len(x)``."""
    return fftconvolve(x, h)[: len(x)]


def soft_clip(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Mild clipping: hard clip at 50-90 % of the peak (what an overdriven input does)."""
    peak = np.max(np.abs(x)) + 1e-12
    thr = peak * rng.uniform(0.5, 0.9)
    return np.clip(x, -thr, thr)
