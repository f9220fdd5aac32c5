"""Backends (ONNX Runtime without torch, TorchScript, torch) and the mask processor."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from rtdenoise.backends import load_backend
from rtdenoise.errors import UserError
from rtdenoise.export import export_all
from rtdenoise.model import save_checkpoint
from rtdenoise.processor import MaskProcessor
from rtdenoise.stft import StftConfig
from tests.test_export import TINY, trained_tiny

torch.set_num_threads(1)

KINDS = {"onnx": "onnx", "torchscript": "torchscript", "torch": "checkpoint"}


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    """A tiny model exported like the shipped one: ``default.{onnx,jit.pt,json,pt}``."""
    d = tmp_path_factory.mktemp("models")
    model = trained_tiny(seed=2)
    save_checkpoint(d / "ckpt.pt", model)
    return model, export_all(d / "ckpt.pt", d / "m")


def _spec(c: int, t: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((c, t, TINY.n_freqs, 2)) * 0.05).astype(np.float32)


def _run(backend, x: np.ndarray, sizes: list[int]) -> np.ndarray:
    backend.reset(x.shape[0])
    out, t = [], 0
    for k in sizes:
        out.append(backend.step(x[:, t : t + k]).copy())
        t += k
    return np.concatenate(out, axis=1)


@pytest.mark.parametrize("kind", list(KINDS))
def test_backends_stream_the_offline_mask(shipped, kind):
    model, paths = shipped
    b = load_backend(kind, paths[KINDS[kind]])
    assert b.block_frames == 4 and b.lookahead_frames == 0
    x = _spec(2, 36)
    with torch.no_grad():
        ref = model(torch.from_numpy(x))[0].numpy()
    np.testing.assert_allclose(_run(b, x, [4] * 9), ref, atol=1e-4, rtol=0)
    np.testing.assert_allclose(_run(b, x, [1, 8, 3, 16, 4, 4]), ref, atol=1e-4, rtol=0)


def test_onnx_backend_reuses_its_buffers_and_resets(shipped):
    _, paths = shipped
    b = load_backend("onnx", paths["onnx"])
    b.reset(1)
    x = _spec(1, 12)
    first = b.step(x[:, :4]).copy()
    m1 = b.step(x[:, 4:8])
    m2 = b.step(x[:, 8:12])
    assert np.shares_memory(m1, m2)  # preallocated output, nothing grows per hop
    b.reset(1)
    np.testing.assert_array_equal(b.step(x[:, :4]), first)  # reset = fresh stream
    with pytest.raises(ValueError):
        b.step(_spec(2, 4))
    with pytest.raises(ValueError):
        b.step(_spec(1, 17))  # beyond the exported SE window matrix


def test_onnx_backend_runs_without_torch(shipped, tmp_path):
    _, paths = shipped
    x = _spec(1, 16, seed=5)
    np.save(tmp_path / "x.npy", x)
    code = textwrap.dedent(
        f"""
        import sys
        sys.modules["torch"] = None  # any 'import torch' now raises ImportError
        import numpy as np
        from rtdenoise.backends import load_backend
        b = load_backend("onnx", {str(paths["onnx"])!r})
        x = np.load({str(tmp_path / "x.npy")!r})
        b.reset(1)
        out = np.concatenate([b.step(x[:, t : t + 4]).copy() for t in range(0, 16, 4)], axis=1)
        np.save({str(tmp_path / "y.npy")!r}, out)
        assert sys.modules["torch"] is None
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    ref = _run(load_backend("torch", paths["checkpoint"]), x, [4] * 4)
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), ref, atol=1e-4, rtol=0)


