"""Low-latency framing: asymmetric analysis/synthesis windows with the design's 260 bins.

Invariants for every synthesis length: exact reconstruction after the reported latency,
streaming == offline for any chunking, the latency is what the one framing object reports,
torch == numpy, and a model runs only on the framing it was trained for.
"""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rtdenoise.errors import UserError
from rtdenoise.frame_dft import partial_irfft_matrix
from rtdenoise.processor import IdentityProcessor
from rtdenoise.stft import (
    StftConfig,
    StftSynthesizer,
    istft,
    ola_norm,
    stft,
)
from rtdenoise.streamer import Streamer
from tests.test_stft import _stream as stream_pair
from training.torch_stft import TorchStft

LOW = [StftConfig(synthesis_len=s) for s in (62, 124, 248)] + [
    StftConfig(window="hann^1", synthesis_len=124)
]
IDS = [c.describe() for c in LOW]


def _rng(seed=0):
    return np.random.default_rng(seed)


def test_numbers():
    cfg = StftConfig(synthesis_len=124)
    assert (cfg.hop, cfg.n_freqs, cfg.seg_len, cfg.seg_start) == (31, 260, 124, 395)
    assert cfg.latency_samples == 123  # 15.375 ms at 8 kHz: <= 16 ms
    assert cfg.latency(4) == 123 + 3 * 31
    assert stft(np.zeros(8000), cfg).shape == (260, 260)  # still the square window
    assert StftConfig().latency_samples == 518
    for bad in (100, 31, 519, 620):
        with pytest.raises(ValueError):
            StftConfig(synthesis_len=bad)
    with pytest.raises(ValueError):
        _ = StftConfig(window="kaiser", synthesis_len=124).window_array


@pytest.mark.parametrize("cfg", LOW, ids=IDS)
def test_windows_product_is_short_hann(cfg):
    w, s = cfg.window_array, cfg.synthesis_array
    assert np.all(s[: cfg.seg_start] == 0)  # nothing before the short synthesis support
    prod = (w * s)[cfg.seg_start :]
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(cfg.seg_len) / cfg.seg_len)
    np.testing.assert_allclose(prod, hann, atol=1e-12)
    startup, steady = ola_norm(cfg)
    np.testing.assert_allclose(steady, cfg.seg_len / (2 * cfg.hop), rtol=1e-12)  # COLA


@pytest.mark.parametrize("cfg", LOW, ids=IDS)
def test_offline_round_trip(cfg):
    x = _rng(cfg.synthesis_len).standard_normal((2, 3001))
    np.testing.assert_allclose(istft(stft(x, cfg), cfg, length=3001), x, rtol=0, atol=1e-12)


def _stream(cfg, x, chunks, batch):
    return stream_pair(x, chunks, channels=x.shape[0], max_frames=16, batch=batch, cfg=cfg)


@pytest.mark.parametrize("cfg", LOW, ids=IDS)
@settings(max_examples=8, deadline=None)
@given(chunks=st.lists(st.integers(1, 500), min_size=3, max_size=20), batch=st.integers(1, 9))
def test_streaming_equals_offline_any_chunking(cfg, chunks, batch):
    n = sum(chunks)
    if n < cfg.nperseg:
        return
    x = _rng(n).standard_normal((1, n)).astype(np.float32)
    f, y = _stream(cfg, x, chunks, batch)
    assert f.shape[1] == (n + cfg.pad - cfg.nperseg) // cfg.hop + 1
    np.testing.assert_allclose(f, stft(x, cfg)[:, : f.shape[1]], rtol=0, atol=1e-6)
    # identity: the input comes back, time-aligned, and output runs only latency behind
    assert y.shape[1] == f.shape[1] * cfg.hop + cfg.seg_start - cfg.pad
    assert n - y.shape[1] <= cfg.latency_samples
    np.testing.assert_allclose(y, x[:, : y.shape[1]], rtol=0, atol=1e-5)


