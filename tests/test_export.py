"""Export: eager == TorchScript == ONNX Runtime over consecutive steps (masks and states)."""

import dataclasses
import json
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from rtdenoise import cli
from rtdenoise.export import export_all, inference_copy
from rtdenoise.model import DenoiserNet, ModelConfig, preset_config, save_checkpoint

torch.set_num_threads(1)

TINY = preset_config(
    "rt",
    widths=(4, 4, 8),
    bottleneck_dilations=(1, 2),
    context_frames=12,
    codebook_size=16,
    code_dim=8,
)

#: the coarse grid on: network every 4th frame, bins from 2 kHz in bands of 5, grouped bottleneck
COARSE = preset_config(
    **{
        **TINY.to_dict(),
        "frame_stride": 4,
        "band_split": 130,
        "band_width": 5,
        "mask_head": "affine",
        "bottleneck_groups": 2,
    }
)


def trained_tiny(cfg=TINY, seed: int = 0) -> DenoiserNet:
    """A tiny rt model whose BatchNorm statistics and codebook have left their init."""
    torch.manual_seed(seed)
    m = DenoiserNet(cfg).train()
    for _ in range(3):
        m(torch.randn(2, 30, cfg.n_freqs, 2) * 0.05)
    return m.eval()


def _export(d, cfg):
    model = trained_tiny(cfg)
    save_checkpoint(d / "ckpt.pt", model)
    paths = export_all(
        d / "ckpt.pt", d / "out", name="tiny", atten_lim_db=9.0, pitch_postfilter=0.25
    )
    return model, paths


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return _export(tmp_path_factory.mktemp("export"), TINY)


@pytest.fixture(scope="module")
def exported_coarse(tmp_path_factory):
    return _export(tmp_path_factory.mktemp("export_coarse"), COARSE)


#: the coarse grid with the harmonic comb channel (harmonic.py) on the network input
COMB = dataclasses.replace(COARSE, harmonic_channel=True)


@pytest.fixture(scope="module")
def exported_comb(tmp_path_factory):
    return _export(tmp_path_factory.mktemp("export_comb"), COMB)


@pytest.mark.parametrize("cfg", [TINY, COARSE, COMB], ids=["rt", "coarse", "comb"])
def test_inference_copy_folds_batchnorm_without_changing_outputs(cfg):
    m = trained_tiny(cfg)
    f = inference_copy(m)
    assert not any(isinstance(x, torch.nn.BatchNorm2d) for x in f.modules())
    spec = torch.randn(1, 6, TINY.n_freqs, 2) * 0.05
    with torch.no_grad():
        a, sa = m.step(spec, m.init_state(1))
        b, sb = f.step(spec, f.init_state(1))
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    for x, y in zip(sa, sb, strict=True):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("which", ["exported", "exported_coarse", "exported_comb"])
def test_eager_torchscript_onnx_parity_over_20_steps(which, request):
    """Every K from 1 to 16 in one graph; coarse: K not a multiple of R at every phase."""
    model, paths = request.getfixturevalue(which)
    names = model.state_names()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated, works
        scripted = torch.jit.load(str(paths["torchscript"]))
    sess = ort.InferenceSession(str(paths["onnx"]), providers=["CPUExecutionProvider"])
    g = torch.Generator().manual_seed(1)
    ks = [4, 1, 3, 8, 16, 2, 5, 4, 4, 7, 1, 1, 6, 4, 9, 2, 3, 4, 10, 4]  # dynamic K
    s_eager = model.init_state(2)
    s_ts = scripted.init_state(2)
    s_ort = [s.numpy() for s in model.init_state(2)]
    for k in ks:
        spec = torch.randn(2, k, TINY.n_freqs, 2, generator=g) * 0.05
        with torch.no_grad():
            m_eager, s_eager = model.step(spec, s_eager)
            m_ts, s_ts = scripted(spec, s_ts)
        got = sess.run(None, {"spec": spec.numpy(), **dict(zip(names, s_ort, strict=True))})
        m_ort, s_ort = got[0], got[1:]
        np.testing.assert_allclose(m_ts.numpy(), m_eager.numpy(), atol=1e-4, rtol=0)
        np.testing.assert_allclose(m_ort, m_eager.numpy(), atol=1e-4, rtol=0)
        for e, t, o in zip(s_eager, s_ts, s_ort, strict=True):
            np.testing.assert_allclose(t.numpy(), e.numpy(), atol=1e-4, rtol=0)
            np.testing.assert_allclose(o, e.numpy(), atol=1e-4, rtol=0)


