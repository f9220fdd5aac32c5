"""Transforms of one frame at a time: streaming's hop-by-hop calls.

Live mode analyses and synthesises one 519-point frame per hop (258 a second). 519 = 3 x 173,
and a lone transform of a length with the prime factor 173 is pocketfft's slow case (~25 us,
against ~4 us per frame in batches of 4, and ~6 us for 520 points). Two exact rewrites as small
matrix products are cheaper there:

* analysis, :func:`split_rdft_plan` + :func:`window_rdft`: the real DFT of ``N = p * q`` points
  (``q`` the largest prime factor, ``p`` small) as ``p`` real DFTs of ``q`` points of the
  decimated frame (one ``[q + 1, q] x [q, p]`` product: a 120 kB matrix for 519 = 3 x 173, not
  the 1 MB of the direct ``[N, N + 1]`` DFT matrix, which evicted the rest of the engine from
  cache) and a ``p``-term twiddle sum per bin (Cooley-Tukey's first stage):
  ``X[k] = sum_r exp(-2 pi i r k / N) Y_r[k mod q]``, ``Y_r[j] = sum_m x[p m + r]
  exp(-2 pi i j m / q)``, with ``Y_r[q - j] = conj(Y_r[j])`` for real input; windowing included.
  ~7 us for 519 points, float32 (error ~1e-7 of the spectrum's peak).
* synthesis, :func:`partial_irfft_matrix`: only the samples of the inverse inside the synthesis
  window's support, as one product with a ``[2 F, S]`` matrix (the low-latency framing: 124 of
  519 samples, 4 us).

Batches of several frames keep pocketfft (as cheap per frame there, and no BLAS threads woken).
"""

from __future__ import annotations

import numba
import numpy as np

#: the split analysis is used where the frame length's largest prime factor is at least this
#: (below it pocketfft's own radices are fast) and the rest of the length at most MAX_SPLIT
MIN_PRIME = 37
MAX_SPLIT = 8


def _largest_prime_factor(n: int) -> int:
    p, f = n, 2
    best = 1
    while f * f <= p:
        while p % f == 0:
            best, p = f, p // f
        f += 1
    return max(best, p) if p > 1 else best


def split_rdft_plan(n: int) -> tuple[np.ndarray, np.ndarray] | None:
    """For a real DFT of ``n`` points with ``n = p * q`` (q the largest prime factor,
    ``MIN_PRIME <= q``, ``2 <= p <= MAX_SPLIT``): ``(mat, tw)``, else None.

    mat float32 ``[2 h, q]`` with ``h = q // 2 + 1``: rows ``j < h`` are ``cos(2 pi j m / q)``,
    rows ``h + j`` are ``-sin(2 pi j m / q)`` (the real and imaginary parts of bins ``0..h-1``
    of a q-point DFT); tw complex64 ``[p, n // 2 + 1]``: ``exp(-2 pi i r k / n)``.
    """
    q = _largest_prime_factor(n)
    p = n // q
    if q < MIN_PRIME or not 2 <= p <= MAX_SPLIT:
        return None
    h = q // 2 + 1
    ang = 2.0 * np.pi * np.arange(h)[:, None] * np.arange(q)[None, :] / q
    mat = np.concatenate([np.cos(ang), -np.sin(ang)]).astype(np.float32)
    k = np.arange(n // 2 + 1)
    tw = np.exp(-2j * np.pi * np.arange(p)[:, None] * k[None, :] / n).astype(np.complex64)
    return mat, tw


def split_rdft_scratch(plan: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The float32 work arrays :func:`window_rdft` needs for ``plan``: ``[q, p]``, ``[2h, p]``."""
    mat, tw = plan
    q, p = mat.shape[1], tw.shape[0]
    return np.zeros((q, p), np.float32), np.zeros((mat.shape[0], p), np.float32)


@numba.njit(cache=True, nogil=True)
def window_rdft(buf, r, win, mat, tw, wq, y, out):  # pragma: no cover - compiled
    """out[c] = rfft(buf[c, r : r + N] * win) for every channel c, by the split DFT.

    buf float32 ``[C, >= r + N]``; win float32 ``[N]``; (mat, tw) from :func:`split_rdft_plan`;
    wq, y from :func:`split_rdft_scratch`; out complex64 ``[C, N // 2 + 1]``.
    """
    q, p = wq.shape
    h = mat.shape[0] // 2
    n_freqs = tw.shape[1]
    for c in range(buf.shape[0]):
        for m in range(q):  # the windowed frame, decimated: sample p*m + s at wq[m, s]
            o = p * m
            for s in range(p):
                wq[m, s] = buf[c, r + o + s] * win[o + s]
        np.dot(mat, wq, y)  # y[j, s] = Re Y_s[j], y[h + j, s] = Im Y_s[j], j < h
        for k in range(n_freqs):
            j = k % q
            sign = 1.0
            if j >= h:  # Hermitian half: Y[j] = conj(Y[q - j])
                j = q - j
                sign = -1.0
            acc = 0j
            for s in range(p):
                acc += tw[s, k] * complex(y[j, s], sign * y[h + j, s])
            out[c, k] = acc


def partial_irfft_matrix(nperseg: int, start: int) -> np.ndarray:
    """float32 ``[2 * n_freqs, nperseg - start]``: the real and imaginary parts of a
    one-sided spectrum (interleaved, as complex64 viewed as float32) times this matrix are
    samples ``start..nperseg-1`` of its ``irfft`` (the imaginary parts of DC and, for an even
    length, Nyquist are ignored, as ``irfft`` does)."""
    n_freqs = nperseg // 2 + 1
    k = np.arange(n_freqs)[:, None]
    ang = 2.0 * np.pi * k * np.arange(start, nperseg)[None, :] / nperseg
    c = np.full((n_freqs, 1), 2.0)
    c[0] = 1.0
    if nperseg % 2 == 0:
        c[-1] = 1.0
    m = np.empty((2 * n_freqs, nperseg - start))
    m[0::2] = c * np.cos(ang) / nperseg
    m[1::2] = -c * np.sin(ang) / nperseg
    m[1] = 0.0
    if nperseg % 2 == 0:
        m[-1] = 0.0
    return m.astype(np.float32)
