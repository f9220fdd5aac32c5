"""Reconstruction losses for a real-valued spectral mask.

``spectral_loss``: compressed-magnitude MSE (optionally asymmetric: ``w_under`` weighs
removed speech more than residual noise) plus a compressed complex term (the noisy phase
is kept by a real mask, so the complex term mainly penalises gain errors on bins whose phase is
dominated by noise), normalised by the target's compressed power so that quiet and loud crops
weigh the same. ``si_sdr_loss``: negative SI-SDR of the resynthesised waveform in dB, which
catches errors the per-bin loss under-weights (overlap-add consistency, low-energy speech).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class LossConfig:
    compress: float = 0.3  # magnitude exponent
    w_mag: float = 0.7
    w_cplx: float = 0.3
    w_sisdr: float = 0.01  # per dB
    #: extra weight on compressed magnitude *below* the target (speech removed) over above it
    #: (noise left): masks trained symmetrically over-suppress speech, which PESQ and STOI punish
    w_under: float = 0.0
    w_vq: float = 1.0


def _mag(spec: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(spec[..., 0] ** 2 + spec[..., 1] ** 2 + 1e-12)


def spectral_loss(
    est: torch.Tensor, ref: torch.Tensor, cfg: LossConfig, noisy: torch.Tensor | None = None
) -> torch.Tensor:
    """est, ref, noisy: [B, T, F, 2] -> scalar. Normalised per example by the compressed power
    mean(|X|^(2c)) of the noisy input (of ``ref`` if not given): level-independent, and bounded
    for speech-free examples whose target is silence."""
    c = cfg.compress
    m_est, m_ref = _mag(est), _mag(ref)
    cm_est, cm_ref = m_est**c, m_ref**c
    norm_src = cm_ref if noisy is None else _mag(noisy) ** c
    norm = (norm_src**2).mean(dim=(1, 2)) + 1e-8  # [B]
    l_mag = ((cm_est - cm_ref) ** 2).mean(dim=(1, 2))
    l_under = (torch.relu(cm_ref - cm_est) ** 2).mean(dim=(1, 2)) if cfg.w_under > 0 else 0.0
    c_est = est * (cm_est / m_est).unsqueeze(-1)
    c_ref = ref * (cm_ref / m_ref).unsqueeze(-1)
    l_cplx = ((c_est - c_ref) ** 2).sum(-1).mean(dim=(1, 2))
    return ((cfg.w_mag * l_mag + cfg.w_under * l_under + cfg.w_cplx * l_cplx) / norm).mean()


def si_sdr_loss(est: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """est, ref: [B, n] -> mean negative SI-SDR (dB). Silent references are skipped."""
    est = est - est.mean(-1, keepdim=True)
    ref = ref - ref.mean(-1, keepdim=True)
    ref_pow = (ref**2).sum(-1)
    alpha = (est * ref).sum(-1) / (ref_pow + 1e-8)
    tgt = alpha.unsqueeze(-1) * ref
    err = est - tgt
    sdr = 10 * torch.log10(((tgt**2).sum(-1) + 1e-8) / ((err**2).sum(-1) + 1e-8))
    valid = ref_pow > 1e-6 * ref.shape[-1]  # mean power above -60 dBFS
    if not bool(valid.any()):
        return est.new_zeros(())
    return -(sdr[valid]).mean()