@pytest.mark.parametrize("cfg", LOW, ids=IDS)
def test_streaming_synthesis_equals_offline_istft(cfg):
    rng = _rng(4)
    z = (rng.standard_normal((1, 60, 260)) + 1j * rng.standard_normal((1, 60, 260))).astype(
        np.complex64
    )
    sy = StftSynthesizer(cfg, 1, max_frames=16)
    outs, i = [], 0
    for m in [1, 16, 3, 16, 7, 16, 1]:
        outs.append(sy.push(z[:, i : i + m]).copy())
        i += m
    y = np.concatenate(outs, axis=1)
    ref = istft(z.astype(np.complex128), cfg)
    # pushes of <= 4 frames take the partial inverse: float32 sums of 520 terms, ~1e-6 of peak
    np.testing.assert_allclose(y, ref[:, : y.shape[1]], rtol=1e-6, atol=2e-6 * np.abs(ref).max())


@pytest.mark.parametrize("n", [519, 64])
def test_partial_inverse_is_the_tail_of_irfft(n):
    """The matrix of the short synthesis support gives irfft's samples, ignoring the
    imaginary parts of DC (and Nyquist, for an even length) as irfft does."""
    rng = _rng(5)
    f = n // 2 + 1
    z = (rng.standard_normal((3, f)) + 1j * rng.standard_normal((3, f))).astype(np.complex64)
    start = n - n // 4
    got = z.view(np.float32) @ partial_irfft_matrix(n, start)
    want = np.fft.irfft(z.astype(np.complex128), n)[:, start:]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6 * np.abs(want).max() * 4)


@pytest.mark.parametrize("cfg", LOW, ids=IDS)
@pytest.mark.parametrize("k", [1, 4])
def test_streamer_delay_is_the_reported_latency(cfg, k):
    """Identity engine: y[t] == x[t - L] exactly, L = latency the framing reports, for any
    chunking; an impulse comes out exactly L samples later (not earlier: causal)."""
    s = Streamer(IdentityProcessor(k), stft=cfg)
    lat = s.latency_samples
    assert lat == cfg.latency(k)
    x = _rng(k).standard_normal(4000).astype(np.float32)
    y = np.concatenate([s.feed(x[a : a + 77]) for a in range(0, 4000, 77)])
    assert np.all(y[:lat] == 0)
    np.testing.assert_allclose(y[lat:], x[: 4000 - lat], rtol=0, atol=1e-5)
    imp = np.zeros(2000, np.float32)
    imp[700] = 1.0
    out = Streamer(IdentityProcessor(k), stft=cfg).process(np.concatenate([imp, np.zeros(lat)]))
    assert int(np.argmax(np.abs(out))) == 700


@pytest.mark.parametrize("cfg", [StftConfig()] + LOW, ids=["symmetric"] + IDS)
def test_torch_pair_equals_numpy(cfg):
    ts = TorchStft(cfg)
    x = _rng(7).standard_normal((2, 2345))
    z = stft(x, cfg)
    zt = ts.stft(torch.from_numpy(x).float()).double().numpy()
    np.testing.assert_allclose(zt[..., 0] + 1j * zt[..., 1], z, atol=1e-6)
    zm = z * (1 + 0.5 * _rng(8).standard_normal(z.shape))
    spec = torch.from_numpy(np.stack([zm.real, zm.imag], -1)).float()
    np.testing.assert_allclose(ts.istft(spec, 2345).numpy(), istft(zm, cfg, 2345), atol=2e-5)


class _ModelLike(IdentityProcessor):
    def __init__(self, cfg):
        super().__init__(1)
        self.stft = cfg


def test_model_runs_only_on_its_framing():
    low = StftConfig(synthesis_len=124)
    assert Streamer(_ModelLike(low)).latency_samples == 123  # the model's framing by default
    assert Streamer(_ModelLike(low), stft=low).stft == low
    with pytest.raises(UserError, match="trained for the STFT framing"):
        Streamer(_ModelLike(low), stft=StftConfig())
    with pytest.raises(UserError, match="trained for the STFT framing"):
        Streamer(_ModelLike(StftConfig()), stft=low)
