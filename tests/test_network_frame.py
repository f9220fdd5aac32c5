"""One-frame calls that run the network (``network_frame``): the ONNX backend computes them
with the compiled step instead of the graph, and its masks and states are the graph's."""

import json
import tracemalloc

import numpy as np
import pytest
import torch

from rtdenoise.backends import load_backend
from rtdenoise.export import export_all
from rtdenoise.model import preset_config, save_checkpoint
from tests.test_backends import _run
from tests.test_export import COARSE, TINY, trained_tiny
from tests.test_held_frames import _model, _spec

torch.set_num_threads(1)

#: the coarse grid at stride 2 with a conv-free head path, frequency kernel 3 in the bottleneck
WIDE_BOTTLENECK = preset_config(
    **{**COARSE.to_dict(), "frame_stride": 2, "bottleneck_freq_kernel": 3, "band_width": 13}
)
#: the coarse grid with the harmonic comb channel on the network input (harmonic.py)
COMB = preset_config(**{**COARSE.to_dict(), "harmonic_channel": True})
CONFIGS = {"full_rate": TINY, "coarse": COARSE, "stride2": WIDE_BOTTLENECK, "comb": COMB}


@pytest.fixture(scope="module", params=list(CONFIGS))
def exported(request, tmp_path_factory):
    d = tmp_path_factory.mktemp("netframe")
    model = _model(CONFIGS[request.param], seed=11)
    save_checkpoint(d / "ckpt.pt", model)
    return model, export_all(d / "ckpt.pt", d / "out", name="m", torchscript=False)