def test_load_backend_user_errors(tmp_path):
    with pytest.raises(UserError):
        load_backend("tensorflow")
    with pytest.raises(UserError):
        load_backend("onnx", tmp_path / "nope.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(UserError):
        load_backend("onnx", bad)


def test_default_block_latency_under_100_ms():
    samples = StftConfig().latency(block_frames=4)
    assert samples == 518 + 3 * 31 and samples / 8000 <= 0.1


# ----------------------------------------------------------------------------- processor
class FixedMask:
    """Stub backend: mask value per frame index of the stream, records its inputs."""

    def __init__(self, lookahead: int = 0, k: int = 2) -> None:
        self.block_frames, self.lookahead_frames, self.n = k, lookahead, 0
        self.seen: list[np.ndarray] = []

    def reset(self, channels: int) -> None:
        self.n = 0

    def step(self, spec_ri: np.ndarray) -> np.ndarray:
        c, k, f, _ = spec_ri.shape
        self.seen.append(spec_ri.copy())
        frames = np.arange(self.n, self.n + k, dtype=np.float32)
        self.n += k
        return np.broadcast_to((0.1 * (frames % 10))[None, :, None], (c, k, f)).copy()


def _frames(c: int, t: int, f: int = 5) -> np.ndarray:
    rng = np.random.default_rng(1)
    return (rng.standard_normal((c, t, f)) + 1j * rng.standard_normal((c, t, f))).astype(
        np.complex64
    )


@pytest.mark.parametrize("atten_lim_db, wet", [(100.0, 1.0), (6.0, 1.0), (100.0, 0.3)])
def test_mask_processor_gain_floor_and_wet(atten_lim_db, wet):
    stub = FixedMask()
    proc = MaskProcessor(stub, atten_lim_db=atten_lim_db, wet=wet)
    proc.reset(2)
    x = _frames(2, 6)
    out = np.empty((2, 2, 5), np.complex64)
    got = []
    for t in range(0, 6, 2):
        proc.process(x[:, t : t + 2], out)
        got.append(out.copy())
    mask = 0.1 * np.arange(6, dtype=np.float32)
    gain = np.maximum(mask, 10 ** (-atten_lim_db / 20))
    expect = x * (wet * gain + 1 - wet)[None, :, None]
    np.testing.assert_allclose(np.concatenate(got, 1), expect, rtol=1e-6, atol=1e-7)
    # the backend saw the spectrum as (real, imag) pairs
    seen = np.concatenate(stub.seen, 1)
    np.testing.assert_array_equal(seen[..., 0], x.real)
    np.testing.assert_array_equal(seen[..., 1], x.imag)


@pytest.mark.parametrize("wet", [1.0, 0.7])
@pytest.mark.parametrize("atten_lim_db", [0.0, 15.0, 100.0])
def test_mask_processor_compiled_gain_equals_the_numpy_path(atten_lim_db, wet):
    """The one-pass compiled gain gives bit for bit the numpy operations it replaced
    (maximum with the floor, the wet mix in float32, real and imaginary parts scaled)."""
    rng = np.random.default_rng(7)
    mask = rng.uniform(-0.2, 1.3, (2, 4, 260)).astype(np.float32)
    mask[0, 0, :4] = [0.0, 1e-40, 1.0, -0.0]

    class Stub:
        block_frames, lookahead_frames, meta = 4, 0, {}

        def reset(self, channels):
            pass

        def step(self, spec_ri):
            return mask

    proc = MaskProcessor(Stub(), atten_lim_db=atten_lim_db, wet=wet)
    proc.reset(2)
    x = _frames(2, 4, 260)
    out = np.empty_like(x)
    proc.process(x, out)
    gain = np.maximum(mask, np.float32(10.0 ** (-atten_lim_db / 20.0)))
    if wet != 1.0:
        gain *= wet
        gain += 1.0 - wet
    expect = np.empty_like(x)
    expect.real = x.real * gain
    expect.imag = x.imag * gain
    np.testing.assert_array_equal(out, expect)


def test_mask_processor_lookahead_is_a_delay_line():
    proc = MaskProcessor(FixedMask(lookahead=3, k=2))
    assert proc.lookahead_frames == 3 and proc.block_frames == 2
    proc.reset(1)
    x = _frames(1, 10)
    out = np.empty((1, 2, 5), np.complex64)
    got = []
    for t in range(0, 10, 2):
        proc.process(x[:, t : t + 2], out)
        got.append(out.copy())
    got = np.concatenate(got, 1)
    mask = 0.1 * np.arange(10, dtype=np.float32)
    # output frame j is input frame j - 3 times the mask computed when frame j arrived
    np.testing.assert_allclose(got[:, 3:], x[:, :7] * mask[None, 3:, None], rtol=1e-6)
    np.testing.assert_array_equal(got[:, :3], 0)


def test_mask_processor_on_onnx_applies_the_model_mask(shipped):
    model, paths = shipped
    proc = MaskProcessor(load_backend("onnx", paths["onnx"]))
    proc.reset(1)
    x = _spec(1, 12, seed=3)
    frames = (x[..., 0] + 1j * x[..., 1]).astype(np.complex64)
    out = np.empty((1, 4, TINY.n_freqs), np.complex64)
    got = []
    for t in range(0, 12, 4):
        proc.process(frames[:, t : t + 4], out)
        got.append(out.copy())
    with torch.no_grad():
        mask = model(torch.from_numpy(x))[0].numpy()
    np.testing.assert_allclose(np.concatenate(got, 1), frames * mask, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "lookahead, coarse", [(0, {}), (2, {}), (0, {"frame_stride": 2, "mask_head": "affine"})]
)
def test_streamer_with_model_equals_offline_masking(tmp_path, lookahead, coarse):
    """Engine + MaskProcessor == offline STFT, offline model mask, offline iSTFT (coarse: the
    network on every 2nd frame, 3 frames per call)."""
    import dataclasses

    from rtdenoise.stft import istft, stft
    from rtdenoise.streamer import Streamer

    cfg = dataclasses.replace(TINY, lookahead_frames=lookahead, **coarse)
    model = trained_tiny(cfg, seed=4)
    save_checkpoint(tmp_path / "m.pt", model)
    x = (0.1 * np.random.default_rng(6).standard_normal(4000)).astype(np.float32)
    z = stft(x)
    ri = np.stack([z.real, z.imag], -1).astype(np.float32)[None]
    with torch.no_grad():
        mask = model(torch.from_numpy(ri))[0].numpy()[0]
    ref = istft(z * mask, length=x.shape[0])
    proc = MaskProcessor(load_backend("torch", tmp_path / "m.pt", block_frames=3))
    streamer = Streamer(processor=proc, sample_rate=8000, channels=1)
    y = streamer.process(x)
    assert streamer.latency_samples == 518 + (2 + lookahead) * 31
    # the last nperseg samples differ by design: the stream has frames past the offline STFT's
    # last frame (its flush keeps framing the zero tail), which offline masking never sees
    n = x.shape[0] - 519
    np.testing.assert_allclose(y[:n], ref[:n], atol=1e-5, rtol=0)


def test_mask_processor_takes_the_models_attenuation_limit_unless_given():
    """The default floor travels in the model's metadata; an explicit value wins; no entry
    means no limit."""
    bare = FixedMask()
    assert MaskProcessor(bare).atten_lim_db == 100.0
    tuned = FixedMask()
    tuned.meta = {"atten_lim_db": 12.0}
    assert MaskProcessor(tuned).atten_lim_db == 12.0
    assert MaskProcessor(tuned).floor == np.float32(10 ** (-12 / 20))
    assert MaskProcessor(tuned, atten_lim_db=30.0).atten_lim_db == 30.0
