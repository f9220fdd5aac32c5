"""The pitch channel's input (``pitch_corr``): per-band correlation with the signal one pitch
period earlier, causal, on the model's frames and grid; a model grown with it computes what
the checkpoint did (the engine's side: ``test_pitch_frame``, ``test_pitch_engine``)."""

import numpy as np
import pytest
import torch

from rtdenoise.model import DenoiserNet, preset_config
from rtdenoise.pitch_corr import PitchCorrelation
from tests.test_export import COARSE
from training.torch_stft import TorchStft
from training.train import _zero_new_inputs

LOW = preset_config(**{**COARSE.to_dict(), "stft_window": "hann^3", "stft_synthesis_len": 124})
PITCH = preset_config(**{**LOW.to_dict(), "pitch_channel": True})


def _corr(x: np.ndarray, cfg=LOW) -> np.ndarray:
    pc = PitchCorrelation(cfg.stft, cfg.n_freqs, cfg.band_split, cfg.band_width)
    return pc(torch.from_numpy(x.astype(np.float32))[None])[0].numpy()


def _voiced(n: int, f0: float = 140.0) -> np.ndarray:
    t = np.arange(n) / 8000
    return sum(np.sin(2 * np.pi * f0 * k * t + k) / k for k in range(1, 25))


def test_voiced_frames_correlate_and_noise_does_not():
    n = 16000
    voiced = _corr(_voiced(n))[50:]
    noise = _corr(np.random.default_rng(0).standard_normal(n))[50:]
    grid = LOW.band_split + (LOW.n_freqs - LOW.band_split) // LOW.band_width
    assert voiced.shape[1] == noise.shape[1] == grid
    below_3k = voiced[:, :140]  # the harmonics reach 3.36 kHz (grid index 140: 2.9 kHz)
    assert below_3k.mean() > 0.95 and below_3k.min() > 0.5
    assert abs(noise.mean()) < 0.3  # the best of 81 lags of noise: a small positive bias


def test_frames_are_the_models_and_future_samples_change_nothing():
    x = np.random.default_rng(1).standard_normal(8000) + _voiced(8000)
    c = _corr(x)
    assert c.shape[0] == TorchStft(LOW.stft).stft(torch.zeros(1, 8000)).shape[1]
    y = x.copy()
    y[5000:] = 0.0
    # frame t ends at sample t * hop + nperseg - pad - 1 of the input
    st = LOW.stft
    last = (5000 + st.pad - st.nperseg) // st.hop
    np.testing.assert_array_equal(_corr(y)[: last + 1], c[: last + 1])
    assert not np.allclose(_corr(y)[last + 2 :], c[last + 2 :])


def test_a_model_grown_with_the_channel_computes_what_its_checkpoint_did():
    torch.manual_seed(0)
    base = DenoiserNet(LOW).eval()
    grown = DenoiserNet(PITCH).eval()
    weights = dict(base.state_dict())
    assert _zero_new_inputs(grown, weights)  # first stage and head take one more channel
    grown.load_state_dict(weights)
    x = torch.randn(2, 6000) * 0.1
    spec = TorchStft(LOW.stft).stft(x)
    with torch.no_grad():
        torch.testing.assert_close(grown(spec, x)[0], base(spec)[0], rtol=0, atol=0)
    with pytest.raises(ValueError, match="waveform"):
        grown(spec)
