"""Widening a trained network (training/widen.py): the wider network computes the same masks,
offline and streaming, in eval and in training mode, and its copies can drift apart."""

import dataclasses

import pytest
import torch

from rtdenoise.errors import UserError
from rtdenoise.model import DenoiserNet, load_checkpoint, save_checkpoint
from tests.test_model import TINY
from training import widen as W

torch.set_num_threads(1)

#: the shipped network's layout, small: coarse grid, bands, affine head, SE on every stage
CHEAP = dataclasses.replace(TINY, frame_stride=4, band_split=21, band_width=3, mask_head="affine")


def _spec(b: int, t: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, t, CHEAP.n_freqs, 2, generator=g) * 0.05


def _trained(cfg=CHEAP) -> DenoiserNet:
    torch.manual_seed(0)
    m = DenoiserNet(cfg).train()
    for p in m.parameters():  # away from the initial values, so that every weight matters
        p.data.add_(0.3 * torch.randn_like(p))
    for _ in range(3):  # BN statistics and codebook leave their initial values
        m(_spec(2, 40, seed=3))
    return m.eval()


@pytest.mark.parametrize("harmonic", [False, True], ids=["plain", "comb-channel"])
def test_wider_network_computes_the_same_masks_offline_and_streaming(harmonic):
    # the comb channel is one more raw input the head reads beside the stacked frames
    cfg = dataclasses.replace(CHEAP, harmonic_channel=harmonic)
    m = _trained(cfg)
    wide = W.widen(m, [6, 9, 13], jitter=0.3, seed=1)
    assert wide.cfg == dataclasses.replace(cfg, widths=(6, 9, 13))
    assert sum(p.numel() for p in wide.parameters()) > 1.5 * sum(p.numel() for p in m.parameters())
    spec = _spec(2, 64)
    with torch.no_grad():
        ref = m(spec)[0]
        torch.testing.assert_close(wide(spec)[0], ref, atol=1e-5, rtol=0)
        state, out = wide.init_state(2), []
        for t in range(0, 64, 5):
            mask, state = wide.step(spec[:, t : t + 5], state)
            out.append(mask)
    torch.testing.assert_close(torch.cat(out, 1), ref, atol=1e-5, rtol=0)


def test_copies_split_their_weights_unevenly_so_training_separates_them():
    m = _trained()
    wide = W.widen(m, [8, 6, 8], jitter=0.3, seed=1)
    # training mode (batch statistics): still the same output, since copies share statistics
    spec = _spec(2, 40, seed=5)
    m.train(), wide.train()
    torch.testing.assert_close(wide(spec)[0], m(spec)[0], atol=1e-5, rtol=0)
    # stage 0 went 4 -> 8: every new channel copies an old one's incoming weights ...
    src_w, new_w = m.net.enc[0].conv.block.conv.weight, wide.net.enc[0].conv.block.conv.weight
    src = [next(i for i in range(4) if torch.equal(new_w[j], src_w[i])) for j in range(8)]
    # ... and the next conv reads the copies of one channel through different weights that
    # add up to the old one
    w, old = wide.net.enc[1].conv.block.conv.weight, m.net.enc[1].conv.block.conv.weight
    sums = torch.zeros_like(old)
    for j in range(8):
        sums[:, src[j]] += w[:, j]
    torch.testing.assert_close(sums, old)
    for i in set(src):
        copies = [j for j in range(8) if src[j] == i]
        if len(copies) > 1:
            assert not torch.allclose(w[:, copies[0]], w[:, copies[1]])


def test_widen_refuses_narrower_or_mismatched_widths(tmp_path):
    m = _trained()
    with pytest.raises(UserError, match="only grow"):
        W.widen(m, [2, 6, 8])
    with pytest.raises(UserError, match="need 3 widths"):
        W.widen(m, [4, 6])


def test_cli_writes_a_checkpoint_that_loads_and_matches(tmp_path, capsys):
    m = _trained()
    save_checkpoint(tmp_path / "m.pt", m)
    rc = W.main(
        [str(tmp_path / "m.pt"), "--widths", "5", "8", "8", "--out", str(tmp_path / "w.pt")]
    )
    assert rc == 0
    wide = load_checkpoint(tmp_path / "w.pt")
    assert wide.cfg.widths == (5, 8, 8)
    spec = _spec(1, 48)
    with torch.no_grad():
        torch.testing.assert_close(wide(spec)[0], m(spec)[0], atol=1e-5, rtol=0)
    assert not list(tmp_path.glob("*.tmp"))
    rc = W.main(
        [str(tmp_path / "m.pt"), "--widths", "2", "8", "8", "--out", str(tmp_path / "x.pt")]
    )
    assert rc == 2 and "only grow" in capsys.readouterr().err
    assert not (tmp_path / "x.pt").exists()
