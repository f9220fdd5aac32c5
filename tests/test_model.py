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


def test_streaming_random_chunks_equals_offline():
    m = _model()
    g = torch.Generator().manual_seed(3)
    sizes = torch.randint(1, 17, (12,), generator=g).tolist()
    spec = _spec(TINY, 1, sum(sizes))
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
