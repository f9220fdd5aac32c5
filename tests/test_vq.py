"""Vector quantizer: exact eval lookup, per-position quantization, EMA, restarts, perplexity."""

import pytest
import torch

from rtdenoise.vq import VectorQuantizer

torch.set_num_threads(1)


def _vq(**kw) -> VectorQuantizer:
    torch.manual_seed(0)
    return VectorQuantizer(codebook_size=kw.pop("n", 16), code_dim=kw.pop("d", 8), **kw)


def test_eval_output_is_codebook_rows_of_nearest_codes():
    vq = _vq().eval()
    z = torch.randn(2, 8, 5, 3)
    q, idx = vq.lookup(z, vq.code_sqnorm)
    flat = z.permute(0, 2, 3, 1).reshape(-1, 8)
    assert torch.equal(q.permute(0, 2, 3, 1).reshape(-1, 8), vq.codebook[idx.flatten()])
    assert torch.equal(vq.quantize(z), q)
    out, loss, ppl = vq(z)
    assert torch.equal(out, q)  # eval forward: no straight-through arithmetic, exact rows
    # the chosen code is the nearest one (true squared distances)
    d = torch.cdist(flat, vq.codebook) ** 2
    chosen = d.gather(1, idx.reshape(-1, 1))[:, 0]
    torch.testing.assert_close(chosen, d.min(1).values, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(loss, 0.25 * torch.mean((z - q) ** 2))


def test_quantizes_each_position_over_channels_independently():
    """Permuting positions permutes the output: no mixing of channels and positions."""
    vq = _vq().eval()
    z = torch.randn(1, 8, 6, 4)
    perm = torch.randperm(6)
    assert torch.equal(vq.quantize(z)[:, :, perm], vq.quantize(z[:, :, perm]))
    # one position alone gives the same code as inside the batch
    assert torch.equal(vq.quantize(z[:, :, 2:3, 1:2]), vq.quantize(z)[:, :, 2:3, 1:2])


def test_straight_through_gradient_is_identity():
    vq = _vq(dead_threshold=0.0).train()
    z = torch.randn(2, 8, 4, 3, requires_grad=True)
    out, _, _ = vq(z)
    g = torch.randn_like(out)
    (out * g).sum().backward()
    torch.testing.assert_close(z.grad, g)


def test_data_init_then_ema_moves_codes_toward_their_cluster_means():
    vq = _vq(decay=0.5, dead_threshold=0.0).train()
    z0 = torch.randn(4, 8, 8, 4)
    vq._data_init(z0)  # what the first training batch does before its EMA update
    rows = z0.permute(0, 2, 3, 1).reshape(-1, 8)
    assert all((rows == c).all(1).any() for c in vq.codebook)
    z = torch.randn(4, 8, 8, 4)
    flat = z.permute(0, 2, 3, 1).reshape(-1, 8)
    before = vq.codebook.clone()
    _, idx = vq.lookup(z, vq.code_sqnorm)
    vq(z)
    idx = idx.flatten()
    for k in idx.unique():
        mean = flat[idx == k].mean(0)
        assert torch.linalg.norm(vq.codebook[k] - mean) < torch.linalg.norm(before[k] - mean)
    torch.testing.assert_close(vq.code_sqnorm, vq.codebook.pow(2).sum(1))


def test_dead_codes_restart_from_encoder_outputs():
    vq = _vq(dead_threshold=0.5).train()
    vq.initted.fill_(True)
    vq.ema_cluster_size.fill_(10.0)
    vq.ema_cluster_size[[3, 7]] = 0.0
    z = torch.randn(2, 8, 4, 4) + 5.0  # far from every code: restarted rows are recognisable
    vq.restart_dead_codes(z.permute(0, 2, 3, 1).reshape(-1, 8))
    rows = z.permute(0, 2, 3, 1).reshape(-1, 8)
    for k in (3, 7):
        assert (rows == vq.codebook[k]).all(1).any()
        assert vq.ema_cluster_size[k] == 1.0
    untouched = [k for k in range(16) if k not in (3, 7)]
    assert (vq.codebook[untouched] - 5.0).abs().min() > 0  # others unchanged (not data rows)
    torch.testing.assert_close(vq.code_sqnorm, vq.codebook.pow(2).sum(1))


def test_perplexity_counts_codebook_usage():
    vq = _vq(n=16).eval()
    # one input per code, exactly at the code: every code used once -> perplexity N
    z = vq.codebook.t().reshape(1, 8, 16, 1)
    _, _, ppl = vq(z)
    torch.testing.assert_close(ppl, torch.tensor(16.0), atol=1e-3, rtol=0)
    _, _, ppl1 = vq(vq.codebook[5].reshape(1, 8, 1, 1).expand(1, 8, 10, 1).contiguous())
    torch.testing.assert_close(ppl1, torch.tensor(1.0), atol=1e-4, rtol=0)


def test_learned_codebook_mode_gets_codebook_loss_and_gradient():
    vq = _vq(ema=False, dead_threshold=0.0).train()
    vq.initted.fill_(True)
    z = torch.randn(2, 8, 4, 3)
    _, loss, _ = vq(z)
    q, _ = vq.lookup(z, vq.code_sqnorm)
    torch.testing.assert_close(loss, 1.25 * torch.mean((z - q.detach()) ** 2))
    loss.backward()
    assert vq.codebook.grad is not None and vq.codebook.grad.abs().sum() > 0
    with torch.no_grad():
        vq.codebook.add_(1.0)
    vq.eval()  # switching to eval refreshes the cached norms
    torch.testing.assert_close(vq.code_sqnorm, vq.codebook.pow(2).sum(1))


@pytest.mark.parametrize("ema", [True, False])
def test_state_dict_round_trip_refreshes_norms(ema):
    a = _vq(ema=ema)
    with torch.no_grad():
        a.codebook.mul_(3.0)
    a.refresh()
    b = _vq(ema=ema)
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(b.code_sqnorm, a.codebook.pow(2).sum(1))
    z = torch.randn(1, 8, 3, 3)
    assert torch.equal(a.eval().quantize(z), b.eval().quantize(z))
