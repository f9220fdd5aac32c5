"""A model with the pitch channel through the streaming engine: every backend, every block size,
the compiled one-hop path, equal to the offline forward that training runs (the torch channel
over the whole waveform), and the channel is really read."""

import numpy as np
import pytest
import torch

from rtdenoise.backends import load_backend
from rtdenoise.export import export_all
from rtdenoise.model import DenoiserNet, save_checkpoint
from rtdenoise.processor import MaskProcessor
from rtdenoise.stft import istft, stft
from rtdenoise.streamer import Streamer
from tests.test_hop_path import _feed, _noisy
from tests.test_pitch_corr import PITCH
from training.torch_stft import TorchStft

torch.set_num_threads(1)
KINDS = {"onnx": "onnx", "torchscript": "torchscript", "torch": "checkpoint"}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    d = tmp_path_factory.mktemp("pitch")
    torch.manual_seed(5)
    model = DenoiserNet(PITCH).train()  # BatchNorm statistics and codebook off their init
    st = TorchStft(PITCH.stft)
    for _ in range(3):
        wave = torch.randn(2, 4000) * 0.05
        model(st.stft(wave), wave)
    model.eval()
    with torch.no_grad():  # the channel's weights made to matter
        first = model.net.enc[0].conv.block.conv.weight
        first[:, -1] *= 20.0
    save_checkpoint(d / "ckpt.pt", model)
    return model, export_all(d / "ckpt.pt", d / "m", name="p")


def _offline(model, x: np.ndarray, cfg=PITCH) -> tuple[np.ndarray, np.ndarray]:
    """Offline STFT, the model's mask from the spectrum and the waveform, iSTFT."""
    z = stft(x, cfg.stft)
    ri = torch.from_numpy(np.stack([z.real, z.imag], -1).astype(np.float32)[None])
    with torch.no_grad():
        mask = model(ri, torch.from_numpy(x)[None])[0].numpy()[0]
        blind = model.net.forward_offline(
            model.features(ri), torch.zeros(1, ri.shape[1], model.net.bands.n_bins)
        )[0]
    return istft(z * mask, length=x.shape[0], cfg=cfg.stft), torch.sigmoid(blind)[0, 0].numpy()


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("k", [1, 4, 16])
def test_stream_equals_offline(exported, kind, k):
    model, paths = exported
    x = _noisy(6000, 8000, seed=1)
    ref, _ = _offline(model, x)
    backend = load_backend(kind, paths[KINDS[kind]], block_frames=k)
    assert backend.needs_samples
    proc = MaskProcessor(backend, atten_lim_db=100.0)
    y = Streamer(processor=proc, sample_rate=8000, channels=1).process(x)
    n = x.shape[0] - 519  # the stream frames the zero tail past the offline STFT's last frame
    np.testing.assert_allclose(y[:n], ref[:n], atol=2e-5, rtol=0)


def test_the_channel_is_read(exported):
    """Zero rows give another mask: the engine's rows are what the network sees."""
    model, _ = exported
    x = _noisy(6000, 8000, seed=1)
    z = stft(x, PITCH.stft)
    ri = torch.from_numpy(np.stack([z.real, z.imag], -1).astype(np.float32)[None])
    with torch.no_grad():
        mask = model(ri, torch.from_numpy(x)[None])[0].numpy()[0]
    _, blind = _offline(model, x)
    assert np.abs(mask - blind[: mask.shape[0]]).max() > 0.05


def test_compiled_one_hop_path_equals_the_general_path(exported):
    """Live mode's calls at 48 kHz (the compiled hop path, the compiled network frame and held
    frames, the rows read from the analyzer's buffer) == the general path."""
    _, paths = exported

    def engine(compiled: bool) -> Streamer:
        proc = MaskProcessor(load_backend("onnx", paths["onnx"], block_frames=1))
        return Streamer(proc, 48000, 1, compiled_hops=compiled)

    fast, slow = engine(True), engine(False)
    hop = fast._hops.n
    x = _noisy(96000, 48000)
    sizes = [hop] * (len(x) // hop)
    y_fast = _feed(fast, x, sizes)
    y_slow = _feed(slow, x, [4096] * (len(x) // 4096 + 1))[: len(y_fast)]
    assert fast._hops.calls >= len(sizes) - 20
    n = len(y_fast) - 4096
    np.testing.assert_allclose(y_fast[:n], y_slow[:n], rtol=0, atol=1e-5)


def test_a_step_without_the_samples_is_refused(exported):
    _, paths = exported
    b = load_backend("onnx", paths["onnx"], block_frames=4)
    with pytest.raises(ValueError, match="pitch channel"):
        b.step(np.zeros((1, 4, PITCH.n_freqs, 2), np.float32))


def test_each_channel_reads_its_own_samples(exported):
    """Two channels at once == each alone (the rows come from each channel's own input)."""
    _, paths = exported

    def run(x: np.ndarray) -> np.ndarray:
        proc = MaskProcessor(load_backend("onnx", paths["onnx"], block_frames=4))
        return Streamer(processor=proc, sample_rate=8000, channels=x.shape[1]).process(x)

    a, b = _noisy(5000, 8000, seed=2), _noisy(5000, 8000, seed=3)[::-1].copy()
    both = run(np.stack([a, b], 1))
    np.testing.assert_allclose(both[:, 0], run(a[:, None])[:, 0], atol=1e-6, rtol=0)
    np.testing.assert_allclose(both[:, 1], run(b[:, None])[:, 0], atol=1e-6, rtol=0)
