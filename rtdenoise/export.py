"""Export a checkpoint's streaming step to TorchScript and ONNX.

    rtdenoise export CKPT -o DIR [--name default] [--block-frames 4]

writes, in DIR:

- ``NAME.onnx``: the pure step, opset 17. Inputs ``spec [B, K, 260, 2]`` and one input per state
  tensor (named as ``DenoiserNet.state_names()``); outputs ``mask [B, K, 260]`` and
  ``<state>_out`` per new state. Batch (channels) and K (1..16) are dynamic axes.
- ``NAME.jit.pt``: TorchScript of the same step (``forward(spec, state list)``, ``init_state``).
- ``NAME.json``: metadata (STFT framing, default block, lookahead, state names and shapes, model
  config, complexity); the same JSON is embedded in the ONNX file (``rtdenoise`` property).
- ``NAME.pt``: the checkpoint (weights + config only), for the ``torch`` backend.
- ``NAME.npz``: the folded weights for runtimes that compute the step without the graph
  (``network_frame``: live mode's one-frame calls), loaded with numpy alone.

BatchNorm layers are folded into the preceding convs before export (inference only). After
writing, the ONNX file is checked against the eager model with ONNX Runtime over a few steps.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .errors import UserError
from .model import DenoiserNet, load_checkpoint, model_complexity, save_checkpoint

log = logging.getLogger(__name__)

OPSET = 17
DEFAULT_BLOCK_FRAMES = 4
METADATA_KEY = "rtdenoise"


# ----------------------------------------------------------------------------- inference copy
def _fold(conv: nn.Module, bn: nn.BatchNorm2d, transposed: bool) -> nn.Module:
    """A copy of ``conv`` with ``bn`` (eval statistics) folded into its weight and bias."""
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    shift = bn.bias.detach() - bn.running_mean * scale
    new = copy.deepcopy(conv)
    w = new.weight.detach()
    if transposed:  # [Cin, Cout/groups, kh, kw]
        w = w * scale.reshape(1, -1, 1, 1)
    else:  # [Cout, Cin/groups, kh, kw]
        w = w * scale.reshape(-1, 1, 1, 1)
    bias = shift if conv.bias is None else conv.bias.detach() * scale + shift
    new.weight = nn.Parameter(w)
    new.bias = nn.Parameter(bias)
    return new


def inference_copy(model: DenoiserNet) -> DenoiserNet:
    """Eval-mode deep copy with every BatchNorm folded into its conv (same outputs)."""
    m = copy.deepcopy(model).eval()
    for mod in m.modules():
        conv = getattr(mod, "conv", None)
        norm = getattr(mod, "norm", None)
        if isinstance(norm, nn.BatchNorm2d) and isinstance(conv, (nn.Conv2d, nn.ConvTranspose2d)):
            mod.conv = _fold(conv, norm, isinstance(conv, nn.ConvTranspose2d))
            mod.norm = nn.Identity()
    for p in m.parameters():
        p.requires_grad_(False)
    return m


# ----------------------------------------------------------------------------- step modules
class StreamingStep(nn.Module):
    """TorchScript-able step: ``forward(spec [B, K, F, 2], state) -> (mask [B, K, F], state)``."""

    def __init__(self, model: DenoiserNet) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, spec: torch.Tensor, state: list[torch.Tensor], pitch: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return self.model.step(spec, state, pitch)

    @torch.jit.export
    def init_state(self, batch: int) -> list[torch.Tensor]:
        return self.model.init_state(batch)


class _FlatStep(nn.Module):
    """ONNX wrapper with flat tensors: ``(spec, *state) -> (mask, *new_state)``; for a model
    with the pitch channel ``(spec, pitch, *state)``, pitch ``[B, K, F_c]`` (``pitch_frame``)."""

    def __init__(self, model: DenoiserNet) -> None:
        super().__init__()
        self.model = model
        self.pitch = bool(model.cfg.pitch_channel)

    def forward(self, spec: torch.Tensor, *rest: torch.Tensor) -> tuple[torch.Tensor, ...]:
        pitch, state = (rest[0], rest[1:]) if self.pitch else (None, rest)
        mask, new = self.model.step(spec, list(state), pitch)
        return (mask, *new)


def graph_inputs(model: DenoiserNet) -> list[str]:
    """The step graph's inputs before its states: the spectrum (and the pitch rows)."""
    return ["spec", "pitch"] if model.cfg.pitch_channel else ["spec"]


def _pitch_rows(model: DenoiserNet, k: int, g: torch.Generator | None = None) -> torch.Tensor:
    n_grid = model.net.bands.n_bins
    if g is None:
        return torch.zeros(1, k, n_grid)
    return torch.rand(1, k, n_grid, generator=g) * 2 - 1


def output_names(state_names: list[str]) -> list[str]:
    return ["mask"] + [f"{n}_out" for n in state_names]


