"""Model backends for the mask processor: ONNX Runtime (default), TorchScript, torch.

    backend = load_backend("onnx")            # rtdenoise/models/lowlat.onnx (the default)
    backend.reset(channels)
    mask = backend.step(spec_ri)              # float32 [C, K, F, 2] -> float32 [C, K, F]
    mask = backend.step(spec_ri, samples, start)   # a model with the pitch channel

A model with the pitch channel (``ModelConfig.pitch_channel``) also reads each network frame's
correlation with the input one pitch period earlier: the caller passes the 8 kHz input samples
(the analyzer's buffer ``[C, n]``, frame j of the block at ``start + j * hop``, with
``stft.HISTORY`` samples before it) and the backend computes the rows it needs
(``pitch_frame``; ``needs_samples`` says whether it does).

Each backend keeps the streaming state of the model (one stream per channel, the batch axis)
between calls. ``block_frames`` is the K the model was exported for (default 4: latency
123 + 3 * 31 samples = 27 ms at 8 kHz for the low-latency model, 518 + 3 * 31 = 76 ms for the
standard one) and ``lookahead_frames`` its lookahead.

With a coarse frame rate (``frame_stride`` R > 1) the ONNX backend answers one-frame calls that
fall between network frames without running the graph (``held_frames``), and computes the
one-frame calls that run the network with a compiled step (``network_frame``, from the
exported weights sidecar ``NAME.npz``) instead of the graph, whose per-node dispatch costs
~4x the arithmetic on one frame. Blocks of more than one frame (file mode) go frame by frame
through the same two compiled steps where both apply (16-frame blocks: 10.5 against the graph's
12.3 ms of CPU per second of audio, best of 12; the masks equal to 1e-6); else the graph runs.

The ONNX backend imports no torch. It runs with one intra-op thread by default and binds
preallocated inputs and outputs (states ping-pong between two buffer sets), so nothing is
allocated per call once a block size has been seen. The returned mask is a view of a buffer
that the next call overwrites.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from . import held_frames, network_frame
from .errors import UserError
from .held_frames import HeldFrames
from .network_frame import NetworkFrame

if TYPE_CHECKING:
    from .pitch_frame import PitchFrames

log = logging.getLogger(__name__)

MODELS_DIR = Path(__file__).resolve().parent / "models"
#: the shipped models, one per latency mode: file stem in ``rtdenoise/models`` (``default.*`` is
#: the standard-framing model, a name kept from before ``lowlat.*`` became the default)
LATENCY_MODES = {"standard": "default", "low": "lowlat"}
#: the latency mode of every entry point (file, eval, live, the Python API) unless told: the
#: low-latency model is better than the standard one on val2 (issue #12: the only default)
DEFAULT_LATENCY_MODE = "low"
_SUFFIXES = {"onnx": ".onnx", "torchscript": ".jit.pt", "torch": ".pt"}


def shipped_model(kind: str = "onnx", latency_mode: str = DEFAULT_LATENCY_MODE) -> Path:
    """Path of the shipped model for backend ``kind`` and ``latency_mode`` (low, the default:
    the 15.4 ms asymmetric framing, ``lowlat.*``; standard: the design's 64.75 ms framing,
    ``default.*``)."""
    if latency_mode not in LATENCY_MODES:
        raise UserError(f"unknown latency mode {latency_mode!r} (choose from low, standard)")
    return MODELS_DIR / f"{LATENCY_MODES[latency_mode]}{_SUFFIXES[kind]}"


DEFAULT_PATHS = {k: shipped_model(k) for k in _SUFFIXES}
DEFAULT_BLOCK_FRAMES = 4
#: the exported step's SE window matrix covers blocks of up to this many frames
MAX_BLOCK_FRAMES = 16
KINDS = tuple(DEFAULT_PATHS)


class Backend(Protocol):
    block_frames: int
    lookahead_frames: int
    #: whether :meth:`step` needs the input samples (a model with the pitch channel)
    needs_samples: bool

    def reset(self, channels: int) -> None: ...

    def step(
        self, spec_ri: np.ndarray, samples: np.ndarray | None = None, start: int = 0
    ) -> np.ndarray: ...


def pitch_frames(meta: dict, n_freqs: int) -> PitchFrames | None:
    """The pitch rows of an exported model with the pitch channel (None: it has none)."""
    cfg = meta.get("model_config") or {}
    if not cfg.get("pitch_channel", False):
        return None
    from .pitch_frame import PitchFrames  # imported only where needed (it loads scipy)
    from .stft import StftConfig

    split, width = int(cfg.get("band_split", 0)), int(cfg.get("band_width", 1))
    return PitchFrames(StftConfig.from_dict(meta.get("stft", {})), n_freqs, split, width)


def _no_samples() -> ValueError:
    return ValueError("this model has the pitch channel: step() needs the input samples")


def _sidecar_metadata(path: Path) -> dict:
    """``NAME.json`` beside ``NAME.onnx`` / ``NAME.jit.pt`` / ``NAME.pt``, if present."""
    stem = path.name.split(".")[0]
    side = path.with_name(stem + ".json")
    if side.is_file():
        try:
            return json.loads(side.read_text())
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable metadata %s: %s", side, exc)
    return {}


# ============================================================================ ONNX Runtime
class OnnxBackend:
    """ONNX Runtime session over the exported step; torch-free."""

    def __init__(
        self,
        path: str | Path,
        block_frames: int | None = None,
        threads: int = 1,
        compiled_frames: bool = True,
        compiled_blocks: bool = True,
    ) -> None:
        import onnxruntime as ort

        path = Path(path)
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise UserError(f"cannot load ONNX model {path}: {exc}") from exc
        meta = self.session.get_modelmeta().custom_metadata_map.get("rtdenoise")
        self.meta = json.loads(meta) if meta else _sidecar_metadata(path)
        inputs = self.session.get_inputs()
        if not inputs or inputs[0].name != "spec":
            raise UserError(f"{path} is not an rtdenoise step model (first input is not 'spec')")
        self.n_freqs = int(inputs[0].shape[2])
        #: the pitch rows (a model with the pitch channel: graph input 'pitch'), else None
        self.pitch = pitch_frames(self.meta, self.n_freqs)
        if (self.pitch is not None) != (len(inputs) > 1 and inputs[1].name == "pitch"):
            raise UserError(f"{path}: its metadata and its graph disagree on the pitch channel")
        self.needs_samples = self.pitch is not None
        states = inputs[2:] if self.needs_samples else inputs[1:]
        self.state_names = [i.name for i in states]
        # per-stream state shapes: graph input dims after the (symbolic) batch axis
        self.state_shapes = [tuple(int(d) for d in i.shape[1:]) for i in states]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.block_frames = int(block_frames or self.meta.get("block_frames", DEFAULT_BLOCK_FRAMES))
        self.lookahead_frames = int(self.meta.get("lookahead_frames", 0))
        #: one-frame calls between network frames, without the graph (frame_stride > 1)
        self.held = (
            HeldFrames(self.meta, self.state_names, self.n_freqs)
            if HeldFrames.applies(self.meta, self.state_names)
            else None
        )
        #: one-frame calls that run the network, without the graph (None: the graph runs them)
        self.network = (
            NetworkFrame.load(path, self.meta, self.state_names, self.n_freqs)
            if compiled_frames
            else None
        )
        #: blocks of K > 1 frames frame by frame through the compiled steps (False: the graph)
        self.compiled_blocks = bool(compiled_blocks) and self.held is not None
        self.channels = 0
        self.reset(1)

    def reset(self, channels: int) -> None:
        """Zero state for ``channels`` streams; drops buffers bound for other block sizes."""
        self.channels = int(channels)
        c = self.channels
        # two state sets: step n reads set n % 2 and writes set (n + 1) % 2
        self._states = [
            [np.zeros((c, *s), np.float32) for s in self.state_shapes] for _ in range(2)
        ]
        self._cur = 0
        self._bound: dict[int, tuple[np.ndarray, np.ndarray, list[Any]]] = {}
        self._views = [NetworkFrame.views(s) for s in self._states]
        #: the pitch rows of one network frame (the compiled step's input)
        self._pitch_row = np.zeros((c, self.pitch.n_grid if self.pitch else 1), np.float32)

    def _bind(self, k: int) -> tuple[np.ndarray, np.ndarray, list[Any]]:
        """Preallocated spec/mask for K frames and two IO bindings (one per state parity)."""
        if not 1 <= k <= MAX_BLOCK_FRAMES:
            raise ValueError(f"the exported step takes 1..{MAX_BLOCK_FRAMES} frames, got {k}")
        c, f = self.channels, self.n_freqs
        spec = np.zeros((c, k, f, 2), np.float32)
        mask = np.zeros((c, k, f), np.float32)
        pitch = np.zeros((c, k, self._pitch_row.shape[1]), np.float32)  # the graph's input
        bindings = []
        for parity in range(2):
            io = self.session.io_binding()
            _bind_array(io.bind_input, "spec", spec)
            if self.pitch is not None:
                _bind_array(io.bind_input, "pitch", pitch)
            _bind_array(io.bind_output, self.output_names[0], mask)
            src, dst = self._states[parity], self._states[1 - parity]
            for name, arr in zip(self.state_names, src, strict=True):
                _bind_array(io.bind_input, name, arr)
            for name, arr in zip(self.output_names[1:], dst, strict=True):
                _bind_array(io.bind_output, name, arr)
            bindings.append(io)
        self._bound[k] = (spec, mask, bindings, pitch)
        return self._bound[k]

    def step(
        self, spec_ri: np.ndarray, samples: np.ndarray | None = None, start: int = 0
    ) -> np.ndarray:
        """spec_ri float32 ``[C, K, F, 2]`` (+ the input samples, for a model with the pitch
        channel: see the module doc) -> mask float32 ``[C, K, F]`` (buffer view)."""
        if spec_ri.shape[0] != self.channels:
            raise ValueError(f"got {spec_ri.shape[0]} channels, reset() was for {self.channels}")
        if self.pitch is not None and samples is None:
            raise _no_samples()
        k = spec_ri.shape[1]
        bound = self._bound.get(k)
        spec, mask, bindings, pitch = bound if bound is not None else self._bind(k)
        if k == 1 and self.held is not None and self.held.due(self._states[self._cur]):
            # the graph would discard its network frame: the held output, state in place
            self.held.step(spec_ri, self._states[self._cur], mask)
            return mask
        if k == 1 and self.network is not None:
            # one network frame: the compiled step, state in place
            self.network.step(
                spec_ri, self._views[self._cur], mask, 0, self._row(spec_ri, samples, start, 0)
            )
            return mask
        if self.compiled_blocks and self.network is not None:
            # a block (file mode): frame by frame through the same two compiled steps
            state, views = self._states[self._cur], self._views[self._cur]
            for j in range(k):
                if self.held.due(state):
                    self.held.step(spec_ri, state, mask, j)
                else:
                    row = self._row(spec_ri, samples, start, j)
                    self.network.step(spec_ri, views, mask, j, row)
            return mask
        np.copyto(spec, spec_ri)
        if self.pitch is not None:  # every frame's row (the graph reads its network frames')
            self.pitch.rows(samples, start, spec_ri, pitch)
        self.session.run_with_iobinding(bindings[self._cur])
        self._cur = 1 - self._cur
        return mask

    @property
    def state(self) -> list[np.ndarray]:
        """The current state tensors (order of ``state_names``)."""
        return self._states[self._cur]

    def _row(
        self, spec_ri: np.ndarray, samples: np.ndarray | None, start: int, j: int
    ) -> np.ndarray | None:
        """The pitch rows ``[C, F_c]`` of frame j of the block (None: no pitch channel)."""
        if self.pitch is None:
            return None
        p, hop = self.pitch, self.pitch.hop
        for c in range(spec_ri.shape[0]):
            p.row(samples[c], start + j * hop, spec_ri[c, j], self._pitch_row[c])
        return self._pitch_row

    def warm_up(self) -> bool:
        """Build the compiled steps a block of ``block_frames`` takes (or load them from
        numba's cache) before a stream starts, then reset the state. -> whether this process
        compiled them (the first run after an install: ~20 s of CPU)."""
        if self.network is None and self.held is None:
            return False
        c, k = self.channels, self.block_frames
        samples, h, p = None, 0, self.pitch
        if p is not None:  # silence, laid out as the analyzer's buffer
            h = p.history
            samples = np.zeros((c, h + p.nperseg + k * p.hop), np.float32)
        self.step(np.zeros((c, k, self.n_freqs, 2), np.float32), samples, h)
        self.reset(c)
        built = network_frame.built_here() or held_frames.built_here()
        return built or (p is not None and p.built_here())


def _bind_array(bind: Any, name: str, arr: np.ndarray) -> None:
    bind(name, "cpu", 0, np.float32, list(arr.shape), arr.ctypes.data)


# ============================================================================ torch paths
class _TorchStepBackend:
    """Shared numpy <-> torch glue of the TorchScript and eager backends."""

    def __init__(self, module: Any, meta: dict, block_frames: int | None, threads: int) -> None:
        import torch

        self._torch = torch
        if threads:
            torch.set_num_threads(threads)
        self.module = module
        self.meta = meta
        self.block_frames = int(block_frames or meta.get("block_frames", DEFAULT_BLOCK_FRAMES))
        self.lookahead_frames = int(meta.get("lookahead_frames", 0))
        n_freqs = int(meta.get("stft", {}).get("n_freqs", 0))
        self.pitch = pitch_frames(meta, n_freqs)
        self.needs_samples = self.pitch is not None
        self.reset(1)

    def reset(self, channels: int) -> None:
        self.channels = int(channels)
        self.state = self.module.init_state(self.channels)

    def _call(self, spec: Any, state: list[Any], pitch: Any) -> tuple[Any, list[Any]]:
        raise NotImplementedError

    def step(
        self, spec_ri: np.ndarray, samples: np.ndarray | None = None, start: int = 0
    ) -> np.ndarray:
        """spec_ri float32 ``[C, K, F, 2]`` (+ the input samples, for a model with the pitch
        channel) -> mask float32 ``[C, K, F]``."""
        if spec_ri.shape[0] != self.channels:
            raise ValueError(f"got {spec_ri.shape[0]} channels, reset() was for {self.channels}")
        pitch = None
        if self.pitch is not None:
            if samples is None:
                raise _no_samples()
            c, k = spec_ri.shape[:2]
            rows = np.zeros((c, k, self.pitch.n_grid), np.float32)
            self.pitch.rows(samples, start, spec_ri, rows)
            pitch = self._torch.from_numpy(rows)
        with self._torch.inference_mode():
            mask, self.state = self._call(self._torch.from_numpy(spec_ri), self.state, pitch)
        return mask.numpy()


class TorchScriptBackend(_TorchStepBackend):
    def __init__(self, path: str | Path, block_frames: int | None = None, threads: int = 1):
        import torch

        path = Path(path)
        extra = {"metadata.json": ""}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # deprecated, still works
                module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
        except (RuntimeError, ValueError) as exc:
            raise UserError(f"cannot load TorchScript model {path}: {exc}") from exc
        meta = json.loads(extra["metadata.json"] or "{}") or _sidecar_metadata(path)
        super().__init__(module.eval(), meta, block_frames, threads)

    def _call(self, spec: Any, state: list[Any], pitch: Any) -> tuple[Any, list[Any]]:
        return self.module(spec, state, pitch)


class TorchBackend(_TorchStepBackend):
    """Eager model from a checkpoint (BatchNorm folded, as exported)."""

    def __init__(self, path: str | Path, block_frames: int | None = None, threads: int = 1):
        from .export import inference_copy, metadata
        from .model import load_checkpoint

        model = load_checkpoint(path)
        if not model.cfg.causal:
            raise UserError(f"preset {model.cfg.preset!r} is offline only; streaming needs 'rt'")
        model = inference_copy(model)
        meta = _sidecar_metadata(Path(path)) or metadata(model)
        super().__init__(model, meta, block_frames, threads)

    def _call(self, spec: Any, state: list[Any], pitch: Any) -> tuple[Any, list[Any]]:
        return self.module.step(spec, state, pitch)


# ============================================================================ factory
def load_backend(
    kind: str = "onnx",
    model_path: str | Path | None = None,
    block_frames: int | None = None,
    threads: int = 1,
) -> Backend:
    """Backend ``kind`` in {'onnx', 'torchscript', 'torch'} over ``model_path`` (default: the
    shipped low-latency model, ``rtdenoise/models/lowlat.{onnx,jit.pt,pt}``)."""
    if kind not in DEFAULT_PATHS:
        raise UserError(f"unknown backend {kind!r} (choose from {', '.join(KINDS)})")
    path = Path(model_path) if model_path is not None else DEFAULT_PATHS[kind]
    if not path.is_file():
        raise UserError(f"model file not found: {path}")
    if block_frames is not None and not 1 <= block_frames <= MAX_BLOCK_FRAMES:
        raise UserError(f"block_frames must be in 1..{MAX_BLOCK_FRAMES}, got {block_frames}")
    if kind == "onnx":
        return OnnxBackend(path, block_frames, threads)
    if kind == "torchscript":
        return TorchScriptBackend(path, block_frames, threads)
    return TorchBackend(path, block_frames, threads)