def test_onnx_graph_names_axes_and_metadata(exported):
    model, paths = exported
    proto = onnx.load(str(paths["onnx"]))
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    names = model.state_names()
    assert [i.name for i in proto.graph.input] == ["spec"] + names
    assert [o.name for o in proto.graph.output] == ["mask"] + [n + "_out" for n in names]
    spec_dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert spec_dims[0].dim_param and spec_dims[1].dim_param  # batch and K are dynamic
    meta = json.loads(paths["json"].read_text())
    embedded = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(embedded["rtdenoise"]) == meta
    assert meta["state_names"] == names
    assert meta["state_shapes"] == [list(s.shape[1:]) for s in model.init_state(1)]
    assert meta["block_frames"] == 4 and meta["lookahead_frames"] == 0
    assert meta["stft"]["hop"] == 31 and meta["stft"]["n_freqs"] == 260
    assert ModelConfig.from_dict(meta["model_config"]) == model.cfg


def test_cli_export_and_user_errors(tmp_path, capsys):
    m = trained_tiny()
    save_checkpoint(tmp_path / "m.pt", m)
    assert cli.main(["export", str(tmp_path / "m.pt"), "-o", str(tmp_path / "o")]) == 0
    for suffix in (".onnx", ".jit.pt", ".json", ".pt"):
        assert (tmp_path / "o" / f"default{suffix}").is_file()
    assert cli.main(["export", str(tmp_path / "missing.pt"), "-o", str(tmp_path / "o")]) == 2
    seed = DenoiserNet(preset_config("seed", widths=(2, 2, 2, 2, 4), code_dim=4))
    save_checkpoint(tmp_path / "seed.pt", seed)
    assert cli.main(["export", str(tmp_path / "seed.pt"), "-o", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert err.count("rtdenoise: error:") == 2 and "Traceback" not in err


@pytest.mark.parametrize("kind", ["onnx", "torchscript", "torch"])
def test_the_default_attenuation_limit_travels_with_every_format(exported, kind):
    """So do the pitch post-filter's strength and the streamer that applies it."""
    from rtdenoise.backends import load_backend
    from rtdenoise.processor import MaskProcessor
    from rtdenoise.streamer import Streamer

    _, paths = exported
    path = paths["checkpoint" if kind == "torch" else kind]
    proc = MaskProcessor(load_backend(kind, str(path), None, 1))
    assert proc.atten_lim_db == 9.0
    assert proc.pitch_postfilter == 0.25
    assert Streamer(proc)._core.postfilter.strength == 0.25


@pytest.mark.parametrize("backend", ["onnx", "torchscript", "torch"])
def test_framing_travels_with_the_model(tmp_path, backend):
    """A model trained for the low-latency framing carries it through export: every backend's
    processor runs on it, the engine's latency is the framing's, the streamed output equals the
    offline model through that framing, and any other framing is refused."""
    from rtdenoise.backends import load_backend
    from rtdenoise.errors import UserError
    from rtdenoise.processor import MaskProcessor
    from rtdenoise.stft import StftConfig, istft, stft
    from rtdenoise.streamer import Streamer

    low = StftConfig(window="hann^3", synthesis_len=124)
    cfg = preset_config(**{**TINY.to_dict(), "stft_window": "hann^3", "stft_synthesis_len": 124})
    model = trained_tiny(cfg)
    save_checkpoint(tmp_path / "low.pt", model)
    paths = export_all(tmp_path / "low.pt", tmp_path / "out", name="low")
    meta = json.loads(paths["json"].read_text())
    assert meta["stft"]["synthesis_len"] == 124 and meta["stft"]["latency_samples"] == 123
    path = {
        "onnx": paths["onnx"],
        "torchscript": paths["torchscript"],
        "torch": tmp_path / "low.pt",
    }
    proc = MaskProcessor(load_backend(backend, path[backend], block_frames=2))
    assert proc.stft == low
    s = Streamer(proc)
    assert s.latency_samples == low.latency(2) == 123 + 31
    x = (np.random.default_rng(0).standard_normal(4000) * 0.1).astype(np.float32)
    y = s.process(x)
    z = stft(x, low)
    spec = torch.from_numpy(np.stack([z.real, z.imag], -1)[None].astype(np.float32))
    with torch.no_grad():
        mask = model(spec)[0][0].numpy()
    ref = istft(z * mask, low, length=len(x))
    np.testing.assert_allclose(y, ref, atol=2e-4)
    with pytest.raises(UserError, match="trained for the STFT framing"):
        Streamer(proc, stft=StftConfig())
