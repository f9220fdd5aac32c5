"""Train a denoiser: ``python -m training.train --config CFG.json [key.sub=value ...] --out DIR``.

One command for the default model and for users' own data:

- data: the corpus folder is ``--data-root DIR``, else ``$RTDENOISE_DATA``, else
  ``../shared/data/corpus`` beside the repository; config paths that start with ``{data_root}``
  lie in it, any other path is used as given;
- on-the-fly mixtures (``training.data``), features statistics measured on a sample of
  training mixtures at start and stored in the model;
- loss: compressed spectral loss + SI-SDR of the resynthesis + the VQ loss, optionally a
  STOI-style band-envelope correlation term (``training.losses``);
- AdamW, linear warmup + cosine decay, gradient clipping, AMP (bf16) on CUDA (and on the CPU
  with ``train.bf16_cpu``);
- validation every ``train.val_every`` steps on a fixed subset of ``val/pairs.csv``
  (PESQ-nb, STOI, SI-SDR, NSR) with best-checkpoint selection (``best.pt``); the last step's
  weights as ``stepN.pt`` when the schedule (or ``--stop-step N``) ends;
- weight averaging (``train.snapshot_every`` > 0): from ``train.average_from`` x the schedule's
  steps on, the weights every ``snapshot_every`` steps go to ``snaps/stepN.pt``; when the
  schedule ends, their mean (``training.average``) is written as ``avg.pt`` and validated
  (``val.csv`` row ``avg``);
- exact resume from ``DIR/last.pt`` (model, optimizer, scheduler, RNG; the data position is the
  step counter because every batch is a pure function of ``(seed, step, rank)``);
- ``train.csv``/``val.csv`` logs and a tqdm bar; ``--max-minutes`` stops cleanly on a budget;
- multi-GPU / multi-process through ``torchrun`` (DistributedDataParallel; gloo on CPU).
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import logging
import math
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from rtdenoise import metrics
from rtdenoise.checkpoint import read_checkpoint
from rtdenoise.errors import UserError
from rtdenoise.evaluate import mix_pair, read_pairs

from .average import average_states
from .data import DATA_ROOT_VAR, MixConfig, MixtureSampler, data_root, resolve_path
from .losses import (
    LossConfig,
    onset_weight,
    shipped_gain,
    si_sdr_loss,
    spectral_loss,
    stoi_loss,
    third_octave_matrix,
)
from .pack import load_shards
from .torch_stft import TorchStft

log = logging.getLogger(__name__)

DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "model": {"preset": "rt"},
    "data": {
        # corpus folder: --data-root, else $RTDENOISE_DATA, else ../shared/data/corpus beside
        # the repository; paths below that start with {data_root} lie in it
        "root": None,
        "train_clean": ["{data_root}/train/clean"],
        "train_noise": ["{data_root}/train/noise"],
        "val_pairs": "{data_root}/val/pairs.csv",
        "mix": {},
    },
    "loss": {},
    "optim": {
        "lr": 1e-3,
        "weight_decay": 1e-2,
        "betas": [0.9, 0.99],
        "warmup_steps": 200,
        "min_lr_ratio": 0.05,
        "grad_clip": 3.0,
    },
    "train": {
        "steps": 2000,
        "batch_size": 8,
        "log_every": 10,
        "ckpt_every": 50,
        "val_every": 250,
        "val_pairs": 40,
        "stats_examples": 64,
        "threads": 0,  # 0 = torch default
        # bf16 autocast of the network on the CPU as on CUDA (where it is always on): convs and
        # matmuls on AMX / AVX512-BF16 units; the codebook search, losses and STFTs stay fp32
        "bf16_cpu": False,
        "select": "pesq+0.1*si_sdr",
        "snapshot_every": 0,  # 0 = no snapshots, no avg.pt
        "average_from": 0.75,  # fraction of train.steps from which snapshots are taken
    },
}


# ----------------------------------------------------------------------------- config


def deep_update(base: dict, upd: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in upd.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_update(out[k], v)
        else:
            out[k] = v
    return out


def apply_override(cfg: dict, item: str) -> None:
    """``a.b.c=value`` (value parsed as JSON, else kept as a string) into ``cfg`` in place."""
    if "=" not in item:
        raise SystemExit(f"override must be key.sub=value, got {item!r}")
    key, raw = item.split("=", 1)
    try:
        val = json.loads(raw)
    except json.JSONDecodeError:
        val = raw
    node = cfg
    parts = key.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = val


def load_config(path: str | None, overrides: list[str]) -> dict:
    cfg = copy.deepcopy(DEFAULTS)
    if path:
        with open(path) as f:
            cfg = deep_update(cfg, json.load(f))
    for o in overrides:
        apply_override(cfg, o)
    return cfg


def parse_select(expr: str) -> list[tuple[float, str]]:
    """``"pesq+0.1*si_sdr+5*stoi"`` -> [(1.0, "pesq"), (0.1, "si_sdr"), (5.0, "stoi")]."""
    terms = []
    for term in expr.replace(" ", "").split("+"):
        w, _, key = term.rpartition("*")
        if key not in ("pesq", "stoi", "si_sdr", "nsr"):
            raise UserError(f"train.select: unknown metric {key!r} in {expr!r}")
        try:
            terms.append((float(w) if w else 1.0, key))
        except ValueError:
            raise UserError(f"train.select: bad weight {w!r} in {expr!r}") from None
    return terms


# ----------------------------------------------------------------------------- model


def build_model(model_cfg: dict) -> torch.nn.Module:
    """A ``DenoiserNet`` from the config's ``model`` section (preset + field overrides)."""
    from rtdenoise.model import DenoiserNet, preset_config

    d = {k: tuple(v) if isinstance(v, list) else v for k, v in model_cfg.items()}
    return DenoiserNet(preset_config(d.pop("preset", "rt"), **d))


