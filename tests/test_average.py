"""Weight averaging (training/average.py): the mean of the weights, the codebook of the last
checkpoint unless asked, one architecture only, an exportable checkpoint written atomically."""

import dataclasses

import pytest
import torch

from rtdenoise.errors import UserError
from rtdenoise.model import DenoiserNet, load_checkpoint, save_checkpoint
from tests.test_widen import CHEAP, _spec, _trained
from training import average as A

torch.set_num_threads(1)


def _moved(m: DenoiserNet, seed: int) -> DenoiserNet:
    """A copy of ``m`` whose floating-point state (codebook included) moved."""
    c = DenoiserNet(m.cfg)
    c.load_state_dict(m.state_dict())
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for k, t in c.state_dict().items():
            if k.endswith("running_var"):  # stays positive
                t.mul_(1 + 0.1 * torch.rand(t.shape, generator=g))
            elif t.is_floating_point():
                t.add_(0.1 * torch.randn(t.shape, generator=g))
    c.net.vq.refresh()
    return c.eval()


def test_the_mean_of_the_weights_and_the_last_codebook():
    a = _trained()
    b, c = _moved(a, 1), _moved(a, 2)
    sa, sb, sc = ({k: v.clone() for k, v in m.state_dict().items()} for m in (a, b, c))
    out = A.average([a, b, c]).state_dict()
    w = "net.enc.0.conv.block.conv.weight"
    torch.testing.assert_close(out[w], (sa[w] + sb[w] + sc[w]) / 3)
    rm = next(k for k in out if k.endswith("running_var"))  # BatchNorm statistics: averaged
    torch.testing.assert_close(out[rm], (sa[rm] + sb[rm] + sc[rm]) / 3)
    assert torch.equal(out["net.vq.codebook"], sc["net.vq.codebook"])  # the last file's codes
    # the derived squared norms follow the codebook it holds, so inference picks the right codes
    torch.testing.assert_close(out["net.vq.code_sqnorm"], sc["net.vq.codebook"].pow(2).sum(1))


def test_vq_mean_averages_the_codebook_too():
    a = _trained()
    b = _moved(a, 1)
    ca, cb = a.net.vq.codebook.clone(), b.net.vq.codebook.clone()
    out = A.average([a, b], vq="mean")
    torch.testing.assert_close(out.net.vq.codebook, (ca + cb) / 2)
    torch.testing.assert_close(out.net.vq.code_sqnorm, out.net.vq.codebook.pow(2).sum(1))


def test_averaging_copies_of_one_model_changes_nothing():
    a = _trained()
    spec = _spec(2, 40)
    with torch.no_grad():
        ref = a(spec)[0]
        copies = [_moved(a, 0) for _ in range(2)]  # same seed: the same moved weights
        moved_ref = copies[0](spec)[0]
        torch.testing.assert_close(A.average(copies)(spec)[0], moved_ref, atol=1e-6, rtol=0)
    assert not torch.allclose(moved_ref, ref)


def test_different_architectures_are_refused():
    a = _trained()
    torch.manual_seed(0)
    other = DenoiserNet(dataclasses.replace(CHEAP, widths=(6, 9, 13))).eval()
    with pytest.raises(UserError, match="different architectures"):
        A.average([a, other])


def test_cli_writes_an_exportable_checkpoint(tmp_path, capsys):
    a = _trained()
    paths = []
    for i, m in enumerate((a, _moved(a, 1))):
        paths.append(tmp_path / f"s{i}.pt")
        save_checkpoint(paths[-1], m, step=100 * (i + 1))
    out = tmp_path / "sub" / "avg.pt"
    assert A.main([*map(str, paths), "--out", str(out)]) == 0
    assert "steps [100, 200]" in capsys.readouterr().out
    m = load_checkpoint(out)
    assert m.extra["averaged_steps"] == [100, 200]
    assert not list(out.parent.glob("*.tmp"))
    spec = _spec(1, 24)
    with torch.no_grad():  # the streaming step (what export traces) equals the offline forward
        state, parts = m.init_state(1), []
        for t in range(0, 24, 4):
            mask, state = m.step(spec[:, t : t + 4], state)
            parts.append(mask)
        torch.testing.assert_close(torch.cat(parts, 1), m(spec)[0], atol=1e-5, rtol=0)
    assert A.main([str(tmp_path / "missing.pt"), "--out", str(out)]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
