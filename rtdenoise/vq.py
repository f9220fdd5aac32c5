"""Vector quantizer of the bottleneck: nearest code per position, over the channel dimension.

The design quantizes each latent vector of the bottleneck against a codebook of 512 vectors of
dimension 64. The original flattened an NCHW tensor with ``view(-1, 64)``, mixing channels and
positions; here every position ``(t, f)`` of a ``[B, D, T, F]`` latent is one D-dimensional vector.

Training: straight-through estimator, loss = codebook term + ``commitment`` x commitment term;
with ``ema=True`` (default) the codebook term is replaced by exponential-moving-average codebook
updates (decay, Laplace smoothing of the cluster sizes) and codes whose usage decays below
``dead_threshold`` are restarted from random encoder outputs of the current batch. The first
training batch initialises the codebook from encoder outputs.

Inference: distances via one ``addmm`` (``|c|^2 - 2 z.c``; ``|z|^2`` is constant per row) with
the codebook squared norms precomputed in a buffer, refreshed whenever the codebook changes and at
load. The eval-mode output is exactly ``codebook[indices]``.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)


class VectorQuantizer(nn.Module):
    """Nearest-code quantizer over dim 1 of ``[B, D, T, F]`` latents.

    Args:
        codebook_size: number of codes N.
        code_dim: code dimension D (channels of the latent).
        commitment: weight of the commitment term ``|z - sg(q)|^2``.
        ema: EMA codebook updates (True) or a learned codebook with the codebook loss (False).
        decay: EMA decay.
        eps: Laplace smoothing constant of the EMA cluster sizes.
        dead_threshold: codes whose EMA usage (expected hits per batch) falls below this are
            restarted from random encoder outputs; 0 disables restarts.
    """

    def __init__(
        self,
        codebook_size: int = 512,
        code_dim: int = 64,
        commitment: float = 0.25,
        ema: bool = True,
        decay: float = 0.99,
        eps: float = 1e-5,
        dead_threshold: float = 0.5,
    ) -> None:
        super().__init__()
        self.codebook_size = codebook_size
        self.code_dim = code_dim
        self.commitment = commitment
        self.ema = ema
        self.decay = decay
        self.eps = eps
        self.dead_threshold = dead_threshold
        init = torch.randn(codebook_size, code_dim) / code_dim**0.5
        if ema:
            self.register_buffer("codebook", init)
        else:
            self.codebook = nn.Parameter(init)
        self.register_buffer("code_sqnorm", init.pow(2).sum(1))
        self.register_buffer("ema_cluster_size", torch.ones(codebook_size))
        self.register_buffer("ema_embed_sum", init.clone())
        self.register_buffer("initted", torch.tensor(False))
        self.register_load_state_dict_post_hook(_refresh_after_load)

    # ------------------------------------------------------------------ inference
    def distances(self, zp: torch.Tensor, sqnorm: torch.Tensor) -> torch.Tensor:
        """zp ``[..., D]`` -> ``[..., N]`` squared distances minus ``|z|^2`` (argmin-equivalent).

        ``-2 z.c`` as one matmul against ``-2 C^T`` (exact: scaling by 2 is lossless), plus the
        cached ``|c|^2``; no reshapes, so the exported graph has no shape arithmetic.
        """
        return torch.matmul(zp, self.codebook.t() * -2.0) + sqnorm

    def lookup(self, z: torch.Tensor, sqnorm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z ``[B, D, T, F]`` -> (codebook[indices] ``[B, D, T, F]``, indices ``[B, T, F]``)."""
        idx = torch.argmin(self.distances(z.permute(0, 2, 3, 1), sqnorm), dim=3)
        return F.embedding(idx, self.codebook).permute(0, 3, 1, 2), idx

    @torch.jit.export
    def quantize(self, z: torch.Tensor) -> torch.Tensor:
        """Eval path: z ``[B, D, T, F]`` -> ``codebook[indices]`` ``[B, D, T, F]`` (exact)."""
        return self.lookup(z, self.code_sqnorm)[0]

    # ------------------------------------------------------------------ training
    @torch.jit.unused
    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """z ``[B, D, T, F]`` -> (quantized ``[B, D, T, F]``, loss ``[]``, perplexity ``[]``).

        Training mode: straight-through output ``z + sg(q - z)``, EMA updates and restarts.
        Eval mode: exactly ``codebook[indices]``, loss computed but nothing updated.
        """
        with torch.autocast(z.device.type, enabled=False):
            return self._forward(z.float())

    @torch.jit.unused
    def _forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.training and not bool(self.initted):
            self._data_init(z)
        sqnorm = self.codebook.pow(2).sum(1) if self.training else self.code_sqnorm
        q, idx = self.lookup(z, sqnorm)
        commit = F.mse_loss(z, q.detach())
        if self.ema:
            loss = self.commitment * commit
        else:
            loss = F.mse_loss(q, z.detach()) + self.commitment * commit
        counts = torch.bincount(idx.flatten(), minlength=self.codebook_size).to(z.dtype)
        probs = counts / counts.sum().clamp_min(1.0)
        perplexity = torch.exp(-(probs * torch.log(probs + 1e-10)).sum())
        if not self.training:
            return q, loss, perplexity
        with torch.no_grad():
            flat = z.detach().permute(0, 2, 3, 1).reshape(-1, self.code_dim)
            self._update(flat, idx.flatten(), counts)
        return z + (q - z).detach(), loss, perplexity

    @torch.no_grad()
    def _data_init(self, z: torch.Tensor) -> None:
        flat = z.detach().permute(0, 2, 3, 1).reshape(-1, self.code_dim)
        self.codebook.data.copy_(_sample_rows(flat, self.codebook_size))
        self.ema_embed_sum.copy_(self.codebook.data)
        self.ema_cluster_size.fill_(1.0)
        self.initted.fill_(True)
        self.refresh()
        log.debug("codebook initialised from %d encoder outputs", flat.shape[0])

    @torch.no_grad()
    def _update(self, flat: torch.Tensor, idx: torch.Tensor, counts: torch.Tensor) -> None:
        """EMA statistics, codebook (EMA mode), dead-code restarts; flat ``[M, D]``."""
        d = self.decay
        self.ema_cluster_size.mul_(d).add_(counts, alpha=1.0 - d)
        if self.ema:
            embed_sum = torch.zeros_like(self.ema_embed_sum).index_add_(0, idx, flat)
            self.ema_embed_sum.mul_(d).add_(embed_sum, alpha=1.0 - d)
            n = self.ema_cluster_size.sum()
            size = (self.ema_cluster_size + self.eps) / (n + self.codebook_size * self.eps) * n
            self.codebook.data.copy_(self.ema_embed_sum / size.unsqueeze(1))
        self.restart_dead_codes(flat)
        self.refresh()

    @torch.no_grad()
    def restart_dead_codes(self, flat: torch.Tensor) -> int:
        """Replace codes with EMA usage below ``dead_threshold`` by random rows of flat ``[M, D]``.

        Returns the number of codes restarted.
        """
        if self.dead_threshold <= 0:
            return 0
        dead = self.ema_cluster_size < self.dead_threshold
        n_dead = int(dead.sum())
        if n_dead == 0:
            return 0
        new = _sample_rows(flat, n_dead)
        self.codebook.data[dead] = new
        self.ema_embed_sum[dead] = new
        self.ema_cluster_size[dead] = 1.0
        self.refresh()
        log.debug("restarted %d dead codes", n_dead)
        return n_dead

    @torch.no_grad()
    def refresh(self) -> None:
        """Recompute the codebook squared norms ``[N]`` used by the eval path."""
        self.code_sqnorm.copy_(self.codebook.detach().pow(2).sum(1))

    def train(self, mode: bool = True) -> VectorQuantizer:
        if not mode:
            self.refresh()  # a learned codebook may have moved since the last forward
        return super().train(mode)


def _sample_rows(flat: torch.Tensor, n: int) -> torch.Tensor:
    """n random rows of flat ``[M, D]`` (with replacement when M < n)."""
    m = flat.shape[0]
    if m >= n:
        pick = torch.randperm(m, device=flat.device)[:n]
    else:
        pick = torch.randint(0, m, (n,), device=flat.device)
    return flat[pick].clone()


def _refresh_after_load(module: nn.Module, incompatible_keys: object) -> None:
    module.refresh()
