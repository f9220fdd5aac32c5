"""Weight averaging: one model from the checkpoints of the last part of a run.

Late in a cosine schedule consecutive checkpoints scatter around a minimum; their mean lies
nearer its centre than any one of them (stochastic weight averaging, Izmailov et al. 2018), at
no training cost. Usage::

    python -m training.average runs/x/snaps/*.pt --out runs/x/avg.pt

Inputs are any checkpoints ``load_checkpoint`` reads (trainer resume files ``last.pt``, model
files ``best.pt`` / ``stepN.pt``) of one architecture. Floating-point parameters and buffers
(BatchNorm statistics included) are averaged. The VQ codebook is not, by default: a dead code is
restarted from a random encoder output during training, so code i of two checkpoints may be
unrelated vectors; the codebook (and its training buffers) comes from the last file given
(``--vq mean`` averages it too). Integer buffers (BatchNorm counters) come from the last file.
The output is a model checkpoint (``save_checkpoint``) that ``rtdenoise export`` reads, written
through a temporary file and a rename.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

from rtdenoise.errors import UserError
from rtdenoise.model import DenoiserNet, load_checkpoint, save_checkpoint


def is_vq_key(key: str) -> bool:
    """State-dict entries of the vector quantizer (codebook and its EMA buffers)."""
    return "vq" in key.split(".")


def average_states(states: list[dict], vq: str = "last") -> dict:
    """The mean of state dicts of one architecture: floating-point entries averaged (in float64,
    stored in their own dtype), the rest and, unless ``vq`` is 'mean', the VQ entries from the
    last one."""
    if not states:
        raise UserError("nothing to average")
    if vq not in ("last", "mean"):
        raise ValueError(f"vq must be 'last' or 'mean', got {vq!r}")
    keys = list(states[-1])
    for s in states[:-1]:
        if list(s) != keys or any(s[k].shape != states[-1][k].shape for k in keys):
            raise UserError("checkpoints of different architectures cannot be averaged")
    out = {}
    for key, value in states[-1].items():
        if not value.is_floating_point() or (vq == "last" and is_vq_key(key)):
            out[key] = value.clone()
            continue
        acc = torch.zeros_like(value, dtype=torch.float64)
        for s in states:
            acc += s[key].double()
        out[key] = (acc / len(states)).to(value.dtype)
    return out


def average(models: list[DenoiserNet], vq: str = "last") -> DenoiserNet:
    """``models`` averaged (``average_states``) into the last one, which is returned."""
    if not models:
        raise UserError("nothing to average")
    last = models[-1]
    if any(m.cfg != last.cfg for m in models[:-1]):
        raise UserError("checkpoints of different architectures cannot be averaged")
    # loading refreshes the quantizer's derived buffers (codebook norms)
    last.load_state_dict(average_states([m.state_dict() for m in models], vq))
    return last


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m training.average",
        description="Average the weights of several checkpoints of one run (SWA) into a model "
        "checkpoint for `rtdenoise export`.",
    )
    p.add_argument("checkpoints", nargs="+", type=Path, help="checkpoints, oldest first")
    p.add_argument("--out", type=Path, required=True, help="model checkpoint to write")
    p.add_argument(
        "--vq",
        choices=("last", "mean"),
        default="last",
        help="codebook: from the last checkpoint (default) or averaged",
    )
    args = p.parse_args(argv)
    try:
        models = [load_checkpoint(c) for c in args.checkpoints]
        steps = [m.extra.get("step") for m in models]
        model = average(models, args.vq)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_name(args.out.name + ".tmp")
        save_checkpoint(tmp, model, averaged_steps=steps, vq=args.vq)
        os.replace(tmp, args.out)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"averaged {len(models)} checkpoints (steps {steps}) -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
