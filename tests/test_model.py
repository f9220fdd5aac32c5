"""Mask network: streaming == offline, causality, purity, lookahead, presets, checkpoints."""

import dataclasses

import pytest
import torch

from rtdenoise.errors import UserError
from rtdenoise.model import (
    DenoiserNet,
    ModelConfig,
    load_checkpoint,
    model_complexity,
    preset_config,
    save_checkpoint,
)

torch.set_num_threads(1)

# tiny rt: 33 bins, SE window of 12 frames so that tests run past the window
TINY = preset_config(
    "rt",
    n_freqs=33,
    widths=(4, 6, 8),
    bottleneck_dilations=(1, 2),
    context_frames=12,
    codebook_size=16,
    code_dim=8,
)

#: the coarse grid (coarse_grid.py): network every 2nd/4th frame, bins 21..32 in bands of 3
COARSE = {
    r: dataclasses.replace(
        TINY, frame_stride=r, band_split=21, band_width=3, mask_head="affine", bottleneck_groups=2
    )
    for r in (2, 4)
}


def _model(cfg: ModelConfig = TINY, seed: int = 0) -> DenoiserNet:
    torch.manual_seed(seed)
    m = DenoiserNet(cfg)
    # a few training batches: BN statistics and codebook leave their initial values
    m.train()
    for _ in range(3):
        m(_spec(cfg, 2, 30, seed=seed + 1))
    return m.eval()


def _spec(cfg: ModelConfig, b: int, t: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, t, cfg.n_freqs, 2, generator=g) * 0.05


