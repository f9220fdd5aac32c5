"""One-frame calls between network frames (``held_frames``): the ONNX backend answers them
without the graph, and its masks and states are the graph's."""

import tracemalloc

import numpy as np
import pytest
import torch

from rtdenoise.backends import load_backend
from rtdenoise.export import export_all
from rtdenoise.model import save_checkpoint
from tests.test_backends import _run
from tests.test_export import COARSE, TINY, trained_tiny

torch.set_num_threads(1)


def _model(cfg, seed: int):
    """A tiny trained model whose feature statistics differ per bin (the held path must use
    the model's own, from the metadata)."""
    m = trained_tiny(cfg, seed=seed)
    g = torch.Generator().manual_seed(seed)
    m.set_feature_stats(
        -15 + 2 * torch.rand(cfg.n_freqs, generator=g), 3 + torch.rand(cfg.n_freqs, generator=g)
    )
    return m


@pytest.fixture(scope="module")
def coarse(tmp_path_factory):
    d = tmp_path_factory.mktemp("held")
    model = _model(COARSE, seed=7)
    save_checkpoint(d / "ckpt.pt", model)
    return model, export_all(d / "ckpt.pt", d / "out", name="coarse", torchscript=False)


def _spec(c: int, t: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((c, t, COARSE.n_freqs, 2)) * 0.05
    x[:, :, 100:] *= 10.0 ** rng.uniform(-3, 0, (c, t, 1, 1))  # loud and quiet frames
    return x.astype(np.float32)


def test_one_frame_calls_run_the_graph_once_in_stride_and_match_it(coarse):
    _, paths = coarse
    onnx = load_backend("onnx", paths["onnx"])
    ref = load_backend("torch", paths["checkpoint"])  # runs the graph on every call
    assert onnx.held is not None and onnx.held.stride == 4
    x = _spec(2, 41, seed=1)
    got = _run(onnx, x, [1] * 41)
    want = _run(ref, x, [1] * 41)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    # frames 1-3, 5-7, ... were held: 41 calls, 11 graph runs
    assert onnx.held.calls == 30
    for a, b in zip(onnx.state, ref.state, strict=True):
        np.testing.assert_allclose(a, np.asarray(b), atol=1e-5, rtol=0)


def test_mixed_block_sizes_stream_the_offline_mask(coarse):
    """Held one-frame calls interleave with graph blocks of any size at any phase."""
    model, paths = coarse
    onnx = load_backend("onnx", paths["onnx"])
    x = _spec(1, 41, seed=2)
    with torch.no_grad():
        offline = model(torch.from_numpy(x))[0].numpy()
    got = _run(onnx, x, [1, 1, 3, 1, 1, 1, 5, 1, 2, 1, 1, 16, 1, 1, 1, 1, 1, 1, 1])
    np.testing.assert_allclose(got, offline, atol=1e-4, rtol=0)
    assert onnx.held.calls > 0


def test_a_full_rate_model_has_no_held_path(tmp_path):
    model = _model(TINY, seed=3)
    save_checkpoint(tmp_path / "ckpt.pt", model)
    paths = export_all(tmp_path / "ckpt.pt", tmp_path / "out", torchscript=False)
    assert load_backend("onnx", paths["onnx"]).held is None


def test_held_calls_allocate_nothing(coarse):
    _, paths = coarse
    onnx = load_backend("onnx", paths["onnx"])
    onnx.reset(2)
    x = _spec(2, 64, seed=3)
    for t in range(8):  # warm-up: buffers for K=1 bound, work buffers sized
        onnx.step(x[:, t : t + 1])
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for t in range(8, 64):
        if onnx.held.due(onnx.state):
            onnx.step(x[:, t : t + 1])
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(s.size_diff for s in after.compare_to(before, "filename") if s.size_diff > 0)
    assert grown < 4096, grown