def metadata(
    model: DenoiserNet,
    block_frames: int = DEFAULT_BLOCK_FRAMES,
    atten_lim_db: float | None = None,
    pitch_postfilter: float | None = None,
) -> dict:
    """What a runtime needs besides the graph: framing, block, lookahead, states, config, and
    the default attenuation limit (``atten_lim_db``) and pitch post-filter strength
    (``pitch_postfilter``), where chosen for this model."""
    stft = model.cfg.stft
    names = model.state_names()
    shapes = [list(s.shape[1:]) for s in model.init_state(1)]
    return {
        "format": "rtdenoise-step",
        "version": 1,
        "stft": {
            **stft.to_dict(),
            "hop": stft.hop,
            "n_freqs": stft.n_freqs,
            "latency_samples": stft.latency_samples,
        },
        "block_frames": int(block_frames),
        **({} if atten_lim_db is None else {"atten_lim_db": float(atten_lim_db)}),
        **({} if pitch_postfilter is None else {"pitch_postfilter": float(pitch_postfilter)}),
        "lookahead_frames": int(model.cfg.lookahead_frames),
        "inputs": ["spec"] + names,
        "outputs": output_names(names),
        "state_names": names,
        "state_shapes": shapes,  # per stream, without the leading batch (channels) axis
        "model_config": model.cfg.to_dict(),
        # the normalisation of the features, for runtimes that compute some frames without
        # the graph (``held_frames``: a coarse frame rate's in-between one-frame calls;
        # ``network_frame``: the one-frame calls that run the network)
        "features": _feature_stats(model),
        "complexity": model_complexity(model.cfg),
        "opset": OPSET,
    }


def _feature_stats(model: DenoiserNet) -> dict[str, list[float]]:
    return {
        "mean": [float(v) for v in model.feat_mean.detach().cpu()],
        "std": [float(v) for v in model.feat_std.detach().cpu()],
    }


# ----------------------------------------------------------------------------- exporters
def write_weights(model: DenoiserNet, path: str | Path) -> Path:
    """The folded model's tensors (torch layout, ``state_dict`` names) as an ``.npz`` for the
    torch-free compiled step (``network_frame``); the EMA training buffers are left out."""
    path = Path(path)
    arrays = {
        k: v.detach().cpu().numpy()
        for k, v in model.state_dict().items()
        if v.is_floating_point() and ".ema_" not in k
    }
    comb = getattr(model.net, "harmonic", None)
    if comb is not None:  # its tables are buffers rebuilt from the config, not in state_dict
        for k, v in comb.named_buffers():
            arrays[f"net.harmonic.{k}"] = v.detach().cpu().numpy()
        arrays["net.harmonic.consts"] = np.array([comb.beta, comb.noise_score], np.float32)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)
    return path


def export_torchscript(model: DenoiserNet, path: str | Path, meta: dict | None = None) -> Path:
    """Script the step of an eval-mode model and save it (metadata as an extra file)."""
    extra = {"metadata.json": json.dumps(meta or {})}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # deprecated in 2.13, still works
        scripted = torch.jit.script(StreamingStep(model))
        torch.jit.save(scripted, str(path), _extra_files=extra)
    return Path(path)