def _stream(m: DenoiserNet, spec: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    state = m.init_state(spec.shape[0])
    out, t = [], 0
    with torch.no_grad():
        for k in sizes:
            mask, state = m.step(spec[:, t : t + k], state)
            out.append(mask)
            t += k
    return torch.cat(out, dim=1)


@pytest.mark.parametrize("k", [1, 3, 8, 24])  # 24: past MAX_BLOCK, cumsum path
def test_streaming_equals_offline(k):
    m = _model()
    spec = _spec(TINY, 2, 48)
    with torch.no_grad():
        offline, _, _ = m(spec)
    online = _stream(m, spec, [k] * (48 // k))
    assert (online - offline).abs().max() <= 1e-5


@pytest.mark.parametrize(
    "cfg, blocks",
    [
        (TINY, 12),
        # coarse grid: 332 frames = 83/166 network frames take the SE cumsum path offline
        (COARSE[4], 40),
        (dataclasses.replace(COARSE[2], bottleneck_groups=1), 40),
        (dataclasses.replace(COARSE[4], harmonic_channel=True), 40),
    ],
    ids=["rt", "coarse4", "coarse2", "coarse4-comb"],
)
def test_streaming_random_chunks_equals_offline(cfg, blocks):
    m = _model(cfg)
    g = torch.Generator().manual_seed(3)
    sizes = torch.randint(1, 17, (blocks,), generator=g).tolist()
    spec = _spec(cfg, 1, sum(sizes))
    with torch.no_grad():
        offline, _, _ = m(spec)
    assert (_stream(m, spec, sizes) - offline).abs().max() <= 1e-5


def test_default_rt_streaming_equals_offline():
    cfg = ModelConfig()
    m = DenoiserNet(cfg).eval()
    spec = _spec(cfg, 1, 300)  # past the 260-frame SE window; offline takes the cumsum path
    with torch.no_grad():
        offline, _, _ = m(spec)
    assert (_stream(m, spec, [4, 1, 8, 7] + [16] * 17 + [8]) - offline).abs().max() <= 1e-5
    assert offline.min() >= 0 and offline.max() <= 1


def test_causal_offline_and_streaming():
    m = _model()
    a = _spec(TINY, 1, 40)
    b = a.clone()
    b[:, 25:] = torch.randn_like(b[:, 25:])  # a different future
    with torch.no_grad():
        ma, _, _ = m(a)
        mb, _, _ = m(b)
    torch.testing.assert_close(ma[:, :25], mb[:, :25], atol=1e-7, rtol=0)
    assert (ma[:, 25:] - mb[:, 25:]).abs().max() > 1e-3  # the future does matter
    sa, sb = _stream(m, a, [5] * 8), _stream(m, b, [5] * 8)
    assert torch.equal(sa[:, :25], sb[:, :25])


def test_lookahead_frames():
    cfg = dataclasses.replace(TINY, lookahead_frames=2)
    m = _model(cfg)
    a = _spec(cfg, 1, 30)
    b = a.clone()
    b[:, 20:] = torch.randn_like(b[:, 20:])
    with torch.no_grad():
        ma, _, _ = m(a)
        mb, _, _ = m(b)
    # mask frame t sees input frames <= t + 2: frames < 18 unchanged, frame 18 changed
    torch.testing.assert_close(ma[:, :18], mb[:, :18], atol=1e-7, rtol=0)
    assert (ma[:, 18] - mb[:, 18]).abs().max() > 1e-4
    # streaming mask frame k of the stream belongs to input frame k - 2
    online = _stream(m, a, [3] * 10)
    assert (online[:, 2:] - ma[:, :28]).abs().max() <= 1e-5


def test_step_is_pure_and_state_matches_names():
    m = _model()
    names = m.state_names()
    state = m.init_state(2)
    assert len(names) == len(state) == len(set(names))
    spec = _spec(TINY, 2, 4)
    with torch.no_grad():
        _, state = m.step(spec, state)
    spec0, state0 = spec.clone(), [s.clone() for s in state]
    with torch.no_grad():
        mask1, new1 = m.step(spec, state)
        mask2, new2 = m.step(spec, state)  # same inputs -> same outputs (no hidden state)
    assert torch.equal(spec, spec0)
    assert all(torch.equal(s, s0) for s, s0 in zip(state, state0, strict=True))
    assert torch.equal(mask1, mask2)
    assert all(torch.equal(x, y) for x, y in zip(new1, new2, strict=True))
    assert [s.shape for s in new1] == [s.shape for s in state]


def test_cached_codes_are_the_quantized_past_frames():
    """The 'codes' state holds codebook rows (quantized latents), not recomputed latents."""
    m = _model()
    state = m.init_state(1)
    with torch.no_grad():
        _, state = m.step(_spec(TINY, 1, 5), state)
    codes = state[m.state_names().index("codes")]  # [1, D, 1, F_b]
    rows = codes.permute(0, 2, 3, 1).reshape(-1, TINY.code_dim)
    cb = m.net.vq.codebook
    assert all((cb == r).all(1).any() for r in rows)


def test_training_forward_outputs():
    m = DenoiserNet(TINY).train()
    spec = _spec(TINY, 2, 30)
    mask, loss, ppl = m(spec)
    assert mask.shape == (2, 30, TINY.n_freqs)
    assert 0 <= float(mask.detach().min()) and float(mask.detach().max()) <= 1
    assert loss.ndim == 0 and float(loss.detach()) >= 0
    assert 1.0 <= float(ppl.detach()) <= TINY.codebook_size
    (mask.mean() + loss).backward()
    assert all(p.grad is not None for p in m.net.enc.parameters())


def test_feature_stats_change_the_features():
    m = _model()
    spec = _spec(TINY, 1, 6)
    raw = m.raw_features(spec)
    m.set_feature_stats(raw.mean((0, 1)), raw.std((0, 1)))
    f = m.features(spec)[:, 0]
    torch.testing.assert_close(f.mean((0, 1)), torch.zeros(TINY.n_freqs), atol=1e-4, rtol=0)


def test_checkpoint_round_trip(tmp_path):
    m = _model()
    m.set_feature_stats(torch.full((33,), -9.0), torch.full((33,), 2.5))
    path = tmp_path / "m.pt"
    save_checkpoint(path, m, step=7)
    m2 = load_checkpoint(path)
    assert m2.cfg == m.cfg and m2.extra == {"step": 7}
    assert not m2.training
    spec = _spec(TINY, 1, 20)
    with torch.no_grad():
        assert torch.equal(m(spec)[0], m2(spec)[0])
    torch.testing.assert_close(m2.net.vq.code_sqnorm, m.net.vq.codebook.pow(2).sum(1))


def test_load_checkpoint_user_errors(tmp_path):
    with pytest.raises(UserError):
        load_checkpoint(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    torch.save({"weights": 1}, bad)
    with pytest.raises(UserError):
        load_checkpoint(bad)


def test_config_dict_round_trip():
    cfg = preset_config("seed", dropout=0.0)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    # lists (e.g. from JSON) become tuples again
    d = {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.to_dict().items()}
    assert ModelConfig.from_dict(d) == cfg
    with pytest.raises(ValueError):
        preset_config("huge")


def test_seed_preset_overlap_adds_windows():
    cfg = preset_config(
        "seed",
        n_freqs=33,
        widths=(2, 4, 4, 4, 8),
        codebook_size=8,
        code_dim=4,
        window_frames=32,
        window_hop=16,
        dropout=0.0,
    )
    torch.manual_seed(0)
    m = DenoiserNet(cfg).eval()
    spec = _spec(cfg, 1, 70)
    with torch.no_grad():
        mask, _, _ = m(spec)
        # one window alone equals the first frames where only that window contributes
        first, _, _ = m(spec[:, :32])
        win, _, _ = m.net.window(m.features(spec[:, :32]))
    assert mask.shape == (1, 70, 33)
    torch.testing.assert_close(first, torch.sigmoid(win[:, 0]), atol=1e-6, rtol=0)
    torch.testing.assert_close(mask[:, :16], first[:, :16], atol=1e-6, rtol=0)
    with pytest.raises(RuntimeError):
        m.step(spec[:, :4], m.init_state(1))


def test_rt_complexity_fits_the_realtime_budget():
    c = model_complexity(ModelConfig())
    assert c["params"] < 200_000
    assert c["macs_per_frame"] < 1.0e6  # ~260 MMAC/s: the budget of one core at RTF 0.04
    torch.testing.assert_close(c["macs_per_second"], c["macs_per_frame"] * 8000 / 31)


def test_load_checkpoint_reads_trainer_resume_files(tmp_path):
    m = _model()
    overrides = {k: list(v) if isinstance(v, tuple) else v for k, v in TINY.to_dict().items()}
    resume = {"model": m.state_dict(), "optim": {}, "step": 12, "config": {"model": overrides}}
    torch.save(resume, tmp_path / "last.pt")
    m2 = load_checkpoint(tmp_path / "last.pt")
    assert m2.cfg == TINY and m2.extra == {"step": 12}
    spec = _spec(TINY, 1, 10)
    with torch.no_grad():
        assert torch.equal(m(spec)[0], m2(spec)[0])
    (tmp_path / "junk.pt").write_bytes(b"\x00garbage")
    with pytest.raises(UserError):
        load_checkpoint(tmp_path / "junk.pt")


# ---------------------------------------------------------------------------- coarse grid
@pytest.mark.parametrize("r", [2, 4])
@pytest.mark.parametrize("k", [1, 2, 3, 4, 7])
def test_coarse_grid_streaming_equals_offline(r, k):
    """Any K, a multiple of R or not: the phase in the R-cycle and the frames since the last
    network frame travel in the state; 40 frames is past the SE window (12 frames = 3 or 6
    network frames)."""
    m = _model(COARSE[r])
    spec = _spec(COARSE[r], 2, 42)
    with torch.no_grad():
        offline, _, _ = m(spec)
    sizes = [k] * (42 // k) + ([42 % k] if 42 % k else [])
    assert (_stream(m, spec, sizes) - offline).abs().max() <= 1e-5


@pytest.mark.parametrize("r", [2, 4])
def test_coarse_grid_is_causal_and_holds_between_network_frames(r):
    """Changing frame 9 leaves every earlier mask unchanged; within its R-cycle it changes only
    its own mask (the held head output applied to its feature) until the next network frame,
    whose R stacked input frames include it."""
    m = _model(COARSE[r])
    a = _spec(COARSE[r], 1, 24)
    b = a.clone()
    b[:, 9] = torch.randn_like(b[:, 9])
    with torch.no_grad():
        ma, _, _ = m(a)
        mb, _, _ = m(b)
    diff = (ma - mb).abs().amax(dim=2)[0]
    nxt = (9 // r + 1) * r  # the next network frame
    assert diff[:9].max() == 0
    assert diff[9] > 1e-4
    assert (diff[10:nxt] == 0).all()
    assert diff[nxt] > 1e-4
    sa, sb = _stream(m, a, [3] * 8), _stream(m, b, [3] * 8)
    assert torch.equal(sa[:, :9], sb[:, :9])


def test_coarse_grid_block_without_network_frame_keeps_the_network_state():
    """K < R at a phase with no network frame: the step runs a placeholder network frame and
    drops it, so every network state is unchanged; only the grid state moves."""
    m = _model(COARSE[4])
    names = m.state_names()
    assert names[-3:] == ["frames", "held", "phase"]
    state = m.init_state(1)
    with torch.no_grad():
        _, state = m.step(_spec(COARSE[4], 1, 5), state)  # frames 0..4: phase 1
        _, new = m.step(_spec(COARSE[4], 1, 2, seed=3), state)  # frames 5, 6: none is 8
    for name, old, cur in zip(names, state, new, strict=True):
        if name in ("frames", "phase"):
            assert not torch.equal(old, cur), name
        else:
            assert torch.equal(old, cur), name
    assert float(new[-1][0, 0]) == 3.0


def test_coarse_grid_config_checks():
    with pytest.raises(ValueError, match="affine"):
        dataclasses.replace(TINY, frame_stride=2)
    with pytest.raises(ValueError, match="multiple"):
        dataclasses.replace(TINY, frame_stride=5, mask_head="affine")
    with pytest.raises(ValueError, match="bands"):
        dataclasses.replace(TINY, band_split=20, band_width=3)
    with pytest.raises(ValueError, match="rt options"):
        preset_config("seed", frame_stride=2, mask_head="affine")
    # the fields travel in checkpoints; a dict without them (an older model) gets the defaults
    d = COARSE[4].to_dict()
    assert ModelConfig.from_dict(d) == COARSE[4]
    old = {k: v for k, v in TINY.to_dict().items() if k not in _NEW_FIELDS}
    assert ModelConfig.from_dict(old) == TINY


_NEW_FIELDS = (
    "frame_stride",
    "band_split",
    "band_width",
    "mask_head",
    "bottleneck_groups",
    "harmonic_channel",
)


def test_coarse_grid_complexity_counts_what_the_step_runs():
    """MACs per frame of ``model_complexity`` (offline count) == hooks counted over streaming
    steps of K = R (one network frame each) + the SE window sums and the head's per-frame
    multiply-add."""
    cfg = COARSE[4]
    m = _model(cfg)
    macs = [0]

    def hook(mod, inp, out):
        k = mod.kernel_size[0] * mod.kernel_size[1]
        if isinstance(mod, torch.nn.ConvTranspose2d):
            macs[0] += inp[0].numel() * mod.out_channels // mod.groups * k
        else:
            macs[0] += out.numel() * mod.in_channels // mod.groups * k

    convs = [x for x in m.modules() if isinstance(x, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    handles = [x.register_forward_hook(hook) for x in convs]
    _stream(m, _spec(cfg, 1, 40), [4] * 10)
    for h in handles:
        h.remove()
    net = m.net
    vq = net.freqs[-1] * cfg.code_dim * cfg.codebook_size
    se = sum(x.fc1.in_channels * x.context for x in m.modules() if hasattr(x, "fc1"))
    per_frame = (macs[0] / 10 + vq + se) / 4 + cfg.n_freqs
    assert model_complexity(cfg)["macs_per_frame"] == pytest.approx(per_frame)


@pytest.mark.parametrize("name", ["default", "lowlat"])
def test_shipped_model_computes_as_exported(name):
    """The coarse-grid options default to the old network: a shipped checkpoint loads with the
    same state layout and complexity as its metadata, and its eager step gives the masks and
    states of the ONNX graph exported before the options existed."""
    import json
    from pathlib import Path

    import numpy as np
    import onnxruntime as ort

    models = Path(__file__).resolve().parent.parent / "rtdenoise" / "models"
    meta = json.loads((models / f"{name}.json").read_text())
    m = load_checkpoint(models / f"{name}.pt")
    assert m.cfg == ModelConfig.from_dict(meta["model_config"])
    assert m.state_names() == meta["state_names"]
    assert [list(s.shape[1:]) for s in m.init_state(1)] == meta["state_shapes"]
    assert model_complexity(m.cfg) == meta["complexity"]
    sess = ort.InferenceSession(str(models / f"{name}.onnx"), providers=["CPUExecutionProvider"])
    spec = _spec(m.cfg, 1, 24, seed=9)
    state = m.init_state(1)
    feeds = [s.numpy() for s in state]
    for t in range(0, 24, 4):
        block = spec[:, t : t + 4]
        with torch.no_grad():
            mask, state = m.step(block, state)
        feed = dict(zip(meta["state_names"], feeds, strict=True))
        got = sess.run(None, {"spec": block.numpy(), **feed})
        for ref, out in zip([mask, *state], got, strict=True):
            np.testing.assert_allclose(out, ref.numpy(), atol=1e-4, rtol=0)
        feeds = got[1:]


def test_cheap_config_costs_at_most_a_quarter_of_the_shipped_model():
    """training/configs/rt_cheap.json: the coarse grid spends less than 1/4 of the shipped
    model's MACs per second of audio (part of the saving went to width)."""
    import json
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    section = json.loads((root / "training" / "configs" / "rt_cheap.json").read_text())["model"]
    cfg = preset_config(**{k: tuple(v) if isinstance(v, list) else v for k, v in section.items()})
    shipped = load_checkpoint(root / "rtdenoise" / "models" / "default.pt").cfg
    cheap, today = model_complexity(cfg), model_complexity(shipped)
    assert cheap["macs_per_second"] <= 0.25 * today["macs_per_second"]
    assert cheap["params"] > today["params"]  # wider
    assert cfg.frame_stride == 4 and cfg.context_frames == 260  # the 1 s SE window
