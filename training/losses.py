"""Reconstruction losses for a real-valued spectral mask.

``spectral_loss``: compressed-magnitude MSE (optionally asymmetric: ``w_under`` weighs
removed speech more than residual noise) plus a compressed complex term (the noisy phase
is kept by a real mask, so the complex term mainly penalises gain errors on bins whose phase is
dominated by noise), normalised by the target's compressed power so that quiet and loud crops
weigh the same. ``si_sdr_loss``: negative SI-SDR of the resynthesised waveform in dB, which
catches errors the per-bin loss under-weights (overlap-add consistency, low-energy speech).
``stoi_loss``: 1 - the short-time correlation of one-third-octave band envelopes of estimate
and target over 384 ms segments, normalised and clipped as STOI does (Taal et al. 2011; used
as a training objective by Kolbaek et al. 2018): intelligibility depends on the band envelopes
of the speech being kept, which a per-bin loss averaged over all bins barely sees.
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
    #: weight of ``stoi_loss`` (0: off)
    w_stoi: float = 0.0
    #: what ``spectral_loss`` divides each example by: 'noisy' = the mixture's compressed power
    #: (low-SNR examples, whose mixture is mostly noise, weigh less); 'speech' = the target's,
    #: plus ``norm_floor`` x the mixture's so that speech-free examples stay bounded (every SNR
    #: weighs the same relative to its speech)
    norm: str = "noisy"
    norm_floor: float = 0.1
    #: extra weight on removed speech (the ``w_under`` term) in onset frames, where the target's
    #: level rises above its minimum over the previous ``onset_ms``: a causal mask attenuates a
    #: word's first 50-200 ms (it cannot yet tell them from a noise burst), which short words
    #: and STOI punish and an average over all frames barely sees (0: off)
    w_onset: float = 0.0
    onset_ms: float = 100.0
    #: train the gain the engine applies: ``max(mask, 10**(-mask_floor_db/20))``, the export's
    #: attenuation limit, so no loss term pays for noise pushed below what ships (0: off)
    mask_floor_db: float = 0.0

    def __post_init__(self) -> None:
        if self.norm not in ("noisy", "speech"):
            raise ValueError(f"loss.norm must be 'noisy' or 'speech', got {self.norm!r}")


def shipped_gain(mask: torch.Tensor, cfg: LossConfig) -> torch.Tensor:
    """The gain the losses see: the mask, floored at the attenuation limit if one is set (as
    ``rtdenoise.processor`` floors it at inference; no gradient below the floor)."""
    if cfg.mask_floor_db <= 0:
        return mask
    return mask.clamp_min(10 ** (-cfg.mask_floor_db / 20))


def _mag(spec: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(spec[..., 0] ** 2 + spec[..., 1] ** 2 + 1e-12)


def onset_weight(
    ref: torch.Tensor, frames: int, rise_db: float = 6.0, span_db: float = 12.0
) -> torch.Tensor:
    """ref: [B, T, F, 2] -> [B, T] in [0, 1]: how far each frame's level (dB) rises above its
    minimum over the ``frames`` before it, 0 below ``rise_db``, 1 from ``rise_db + span_db``;
    0 in frames 40 dB below the example's loudest (silence) and where there is no past yet
    (the crop's first frame sees itself)."""
    e = 10 * torch.log10((ref[..., 0] ** 2 + ref[..., 1] ** 2).mean(-1) + 1e-10)  # [B, T]
    past = torch.cat([e[:, :1].expand(-1, frames), e[:, :-1]], dim=1)  # e[t - frames .. t - 1]
    floor = -torch.nn.functional.max_pool1d(-past[:, None], frames, stride=1)[:, 0]
    o = ((e - floor - rise_db) / span_db).clamp(0, 1)
    return o * (e > e.amax(dim=1, keepdim=True) - 40).to(o.dtype)


def spectral_loss(
    est: torch.Tensor,
    ref: torch.Tensor,
    cfg: LossConfig,
    noisy: torch.Tensor | None = None,
    onset: torch.Tensor | None = None,
) -> torch.Tensor:
    """est, ref, noisy: [B, T, F, 2] -> scalar. Normalised per example by a compressed power
    mean(|X|^(2c)) (``cfg.norm``: the noisy input's, or the target's plus a floor of the noisy
    input's; ``ref`` alone if ``noisy`` is not given): level-independent, and bounded for
    speech-free examples whose target is silence. ``onset`` [B, T] (:func:`onset_weight`)
    weighs the removed-speech term by 1 + ``cfg.w_onset`` x onset."""
    c = cfg.compress
    m_est, m_ref = _mag(est), _mag(ref)
    cm_est, cm_ref = m_est**c, m_ref**c
    p_ref = (cm_ref**2).mean(dim=(1, 2))  # [B]
    if noisy is None:
        norm = p_ref
    else:
        p_noisy = (_mag(noisy) ** (2 * c)).mean(dim=(1, 2))
        norm = p_noisy if cfg.norm == "noisy" else p_ref + cfg.norm_floor * p_noisy
    norm = norm + 1e-8
    l_mag = ((cm_est - cm_ref) ** 2).mean(dim=(1, 2))
    l_under = 0.0
    if cfg.w_under > 0:
        under = torch.relu(cm_ref - cm_est) ** 2  # [B, T, F]
        if onset is not None and cfg.w_onset > 0:
            under = under * (1 + cfg.w_onset * onset).unsqueeze(-1)
        l_under = under.mean(dim=(1, 2))
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


#: STOI's band layout and segment: 15 one-third-octave bands from 150 Hz, 384 ms segments, the
#: estimate clipped at -15 dB signal-to-distortion ratio, frames 40 dB below the loudest ignored
STOI_BANDS, STOI_F0, STOI_SEG_S, STOI_BETA_DB, STOI_DYN_DB = 15, 150.0, 0.384, -15.0, 40.0


def third_octave_matrix(n_bins: int, sr: float) -> torch.Tensor:
    """[n_bins, bands] 0/1 matrix: which STFT bin (0..sr/2) lies in which one-third-octave band
    (STOI's centres 150 Hz * 2^(k/3); the bands above Nyquist are dropped)."""
    freqs = torch.linspace(0.0, sr / 2, n_bins)
    k = torch.arange(STOI_BANDS, dtype=torch.float64)
    lo = STOI_F0 * 2.0 ** ((2 * k - 1) / 6)
    hi = STOI_F0 * 2.0 ** ((2 * k + 1) / 6)
    keep = lo < sr / 2
    m = (freqs[:, None] >= lo[keep]) & (freqs[:, None] < hi[keep])
    return m.float()


def stoi_loss(
    est: torch.Tensor, ref: torch.Tensor, sr: float, hop: int, bands: torch.Tensor | None = None
) -> torch.Tensor:
    """est, ref: [B, T, F, 2] spectra with frame hop ``hop`` samples at ``sr`` -> scalar
    1 - mean STOI-style correlation. Segments slide by a quarter of their length; a segment
    counts if its reference energy is within 40 dB of the loudest frame of its example."""
    if bands is None:
        bands = third_octave_matrix(est.shape[2], sr).to(est.device)
    env_e = torch.sqrt(est.square().sum(-1) @ bands + 1e-10)  # [B, T, J]
    env_r = torch.sqrt(ref.square().sum(-1) @ bands + 1e-10)
    n = max(2, int(round(STOI_SEG_S * sr / hop)))
    if env_r.shape[1] < n:
        return est.new_zeros(())
    step = max(1, n // 4)
    seg_e = env_e.unfold(1, n, step)  # [B, S, J, n]
    seg_r = env_r.unfold(1, n, step)
    # clip the estimate, scaled to the reference's energy, at -15 dB SDR above it
    alpha = seg_r.norm(dim=-1, keepdim=True) / (seg_e.norm(dim=-1, keepdim=True) + 1e-8)
    seg_e = torch.minimum(alpha * seg_e, seg_r * (1 + 10 ** (-STOI_BETA_DB / 20)))
    x = seg_r - seg_r.mean(-1, keepdim=True)
    y = seg_e - seg_e.mean(-1, keepdim=True)
    corr = (x * y).sum(-1) / (x.norm(dim=-1) * y.norm(dim=-1) + 1e-8)  # [B, S, J]
    frame_e = env_r.square().sum(-1)  # [B, T]
    floor = frame_e.amax(1, keepdim=True) * 10 ** (-STOI_DYN_DB / 10)
    valid = (frame_e.unfold(1, n, step).mean(-1) > floor) & (frame_e.amax(1, keepdim=True) > 0)
    if not bool(valid.any()):
        return est.new_zeros(())
    return 1 - corr.mean(-1)[valid].mean()
