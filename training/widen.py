"""Widen a trained ``rt`` network without changing what it computes (Net2WiderNet).

``python -m training.widen rtdenoise/models/lowlat.pt --widths 16 24 32 48 64 --out
runs/wide_init.pt`` writes a checkpoint of the same network with more channels per U-Net stage,
whose output equals the original's (to float rounding), for ``train.init`` of a run that goes on
training with the extra capacity instead of starting the wider network from scratch (Chen,
Goodfellow & Shlens 2016, "Net2Net").

Every new channel copies an existing one of its stage (incoming weights, BatchNorm parameters
and statistics, SE gain); every layer that reads a copied channel splits that channel's outgoing
weight among its copies. The split fractions are random per weight and sum to one (``jitter``),
so the copies get different gradients and drift apart in training, while the sum, and so the
function, stays exact. SE hidden layers grow the same way. The VQ bottleneck (code dimension,
codebook) and the input and head layouts are unchanged.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path

import torch

from rtdenoise.errors import UserError
from rtdenoise.model import DenoiserNet, load_checkpoint, save_checkpoint

log = logging.getLogger(__name__)


def _grow_map(old: int, new: int, gen: torch.Generator) -> torch.Tensor:
    """Index map of a widened channel space: the old channels, then random copies of them."""
    if new < old:
        raise UserError(f"widths can only grow: {old} -> {new}")
    extra = torch.randint(0, old, (new - old,), generator=gen)
    return torch.cat([torch.arange(old), extra])


def _split_in(t: torch.Tensor, g: torch.Tensor, dim: int, jitter: float, gen: torch.Generator):
    """Read the widened channels ``g`` along ``dim``: each old channel's weight is shared among
    its copies by random fractions (per weight) that sum to one."""
    t = t.index_select(dim, g)
    frac = 1.0 + jitter * (2 * torch.rand(t.shape, generator=gen, dtype=t.dtype) - 1)
    total = torch.zeros_like(frac).index_add_(dim, g, frac)  # per old channel (first len(old))
    return t * frac / total.index_select(dim, g)


def widen(model: DenoiserNet, widths: list[int], jitter: float = 0.3, seed: int = 0):
    """A ``DenoiserNet`` with ``widths`` channels per stage computing what ``model`` does."""
    cfg = model.cfg
    if not cfg.causal:
        raise UserError("only the rt network can be widened")
    if len(widths) != len(cfg.widths):
        raise UserError(f"need {len(cfg.widths)} widths, got {len(widths)}")
    if cfg.bottleneck_groups != 1:
        raise UserError("widening a grouped bottleneck is not supported")
    new_cfg = dataclasses.replace(cfg, widths=tuple(int(w) for w in widths))
    wide = DenoiserNet(new_cfg)
    gen = torch.Generator().manual_seed(seed)
    old_sd = model.state_dict()
    sd = dict(old_sd)  # unchanged: feature statistics, VQ, input and head layouts
    old, new = model.net, wide.net
    n = len(cfg.widths)

    enc = [_grow_map(a, b, gen) for a, b in zip(cfg.widths, widths, strict=True)]
    post = _grow_map(cfg.widths[-1], widths[-1], gen)
    dec_old = [cfg.widths[i - 1] if i > 0 else cfg.widths[0] for i in range(n - 1, -1, -1)]
    dec_new = [widths[i - 1] if i > 0 else widths[0] for i in range(n - 1, -1, -1)]
    dec = [_grow_map(a, b, gen) for a, b in zip(dec_old, dec_new, strict=True)]
    # the head also reads the network's raw input channels (the stacked frames, and the comb or
    # pitch channel where the model has one), unchanged by widening
    ident_in = torch.arange(old_sd["net.out.weight"].shape[1] - cfg.widths[0])

    def cat(*maps: torch.Tensor, sizes: list[int]) -> torch.Tensor:
        off, out = 0, []
        for m, s in zip(maps, sizes, strict=True):
            out.append(m + off)
            off += s
        return torch.cat(out)

    def norm(prefix: str, g: torch.Tensor) -> None:
        for k in ("weight", "bias", "running_mean", "running_var"):
            sd[f"{prefix}.{k}"] = old_sd[f"{prefix}.{k}"].index_select(0, g)

    def conv(key: str, g_out, g_in, transposed: bool = False) -> None:
        t = old_sd[key]
        od, idim = (1, 0) if transposed else (0, 1)
        if g_out is not None:
            t = t.index_select(od, g_out)
        if g_in is not None:
            t = _split_in(t, g_in, idim, jitter, gen)
        sd[key] = t

    def se(prefix: str, old_se, new_se, g: torch.Tensor) -> None:
        h = _grow_map(old_se.fc1.out_channels, new_se.fc1.out_channels, gen)
        conv(f"{prefix}.fc1.weight", h, g)
        sd[f"{prefix}.fc1.bias"] = old_sd[f"{prefix}.fc1.bias"].index_select(0, h)
        conv(f"{prefix}.fc2.weight", g, h)
        sd[f"{prefix}.fc2.bias"] = old_sd[f"{prefix}.fc2.bias"].index_select(0, g)

    for i in range(n):
        p = f"net.enc.{i}"
        conv(f"{p}.conv.block.conv.weight", enc[i], enc[i - 1] if i else None)
        norm(f"{p}.conv.block.norm", enc[i])
        se(f"{p}.se", old.enc[i].se, new.enc[i].se, enc[i])
    for j in range(len(old.mid)):
        p = f"net.mid.{j}.block"
        conv(f"{p}.conv.weight", enc[-1], enc[-1])
        norm(f"{p}.norm", enc[-1])
    se("net.mid_se", old.mid_se, new.mid_se, enc[-1])
    conv("net.pre_vq.weight", None, enc[-1])
    conv("net.post_vq.block.conv.weight", post, None)
    norm("net.post_vq.block.norm", post)
    prev, prev_old = post, cfg.widths[-1]
    for k in range(n):
        i = n - 1 - k
        g_in = cat(prev, enc[i], sizes=[prev_old, cfg.widths[i]])
        conv(f"net.dec.{k}.conv.weight", dec[k], g_in, transposed=True)
        norm(f"net.dec.{k}.norm", dec[k])
        se(f"net.dec.{k}.se", old.dec[k].se, new.dec[k].se, dec[k])
        prev, prev_old = dec[k], dec_old[k]
    conv("net.out.weight", None, cat(prev, ident_in, sizes=[prev_old, len(ident_in)]))

    wide.load_state_dict(sd, strict=True)
    return wide.eval()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m training.widen",
        description="Widen a trained rt network's stages without changing its output "
        "(Net2Net); the result is a train.init for a wider run.",
    )
    ap.add_argument("checkpoint", type=Path, help="a model checkpoint (.pt) of the rt network")
    ap.add_argument("--widths", type=int, nargs="+", required=True, help="new channels per stage")
    ap.add_argument("--out", type=Path, required=True, help="checkpoint to write")
    ap.add_argument("--jitter", type=float, default=0.3, help="spread of the weight splits")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        model = load_checkpoint(args.checkpoint)
        wide = widen(model, args.widths, args.jitter, args.seed)
        spec = torch.randn(2, 300, model.cfg.n_freqs, 2, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            err = (wide(spec)[0] - model(spec)[0]).abs().max().item()
        if err > 1e-4:
            raise UserError(f"widened network differs from the original by {err:.2e}")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_suffix(args.out.suffix + ".tmp")
        save_checkpoint(tmp, wide, widened_from=str(args.checkpoint), widths=args.widths)
        tmp.replace(args.out)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    n_old = sum(p.numel() for p in model.parameters())
    n_new = sum(p.numel() for p in wide.parameters())
    log.info("%s: %d -> %d parameters, max output difference %.1e", args.out, n_old, n_new, err)
    return 0


if __name__ == "__main__":
    sys.exit(main())