def export_onnx(
    model: DenoiserNet, path: str | Path, meta: dict | None = None, opset: int = OPSET
) -> Path:
    """Export the flat step to ONNX with dynamic batch and K; metadata in ``metadata_props``."""
    import onnx

    names = model.state_names()
    outs = output_names(names)
    state = model.init_state(1)
    spec = torch.zeros(1, DEFAULT_BLOCK_FRAMES, model.cfg.n_freqs, 2)
    inputs = graph_inputs(model)
    first: tuple[torch.Tensor, ...] = (spec,)
    if "pitch" in inputs:
        first = (spec, _pitch_rows(model, DEFAULT_BLOCK_FRAMES))
    step = _FlatStep(model)
    dynamic = {n: {0: "batch", 1: "frames"} for n in inputs + ["mask"]}
    for n in names + outs[1:]:
        dynamic[n] = {0: "batch"}
    path = Path(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:  # the TorchScript-based exporter handles the list-of-states graph directly
            torch.onnx.export(
                step,
                (*first, *state),
                str(path),
                dynamo=False,
                opset_version=opset,
                input_names=inputs + names,
                output_names=outs,
                dynamic_axes=dynamic,
                do_constant_folding=True,
            )
        except TypeError:  # a torch without the legacy exporter: use torch.export
            log.info("legacy ONNX exporter unavailable, using the dynamo exporter")
            batch = torch.export.Dim("batch", min=1, max=64)
            frames = torch.export.Dim("frames", min=1, max=64)
            shapes = tuple({0: batch, 1: frames} for _ in inputs) + tuple({0: batch} for _ in names)
            torch.onnx.export(
                step,
                (*first, *state),
                str(path),
                dynamo=True,
                opset_version=max(opset, 18),
                input_names=inputs + names,
                output_names=outs,
                dynamic_shapes=shapes,
                external_data=False,
            )
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    if meta is not None:
        entry = proto.metadata_props.add()
        entry.key = METADATA_KEY
        entry.value = json.dumps(meta)
        onnx.save(proto, str(path))
    return path


def check_onnx(model: DenoiserNet, path: str | Path, steps: int = 20, k: int = 4) -> float:
    """Max abs difference (masks and states) between eager and ONNX Runtime over ``steps``."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    names = model.state_names()
    g = torch.Generator().manual_seed(0)
    state = model.init_state(1)
    feeds_state = [s.numpy() for s in state]
    worst = 0.0
    with torch.no_grad():
        for _ in range(steps):
            spec = torch.randn(1, k, model.cfg.n_freqs, 2, generator=g) * 0.05
            pitch = _pitch_rows(model, k, g) if model.cfg.pitch_channel else None
            mask, state = model.step(spec, state, pitch)
            feeds = {"spec": spec.numpy(), **dict(zip(names, feeds_state, strict=True))}
            if pitch is not None:
                feeds["pitch"] = pitch.numpy()
            got = sess.run(None, feeds)
            for ref, out in zip([mask, *state], got, strict=True):
                worst = max(worst, float(np.abs(ref.numpy() - out).max()))
            feeds_state = got[1:]
    return worst


def export_all(
    ckpt: str | Path,
    out_dir: str | Path,
    name: str = "default",
    block_frames: int = DEFAULT_BLOCK_FRAMES,
    torchscript: bool = True,
    atten_lim_db: float | None = None,
    pitch_postfilter: float | None = None,
) -> dict[str, Path]:
    """Checkpoint -> ``NAME.{onnx,jit.pt,json,pt}`` in out_dir; returns the written paths."""
    model = load_checkpoint(ckpt)
    if not model.cfg.causal:
        raise UserError(f"preset {model.cfg.preset!r} is offline only; export needs 'rt'")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fused = inference_copy(model)
    meta = metadata(fused, block_frames, atten_lim_db, pitch_postfilter)
    paths = {
        "onnx": out / f"{name}.onnx",
        "json": out / f"{name}.json",
        "checkpoint": out / f"{name}.pt",
        "weights": out / f"{name}.npz",
    }
    t0 = time.perf_counter()
    export_onnx(fused, paths["onnx"], meta)
    err = check_onnx(model, paths["onnx"])
    if err > 1e-4:
        raise RuntimeError(f"ONNX export differs from the eager model by {err:.2e}")
    log.info("ONNX: %s (max diff vs eager %.1e)", paths["onnx"], err)
    write_weights(fused, paths["weights"])
    if torchscript:
        paths["torchscript"] = out / f"{name}.jit.pt"
        export_torchscript(fused, paths["torchscript"], meta)
    paths["json"].write_text(json.dumps(meta, indent=2) + "\n")
    if Path(ckpt).resolve() != paths["checkpoint"].resolve():
        save_checkpoint(paths["checkpoint"], model)
    log.info("exported in %.1f s", time.perf_counter() - t0)
    return paths


# ----------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "checkpoint", help="checkpoint of an rt model (best.pt, or a resume file last.pt)"
    )
    parser.add_argument("-o", "--out-dir", required=True, help="output directory")
    parser.add_argument("--name", default="default", help="file stem (default: %(default)s)")
    parser.add_argument(
        "--block-frames",
        type=int,
        default=DEFAULT_BLOCK_FRAMES,
        help="default frames per call stored in the metadata (default: %(default)s)",
    )
    parser.add_argument(
        "--atten-lim-db",
        type=float,
        metavar="DB",
        help="default attenuation limit stored in the metadata, used when a user gives none "
        "(choose it on validation data; default: no limit)",
    )
    parser.add_argument(
        "--pitch-postfilter",
        type=float,
        metavar="S",
        help="default strength 0..1 of the pitch comb on the output, stored in the metadata "
        "(choose it on validation data; default: none, i.e. off)",
    )
    parser.add_argument("--no-torchscript", action="store_true", help="ONNX only")
    parser.add_argument("-v", "--verbose", action="count", default=0)


def run(args: argparse.Namespace) -> int:
    if not 1 <= args.block_frames <= 16:
        raise UserError(f"--block-frames must be in 1..16, got {args.block_frames}")
    if args.atten_lim_db is not None and not args.atten_lim_db >= 0:
        raise UserError(f"--atten-lim-db must be >= 0, got {args.atten_lim_db}")
    pf = args.pitch_postfilter
    if pf is not None and not 0.0 <= pf <= 1.0:
        raise UserError(f"--pitch-postfilter must be between 0 and 1, got {pf}")
    paths = export_all(
        args.checkpoint,
        args.out_dir,
        args.name,
        args.block_frames,
        torchscript=not args.no_torchscript,
        atten_lim_db=args.atten_lim_db,
        pitch_postfilter=pf,
    )
    for kind, p in paths.items():
        print(f"{kind}: {p}")
    return 0