def save_best(path: Path, model: torch.nn.Module, **extra: Any) -> None:
    from rtdenoise.model import save_checkpoint

    save_checkpoint(path, model, **extra)


def model_features(model: torch.nn.Module, spec: torch.Tensor) -> torch.Tensor:
    """Un-normalised input features [B, T, F] whose per-bin statistics the model stores:
    ``log(|X|^2 + eps)`` (the contract of ``DenoiserNet.set_feature_stats``)."""
    raw = getattr(model, "raw_features", None)
    if callable(raw):
        return raw(spec)
    eps = float(getattr(getattr(model, "cfg", None), "feat_eps", 1e-10))
    return torch.log((spec * spec).sum(-1) + eps)


# ----------------------------------------------------------------------------- schedule


def lr_lambda(step: int, warmup: int, total: int, min_ratio: float) -> float:
    if step < warmup:
        return (step + 1) / warmup
    p = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * p))


# ----------------------------------------------------------------------------- trainer


def _zero_new_residuals(model: torch.nn.Module, missing: list[str]) -> set[str]:
    """Growing a checkpoint: the residual convs a checkpoint lacks (e.g. more bottleneck
    dilations) start as the identity (BatchNorm gain 0), so the grown model computes exactly
    what the checkpoint did. Returns the missing keys so covered."""
    covered: set[str] = set()
    absent = set(missing)
    for name, mod in model.named_modules():
        if getattr(mod, "residual", False):
            keys = {f"{name}.{k}" for k in mod.state_dict() if "num_batches" not in k}
            if keys and keys <= absent:
                torch.nn.init.zeros_(mod.block.norm.weight)
                covered |= keys
    return covered


def _zero_new_inputs(model: torch.nn.Module, weights: dict) -> list[str]:
    """Growing a checkpoint: conv weights with more input channels in the model than in the
    checkpoint (e.g. the harmonic comb channel appended to the network input) get zeros for the
    new channels, so the grown model computes exactly what the checkpoint did. ``weights`` is
    padded in place; returns the keys padded."""
    own = model.state_dict()
    padded = []
    for key, t in weights.items():
        mine = own.get(key)
        if (
            mine is None
            or mine.shape == t.shape
            or mine.dim() != t.dim()
            or mine.dim() < 2
            or mine.shape[0] != t.shape[0]
            or mine.shape[2:] != t.shape[2:]
            or mine.shape[1] < t.shape[1]
        ):
            continue
        grown = t.new_zeros(mine.shape)
        grown[:, : t.shape[1]] = t
        weights[key] = grown
        padded.append(key)
    return padded