def test_one_frame_calls_match_the_graph_masks_and_states(exported):
    model, paths = exported
    fast = load_backend("onnx", paths["onnx"])
    graph = load_backend("torch", paths["checkpoint"])  # runs the graph on every call
    assert fast.network is not None
    x = _spec(2, 45, seed=4)
    got = _run(fast, x, [1] * 45)
    want = _run(graph, x, [1] * 45)
    np.testing.assert_allclose(got, want, atol=2e-5, rtol=0)
    r = model.cfg.frame_stride
    assert fast.network.calls == -(-45 // r)  # every R-th call ran the network, here
    for a, b in zip(fast.state, graph.state, strict=True):
        np.testing.assert_allclose(a, np.asarray(b), atol=2e-5, rtol=0)


@pytest.mark.parametrize("blocks", [True, False])
def test_compiled_frames_interleave_with_blocks(exported, blocks):
    """One-frame calls between blocks of any size, at any phase, the blocks through the compiled
    steps frame by frame or through the graph: the offline mask."""
    from rtdenoise.backends import OnnxBackend

    model, paths = exported
    fast = OnnxBackend(paths["onnx"], compiled_blocks=blocks)
    x = _spec(1, 43, seed=5)
    with torch.no_grad():
        offline = model(torch.from_numpy(x))[0].numpy()
    sizes = [1, 1, 3, 1, 1, 1, 5, 1, 2, 1, 1, 16, 1, 1, 1, 1, 1, 1, 1, 1, 1]
    calls = sum(sizes) // model.cfg.frame_stride + (model.cfg.frame_stride == 1)
    np.testing.assert_allclose(_run(fast, x, sizes), offline, atol=1e-4, rtol=0)
    assert fast.network.calls > 0
    assert (fast.network.calls >= calls - 1) == (blocks and fast.held is not None)


def test_compiled_blocks_equal_the_graphs_masks_and_states(exported):
    """File mode's blocks (K > 1) through the compiled steps: the graph's masks and states, for
    two streams, at every phase of the coarse grid."""
    from rtdenoise.backends import OnnxBackend

    model, paths = exported
    fast, graph = OnnxBackend(paths["onnx"]), OnnxBackend(paths["onnx"], compiled_blocks=False)
    assert fast.compiled_blocks == (fast.held is not None)
    x = _spec(2, 61, seed=9)
    sizes = [16, 16, 5, 3, 16, 4, 1]
    np.testing.assert_allclose(_run(fast, x, sizes), _run(graph, x, sizes), atol=2e-5, rtol=0)
    for a, b in zip(fast.state, graph.state, strict=True):
        np.testing.assert_allclose(a, b, atol=2e-5, rtol=0)


def test_without_the_sidecar_the_graph_runs(exported, tmp_path):
    """An export without ``NAME.npz`` (older ones) still runs, every frame by the graph."""
    _, paths = exported
    onnx = tmp_path / "old.onnx"
    onnx.write_bytes(paths["onnx"].read_bytes())
    (tmp_path / "old.json").write_text(paths["json"].read_text())
    b = load_backend("onnx", onnx)
    assert b.network is None
    x = _spec(1, 9, seed=6)
    np.testing.assert_allclose(
        _run(b, x, [1] * 9), _run(load_backend("onnx", paths["onnx"]), x, [1] * 9), atol=2e-5
    )


def test_the_compiled_step_can_be_turned_off(exported):
    _, paths = exported
    from rtdenoise.backends import OnnxBackend

    assert OnnxBackend(paths["onnx"], compiled_frames=False).network is None


def test_the_sidecar_holds_the_folded_weights_only(exported):
    model, paths = exported
    with np.load(paths["weights"]) as npz:
        names = set(npz.files)
    assert "net.vq.codebook" in names and "feat_mean" in names
    assert not any("ema_" in n or ".norm." in n for n in names)
    assert "features" in json.loads(paths["json"].read_text())


def test_compiled_frames_allocate_nothing(exported):
    _, paths = exported
    fast = load_backend("onnx", paths["onnx"])
    fast.reset(2)
    x = _spec(2, 64, seed=3)
    for t in range(8):  # warm-up: buffers for K=1 bound, compiled
        fast.step(x[:, t : t + 1])
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for t in range(8, 64):
        fast.step(x[:, t : t + 1])
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(s.size_diff for s in after.compare_to(before, "filename") if s.size_diff > 0)
    assert grown < 4096, grown


def test_a_lookahead_model_keeps_the_graph(tmp_path):
    cfg = preset_config(**{**TINY.to_dict(), "lookahead_frames": 1})
    save_checkpoint(tmp_path / "la.pt", trained_tiny(cfg, seed=1))
    paths = export_all(tmp_path / "la.pt", tmp_path / "out", torchscript=False)
    assert load_backend("onnx", paths["onnx"]).network is None


@pytest.mark.parametrize("mode", ["low", "standard"])
def test_the_shipped_models_run_compiled_frames_equal_to_their_graph(mode):
    """Both shipped models carry the weights sidecar; live mode's one-frame calls through the
    compiled step give the graph's masks (speech-like levels: loud and quiet frames)."""
    from rtdenoise.backends import OnnxBackend, shipped_model

    path = shipped_model("onnx", mode)
    fast, graph = OnnxBackend(path), OnnxBackend(path, compiled_frames=False)
    assert fast.network is not None and graph.network is None
    rng = np.random.default_rng(8)
    x = rng.standard_normal((1, 40, 260, 2)) * 10.0 ** rng.uniform(-4, -1, (1, 40, 1, 1))
    x = x.astype(np.float32)
    np.testing.assert_allclose(_run(fast, x, [1] * 40), _run(graph, x, [1] * 40), atol=1e-4)
    assert fast.network.calls == 40 // fast.network.stride


def test_a_broken_or_foreign_sidecar_falls_back_to_the_graph(exported, tmp_path, caplog):
    """A truncated sidecar, or one written for another model, is ignored with a warning."""
    model, paths = exported
    x = _spec(1, 9, seed=7)
    want = _run(load_backend("onnx", paths["onnx"]), x, [1] * 9)
    save_checkpoint(tmp_path / "other.pt", _model(model.cfg, seed=12))  # other statistics
    other = export_all(tmp_path / "other.pt", tmp_path / "o", torchscript=False)["weights"]
    for name, data in [("broken", paths["weights"].read_bytes()[:100]),
                       ("foreign", other.read_bytes())]:  # fmt: skip
        d = tmp_path / name
        d.mkdir()
        for kind in ("onnx", "json"):
            (d / f"m.{kind}").write_bytes(paths[kind].read_bytes())
        (d / "m.npz").write_bytes(data)
        caplog.clear()
        with caplog.at_level("WARNING"):
            b = load_backend("onnx", d / "m.onnx")
        assert b.network is None and "sidecar" in caplog.text, name
        np.testing.assert_allclose(_run(b, x, [1] * 9), want, atol=2e-5)


def test_warm_up_builds_the_steps_and_leaves_a_fresh_stream(exported):
    """File mode builds the compiled steps before its first file; the stream that follows is
    the one a fresh backend gives."""
    from rtdenoise.backends import OnnxBackend

    _, paths = exported
    warm, fresh = OnnxBackend(paths["onnx"], block_frames=16), OnnxBackend(paths["onnx"])
    warm.reset(2)
    fresh.reset(2)
    assert warm.warm_up() in (True, False)
    x = _spec(2, 40, seed=12)
    np.testing.assert_array_equal(_run(warm, x, [16, 16, 8]), _run(fresh, x, [16, 16, 8]))