def _leave_signals_to_main(_: int) -> None:
    """Data workers ignore SIGTERM/SIGINT sent to the whole process group (``pkill -f``,
    Ctrl-C): the main process saves and stops, then shuts the workers down itself."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class _StepBatches(torch.utils.data.Dataset):
    """Dataset indexed by training step: item ``s`` is ``(s, noisy [B, n], target [B, n])``."""

    def __init__(self, sampler: MixtureSampler, seed: int, rank: int, size: int) -> None:
        self.sampler, self.seed, self.rank, self.size = sampler, seed, rank, size

    def __getitem__(self, step: int) -> tuple[int, torch.Tensor, torch.Tensor]:
        noisy, target = self.sampler.batch(self.seed, step, self.rank, self.size)
        return step, torch.from_numpy(noisy), torch.from_numpy(target)


class Trainer:
    """Owns model, optimiser, data and logs; ``run()`` trains until steps or budget run out."""

    def __init__(
        self,
        cfg: dict,
        out: Path,
        max_minutes: float | None = None,
        stop_step: int | None = None,
    ) -> None:
        self.cfg = cfg
        self.out = Path(out)
        self.max_minutes = max_minutes
        self.stop_step = stop_step
        self.t_cfg = cfg["train"]
        self.o_cfg = cfg["optim"]
        # a bad expression fails now, not at the first validation
        self.select = parse_select(str(self.t_cfg["select"]))
        self.seed = int(cfg["seed"])
        self.ddp = "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1
        if self.ddp:
            backend = "nccl" if torch.cuda.is_available() else "gloo"
            if not dist.is_initialized():
                dist.init_process_group(backend)
            self.rank, self.world = dist.get_rank(), dist.get_world_size()
        else:
            self.rank, self.world = 0, 1
        if torch.cuda.is_available():
            local = int(os.environ.get("LOCAL_RANK", 0))
            self.device = torch.device("cuda", local)
            torch.cuda.set_device(self.device)
        else:
            self.device = torch.device("cpu")
        if self.t_cfg.get("threads"):
            torch.set_num_threads(int(self.t_cfg["threads"]))
        torch.manual_seed(self.seed + self.rank)
        self.is_main = self.rank == 0
        self.out.mkdir(parents=True, exist_ok=True)

        self.mix_cfg = MixConfig.from_dict(cfg["data"].get("mix", {}))
        self.loss_cfg = LossConfig(**cfg.get("loss", {}))
        d = cfg["data"]
        if d.get("shards"):  # packed, pre-decoded (python -m training.pack): loads in seconds
            speech, keys, noise = load_shards(self.data_path("shards"))
            self.sampler = MixtureSampler(speech, noise, self.mix_cfg, keys)
        else:
            self.sampler = MixtureSampler.from_dirs(
                self.data_path("train_clean"), self.data_path("train_noise"), self.mix_cfg
            )
        self._stream: Any = None  # batches mixed in worker processes (train.workers > 0)

        self.model = build_model(cfg["model"]).to(self.device)
        # the model's own framing (a model without a config: the design's)
        framing = getattr(getattr(self.model, "cfg", None), "stft", None)
        self.stft = TorchStft(framing).to(self.device)
        sc = self.stft.cfg
        self.stoi_bands = third_octave_matrix(sc.nperseg // 2 + 1, sc.sample_rate).to(self.device)
        self.step = 0
        self.best = -math.inf
        self.optim = torch.optim.AdamW(
            self.model.parameters(),
            lr=self.o_cfg["lr"],
            betas=tuple(self.o_cfg["betas"]),
            weight_decay=self.o_cfg["weight_decay"],
        )
        total = int(self.t_cfg["steps"])
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.optim,
            lambda s: lr_lambda(
                s, int(self.o_cfg["warmup_steps"]), total, float(self.o_cfg["min_lr_ratio"])
            ),
        )
        last = self.out / "last.pt"
        if last.exists():
            self._load_state(last)
            log.info("resumed from %s at step %d", last, self.step)
        elif self.t_cfg.get("init"):
            self._init_from(Path(self.t_cfg["init"]))
        else:
            self._init_feature_stats()
        self.net: torch.nn.Module = self.model
        if self.ddp:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self.val_set: list[tuple[str, float, np.ndarray, np.ndarray]] | None = None
        self._stop = False

    def data_path(self, key: str) -> Any:
        """``data.<key>`` (a path or a list of paths) with ``{data_root}`` resolved."""
        value = self.cfg["data"][key]
        paths = value if isinstance(value, list) else [value]
        root = data_root(self.cfg["data"].get("root"))
        if any(str(p).startswith(DATA_ROOT_VAR) for p in paths) and not root.is_dir():
            raise UserError(
                f"corpus folder not found: {root} (give --data-root DIR or set RTDENOISE_DATA)"
            )
        out = [resolve_path(p, root) for p in paths]
        return out if isinstance(value, list) else out[0]

    # ------------------------------------------------------------------ state

    def _init_feature_stats(self) -> None:
        """Per-bin mean/std of the model's features over a sample of training mixtures."""
        n = int(self.t_cfg["stats_examples"])
        feats = []
        with torch.no_grad():
            for i in range(n):
                ex = self.sampler.example(self.seed, 2**40, 0, i)  # a step no batch reaches
                spec = self.stft.stft(torch.from_numpy(ex["noisy"])[None].to(self.device))
                feats.append(model_features(self.model, spec)[0].float().cpu())
        f = torch.cat(feats, 0)  # [sum T, F]
        mean, std = f.mean(0), f.std(0).clamp_min(1e-3)
        self.model.set_feature_stats(mean.to(self.device), std.to(self.device))
        log.info("feature stats from %d mixtures: mean %.2f, std %.2f", n, mean.mean(), std.mean())

    def _init_from(self, path: Path) -> None:
        """Fine-tuning: weights and feature statistics from a checkpoint (``train.init``);
        optimizer, schedule and step start afresh. Read with ``weights_only=True``."""
        st = read_checkpoint(path, self.device)
        weights = st.get("state_dict", st.get("model")) if isinstance(st, dict) else None
        if not isinstance(weights, dict):
            raise UserError(f"train.init: not an rtdenoise checkpoint: {path}")
        inputs = _zero_new_inputs(self.model, weights)
        missing, unexpected = self.model.load_state_dict(weights, strict=False)
        grown = _zero_new_residuals(self.model, missing)
        if unexpected or set(missing) - grown:
            raise UserError(
                f"train.init: {path} does not fit this model (missing "
                f"{sorted(set(missing) - grown)[:4]}, unexpected {sorted(unexpected)[:4]})"
            )
        log.info(
            "initialised from %s (fine-tuning%s)",
            path,
            f"; {len(grown)} new residual-layer tensors start as identity" if grown else "",
        )
        if inputs:
            log.info("new input channels start at zero weight in %s", ", ".join(inputs))

    def _state(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "optim": self.optim.state_dict(),
            "sched": self.sched.state_dict(),
            "step": self.step,
            "best": self.best,
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "config": self.cfg,
        }

    def _load_state(self, path: Path) -> None:
        st = read_checkpoint(path, self.device)  # weights_only: tensors and plain types
        self.model.load_state_dict(st["model"])
        self.optim.load_state_dict(st["optim"])
        self.sched.load_state_dict(st["sched"])
        self.step, self.best = int(st["step"]), float(st["best"])
        torch.set_rng_state(st["torch_rng"])
        if st.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(st["cuda_rng"])

    def save_last(self) -> None:
        if self.is_main:
            tmp = self.out / "last.pt.tmp"
            torch.save(self._state(), tmp)
            os.replace(tmp, self.out / "last.pt")

    # ------------------------------------------------------------------ training

    def _start_workers(self) -> None:
        """``train.workers`` processes mix the batches of the coming steps ahead of the model
        (each batch is a pure function of its step, so this changes no number)."""
        workers = int(self.t_cfg.get("workers", 0))
        if workers <= 0 or self.step >= int(self.t_cfg["steps"]):
            return
        bs = int(self.t_cfg["batch_size"])
        data = _StepBatches(self.sampler, self.seed, self.rank, bs)
        loader = torch.utils.data.DataLoader(
            data,
            batch_size=None,
            sampler=range(self.step, int(self.t_cfg["steps"])),
            num_workers=workers,
            prefetch_factor=int(self.t_cfg.get("prefetch", 4)),
            pin_memory=self.device.type == "cuda",
            generator=torch.Generator(),  # leaves the model's RNG stream untouched
            worker_init_fn=_leave_signals_to_main,
        )
        self._stream = iter(loader)

    def _arrays(self) -> tuple[Any, Any]:
        if self._stream is not None:
            step, noisy, target = next(self._stream)
            assert int(step) == self.step, f"data worker sent step {int(step)} at {self.step}"
            return noisy, target
        bs = int(self.t_cfg["batch_size"])
        noisy, target = self.sampler.batch(self.seed, self.step, self.rank, bs)
        return torch.from_numpy(noisy), torch.from_numpy(target)

    def _batch(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(noisy_spec, target_spec [B, T, F, 2], target_wave [B, n]) for this step/rank."""
        noisy, target = self._arrays()
        noisy_t = noisy.to(self.device, non_blocking=True)
        target_t = target.to(self.device, non_blocking=True)
        tspec = self.stft.stft(target_t)
        if self.mix_cfg.recipe == "seed":  # the original: Gaussian noise on the spectrogram
            g = torch.Generator().manual_seed(hash((self.seed, self.step, self.rank)) % 2**62)
            std = tspec.flatten(1).std(1).view(-1, 1, 1, 1)
            noise = torch.randn(tspec.shape, generator=g).to(self.device)
            nspec = tspec + self.mix_cfg.seed_sigma * std * noise
        else:
            nspec = self.stft.stft(noisy_t)
        return nspec, tspec, target_t, noisy_t

    def train_step(self) -> dict[str, float]:
        self.net.train()
        nspec, tspec, target, noisy = self._batch()
        amp = self.device.type == "cuda" or bool(self.t_cfg.get("bf16_cpu", False))
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=amp):
            if getattr(self.model, "pitch", None) is not None:  # it reads the noisy waveform
                mask, vq_loss, ppl = self.net(nspec, noisy)
            else:
                mask, vq_loss, ppl = self.net(nspec)
        mask = shipped_gain(mask.float(), self.loss_cfg)
        est = nspec * mask.unsqueeze(-1)
        onset = None
        if self.loss_cfg.w_onset > 0:
            sc = self.stft.cfg
            frames = max(1, round(self.loss_cfg.onset_ms / 1000 * sc.sample_rate / sc.hop))
            onset = onset_weight(tspec, frames)
        l_spec = spectral_loss(est, tspec, self.loss_cfg, nspec, onset)
        loss = l_spec + self.loss_cfg.w_vq * vq_loss.float()
        l_sdr = torch.zeros(())
        if self.loss_cfg.w_sisdr > 0:
            wave = self.stft.istft(est, target.shape[-1])
            l_sdr = si_sdr_loss(wave, target)
            loss = loss + self.loss_cfg.w_sisdr * l_sdr
        l_stoi = torch.zeros(())
        if self.loss_cfg.w_stoi > 0:
            sc = self.stft.cfg
            l_stoi = stoi_loss(est, tspec, sc.sample_rate, sc.hop, self.stoi_bands)
            loss = loss + self.loss_cfg.w_stoi * l_stoi
        self.optim.zero_grad(set_to_none=True)
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.o_cfg["grad_clip"])
        self.optim.step()
        self.sched.step()
        self.step += 1
        stats = {
            "loss": float(loss.detach()),
            "spec": float(l_spec.detach()),
            "neg_sisdr": float(l_sdr.detach()),
            "vq": float(vq_loss.detach()),
            "ppl": float(ppl.detach()),
            "grad_norm": float(gn),
            "lr": self.sched.get_last_lr()[0],
        }
        if self.loss_cfg.w_stoi > 0:  # a column only in runs that use it (resumed CSVs match)
            stats["stoi_term"] = float(l_stoi.detach())
        return stats

    # ------------------------------------------------------------------ validation

    def _load_val(self) -> None:
        n = int(self.t_cfg["val_pairs"])
        csv_path = self.data_path("val_pairs")
        pairs = read_pairs(csv_path)
        idx = np.unique(np.linspace(0, len(pairs) - 1, min(n, len(pairs))).round().astype(int))
        cache: dict[str, np.ndarray] = {}
        self.val_set = []
        for i in idx:
            clean, noisy = mix_pair(pairs[i], csv_path.parent, cache)
            self.val_set.append((pairs[i].name, pairs[i].snr_db, clean, noisy))

    @torch.no_grad()
    def enhance(self, noisy: np.ndarray, model: torch.nn.Module | None = None) -> np.ndarray:
        """Offline forward of one utterance: noisy [n] -> enhanced [n] (float32), with the gain
        floored as in training (``loss.mask_floor_db``, the engine's limit; else the mask)."""
        model = self.model if model is None else model
        model.eval()
        x = torch.from_numpy(noisy)[None].to(self.device)
        spec = self.stft.stft(x)
        out = model(spec, x) if getattr(model, "pitch", None) is not None else model(spec)
        mask = shipped_gain(out[0].float(), self.loss_cfg)
        return self.stft.istft(spec * mask.unsqueeze(-1), x.shape[-1])[0].cpu().numpy()

    def validate(self, model: torch.nn.Module | None = None) -> dict[str, float]:
        """Validation metrics of ``model`` (default: the one in training)."""
        if self.val_set is None:
            self._load_val()
        assert self.val_set is not None
        rows = []
        for _, _, clean, noisy in self.val_set:
            rows.append(metrics.score(clean, self.enhance(noisy, model), max_lag=0))
        keys = ("pesq", "stoi", "si_sdr", "nsr")
        return {k: float(np.nanmean([r[k] for r in rows])) for k in keys}

    def noisy_baseline(self) -> dict[str, float]:
        if self.val_set is None:
            self._load_val()
        assert self.val_set is not None
        rows = [metrics.score(c, n, max_lag=0) for _, _, c, n in self.val_set]
        return {
            k: float(np.nanmean([r[k] for r in rows])) for k in ("pesq", "stoi", "si_sdr", "nsr")
        }

    def selection_score(self, m: dict[str, float]) -> float:
        """``train.select``, a weighted sum of validation metrics (``pesq+0.1*si_sdr+5*stoi``)."""
        return sum(w * m[k] for w, k in self.select)

    # ------------------------------------------------------------------ loop

    def _append_csv(self, name: str, row: dict[str, Any]) -> None:
        path = self.out / name
        new = not path.exists()
        with open(path, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(row))
            if new:
                w.writeheader()
            w.writerow(row)

    def _handle_signal(self, signum: int, frame: Any) -> None:
        log.warning("signal %d: saving and stopping after this step", signum)
        self._stop = True

    def run(self) -> dict[str, float]:
        total = int(self.t_cfg["steps"])
        t0 = time.monotonic()
        if self.is_main:
            (self.out / "config.json").write_text(json.dumps(self.cfg, indent=2))
            try:
                signal.signal(signal.SIGTERM, self._handle_signal)
            except ValueError:  # not the main thread
                pass
            if not (self.out / "val.csv").exists() and self.t_cfg["val_every"] > 0:
                base = self.noisy_baseline()
                self._append_csv("val.csv", {"step": "noisy", **base, "score": "", "best": ""})
                log.info("noisy val baseline: %s", base)
        last_stats: dict[str, float] = {}
        bar = tqdm(
            total=total,
            initial=self.step,
            disable=not self.is_main,
            dynamic_ncols=True,
            mininterval=5,
            desc="train",
        )
        t_step = time.monotonic()
        self._start_workers()
        end = total if self.stop_step is None else min(total, self.stop_step)
        while self.step < end and not self._stop:
            last_stats = self.train_step()
            bar.update(1)
            if self.is_main and self.step % int(self.t_cfg["log_every"]) == 0:
                dt = (time.monotonic() - t_step) / int(self.t_cfg["log_every"])
                t_step = time.monotonic()
                row = {
                    "step": self.step,
                    **last_stats,
                    "sec_per_step": dt,
                    "elapsed_min": (time.monotonic() - t0) / 60,
                }
                self._append_csv("train.csv", row)
                bar.set_postfix(loss=f"{last_stats['loss']:.4f}", ppl=f"{last_stats['ppl']:.0f}")
            ve = int(self.t_cfg["val_every"])
            if ve > 0 and (self.step % ve == 0 or self.step == total):
                self._validate_and_select()
            if self.step % int(self.t_cfg["ckpt_every"]) == 0:
                self.save_last()
            self._snapshot()
            if self.max_minutes is not None and (time.monotonic() - t0) / 60 > self.max_minutes:
                log.warning(
                    "time budget of %.1f min reached at step %d", self.max_minutes, self.step
                )
                break
            if self.ddp:  # every rank stops together
                flag = torch.tensor([int(self._stop)], device=self.device)
                dist.all_reduce(flag)
                self._stop = bool(flag.item())
        bar.close()
        self._stream = None  # shuts the data workers down
        self.save_last()
        if self.is_main and self.step in (self.stop_step, total):
            # the weights at exactly this step (--stop-step, or the schedule's last), as a model
            # checkpoint (export, compare): best.pt is chosen on 100 pairs, the last step may win
            save_best(
                self.out / f"step{self.step}.pt", self.model, step=self.step, train_config=self.cfg
            )
            if self.step == total:
                self._write_average()
        if self.ddp:
            dist.barrier()
        return last_stats

    # ------------------------------------------------------------------ weight averaging

    def _average_from(self) -> int:
        return math.ceil(float(self.t_cfg["average_from"]) * int(self.t_cfg["steps"]))

    def _snapshots(self) -> list[tuple[int, Path]]:
        """(N, ``snaps/stepN.pt``) from ``average_from`` on, oldest first (those of a resumed run
        included: snapshots are files, so a run spread over sessions averages them all)."""
        first = self._average_from()
        steps = [(int(p.stem[4:]), p) for p in (self.out / "snaps").glob("step*.pt")]
        return [(n, p) for n, p in sorted(steps) if n >= first]

    def _snapshot(self) -> None:
        every = int(self.t_cfg["snapshot_every"])
        if self.is_main and every > 0 and self.step % every == 0:
            if self.step >= self._average_from():
                (self.out / "snaps").mkdir(exist_ok=True)
                tmp = self.out / "snaps" / f"step{self.step}.pt.tmp"
                save_best(tmp, self.model, step=self.step)
                os.replace(tmp, tmp.with_suffix(""))

    def _write_average(self) -> None:
        """``avg.pt``: the mean of the snapshots (at least two), validated if validation is on."""
        snaps = self._snapshots()
        if int(self.t_cfg["snapshot_every"]) <= 0 or len(snaps) < 2:
            return
        states = [read_checkpoint(p, self.device)["state_dict"] for _, p in snaps]
        avg = copy.deepcopy(self.model)
        avg.load_state_dict(average_states(states))
        steps = [n for n, _ in snaps]
        extra: dict[str, Any] = {"step": self.step, "averaged_steps": steps}
        if int(self.t_cfg["val_every"]) > 0:
            m = self.validate(avg)
            extra["val"] = m
            self._append_csv(
                "val.csv", {"step": "avg", **m, "score": self.selection_score(m), "best": ""}
            )
            log.info("average of steps %s: val %s", steps, m)
        save_best(self.out / "avg.pt", avg, train_config=self.cfg, **extra)

    def _validate_and_select(self) -> None:
        if self.is_main:
            m = self.validate()
            s = self.selection_score(m)
            is_best = s > self.best
            if is_best:
                self.best = s
                save_best(
                    self.out / "best.pt", self.model, step=self.step, val=m, train_config=self.cfg
                )
            self._append_csv("val.csv", {"step": self.step, **m, "score": s, "best": int(is_best)})
            log.info("step %d val %s%s", self.step, m, " (best)" if is_best else "")
        if self.ddp:
            dist.barrier()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m training.train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", help="JSON config (merged over the built-in defaults)")
    p.add_argument("--out", required=True, help="run folder (resumes from OUT/last.pt)")
    p.add_argument("--max-minutes", type=float, default=None, help="stop cleanly after this")
    p.add_argument(
        "--data-root",
        metavar="DIR",
        help="corpus folder for the {data_root} paths of the config (default: $RTDENOISE_DATA, "
        "else ../shared/data/corpus beside the repository)",
    )
    p.add_argument(
        "--stop-step",
        type=int,
        metavar="N",
        help="stop at step N (the schedule still spans train.steps) and write OUT/stepN.pt: "
        "the weights at that step, to compare runs at equal steps (a run that completes "
        "its schedule writes OUT/stepN.pt for its last step too)",
    )
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. optim.lr=3e-4")
    args = p.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    cfg = load_config(args.config, args.overrides)
    if args.data_root:
        cfg["data"]["root"] = args.data_root
    try:
        trainer = Trainer(cfg, Path(args.out), args.max_minutes, args.stop_step)
        trainer.run()
    except UserError as exc:  # one line, no traceback
        print(f"{p.prog}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    if trainer.ddp:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
