"""On-the-fly noisy/clean mixtures from any folders of speech and noise.

Audio is loaded once (any of wav/flac/ogg at any rate, resampled to 8 kHz with soxr) and kept
in RAM. A mixture is a pure function of ``(seed, step, rank, index)``: the sampler has no
hidden position, so resuming at step ``s`` replays exactly the batches an uninterrupted run
would have drawn.

Recipe of one training example (``MixConfig``):

1. speech: a random crop of ``crop_s`` seconds; short clips (FSDD digits) are concatenated
   with short gaps until the crop is full; optionally each utterance sped up or slowed down;
2. optional room reverberation (synthetic exponentially decaying RIR); the target is then the
   *early* reverberation (direct path + 50 ms), the late tail is treated as noise;
3. noise: a random crop of a real noise recording and/or synthetic noises (coloured, mains
   hum, clicks/keyboard, babble of other utterances), mixed at random relative levels;
4. optional random EQ (a second-order filter) on the speech and target alike and another on
   the noise; optional telephone band-limiting applied identically to speech, target and noise;
5. the noise is scaled so that the SNR *of the produced mixture*, power(speech) /
   power(noisy - speech), equals the drawn SNR (uniform in ``snr_db``);
6. random level (RMS of the mixture in ``level_db`` dBFS), peak-limited to 0.99, and optional
   mild clipping of the noisy input only.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import lfilter
from tqdm import tqdm

from rtdenoise.errors import UserError

from . import augment as aug

log = logging.getLogger(__name__)

SR = 8000
AUDIO_EXTS = (".wav", ".flac", ".ogg")
#: the repository that holds this package
REPO_ROOT = Path(__file__).resolve().parent.parent
#: environment variable naming the corpus folder (``--data-root`` overrides it)
DATA_ENV = "RTDENOISE_DATA"
#: the corpus when neither ``--data-root`` nor ``$RTDENOISE_DATA`` is given: the shared data
#: folder beside the repository, ``../shared/data/corpus`` from its root (whatever the cwd)
DEFAULT_DATA_ROOT = REPO_ROOT.parent / "shared" / "data" / "corpus"
#: a config path that starts with this lies in the corpus folder
DATA_ROOT_VAR = "{data_root}"


def data_root(root: str | Path | None = None) -> Path:
    """The corpus folder: ``root`` (``--data-root``), else ``$RTDENOISE_DATA``, else
    :data:`DEFAULT_DATA_ROOT`. Given values are paths as typed (relative to the cwd)."""
    value = root if root not in (None, "") else os.environ.get(DATA_ENV)
    return Path(value).expanduser() if value else DEFAULT_DATA_ROOT


def resolve_path(path: str | Path, root: Path) -> Path:
    """A path from a config: ``{data_root}/train/clean`` -> ``root / "train/clean"``; any other
    path is used as it is (absolute, or relative to the cwd)."""
    s = str(path)
    if s.startswith(DATA_ROOT_VAR):
        return root / s[len(DATA_ROOT_VAR) :].lstrip("/\\")
    return Path(s)


@dataclass(frozen=True)
class MixConfig:
    """How training mixtures are made (see the module docstring)."""

    crop_s: float = 2.0
    snr_db: tuple[float, float] = (-5.0, 20.0)
    level_db: tuple[float, float] = (-35.0, -15.0)  # RMS of the mixture, dBFS
    p_real_noise: float = 0.8
    p_colored: float = 0.2
    #: stationary noise with a random smooth spectral shape (augment.shaped_noise); drawn only
    #: when > 0, so recipes without it make exactly the mixtures they made before it existed
    p_shaped: float = 0.0
    p_hum: float = 0.1
    p_clicks: float = 0.1
    p_babble: float = 0.15
    p_telephone: float = 0.1
    p_clip: float = 0.05
    p_reverb: float = 0.0  # off by default: the target stays dry speech
    p_silence: float = 0.03  # speech-free examples: the model must not invent speech
    #: speed perturbation of each drawn utterance (augment.speed, factor in ``speed``): more
    #: voices from the same speakers; drawn only when > 0 (old recipes: the same mixtures)
    p_speed: float = 0.0
    speed: tuple[float, float] = (0.9, 1.1)
    #: a random second-order EQ (augment.random_eq) on the speech and the target alike, and an
    #: independent one on the noise, each with this probability: voices through microphones and
    #: channels the corpus does not have; drawn only when > 0 (old recipes: the same mixtures)
    p_eq: float = 0.0
    #: a peaking filter raising the band of the voice's fundamental (augment.voice_boost) on the
    #: speech and target alike, before the SNR is set: voices with a strong fundamental, which
    #: have less of themselves at 1-3 kHz at a given SNR; drawn only when > 0
    p_voice_boost: float = 0.0
    #: the boost centred on the speech's own median f0 (augment.median_f0; no boost where no
    #: frame is voiced) instead of a centre drawn in 100-220 Hz, so a child's or a high voice's
    #: fundamental is what rises, not the band below it
    voice_boost_at_f0: bool = False
    #: utterances are drawn speaker first, a speaker with probability ~ its duration**balance
    #: (1 = uniform over time, 0 = uniform over speakers; None = uniform over files, where one
    #: long single-voice source dominates); speaker = file name before "__", else its folder
    speaker_balance: float | None = 0.5
    recipe: str = "real"  # "real" (waveform mixtures) or "seed" (Gaussian on the spectrogram)
    seed_sigma: float = 1.0  # "seed" recipe: noise std relative to the spectrogram std

    @staticmethod
    def from_dict(d: dict) -> MixConfig:
        d = dict(d)
        for k in ("snr_db", "level_db", "speed"):
            if k in d:
                d[k] = tuple(d[k])
        return MixConfig(**d)


def list_audio(dirs: list[str | Path]) -> list[Path]:
    """All audio files (wav/flac/ogg) under ``dirs``, recursively, sorted."""
    files: list[Path] = []
    for d in dirs:
        d = Path(d)
        if not d.is_dir():
            raise UserError(f"not a directory: {d}")
        files += sorted(p for p in d.rglob("*") if p.suffix.lower() in AUDIO_EXTS)
    if not files:
        raise UserError(f"no audio files (wav/flac/ogg) under {', '.join(map(str, dirs))}")
    return files


def load_audio(path: Path, sample_rate: int = SR) -> np.ndarray:
    """Read one file as mono float32 [n] at ``sample_rate`` (channel mean, soxr VHQ)."""
    x, sr = sf.read(str(path), dtype="float32", always_2d=True)
    x = x.mean(axis=1)
    if sr != sample_rate:
        import soxr  # only here: a GPU machine trains from 8 kHz shards without it

        x = soxr.resample(x, sr, sample_rate, quality="VHQ").astype(np.float32)
    return x


def speaker_of(path: Path) -> str:
    """Speaker key of a file: the name before ``__`` (corpus convention), else its folder."""
    return path.name.split("__")[0] if "__" in path.name else str(path.parent)


def keep_clip(x: np.ndarray, min_len: int) -> bool:
    """The near-silence filter of every loader: long enough, and above -100 dBFS RMS."""
    return len(x) >= min_len and np.sqrt(np.mean(x.astype(np.float64) ** 2)) > 1e-5


def load_dir(
    dirs: list[str | Path], min_len: int = 1, desc: str = "audio", keys: list[str] | None = None
) -> list[np.ndarray]:
    """Preload every file under ``dirs`` (mono float32 at 8 kHz); drops near-silent files.
    ``keys``, if given, receives the speaker key of every kept file."""
    out = []
    for p in tqdm(list_audio(dirs), desc=f"loading {desc}", leave=False, mininterval=2):
        x = load_audio(p)
        if keep_clip(x, min_len):
            out.append(x)
            if keys is not None:
                keys.append(speaker_of(p))
    log.info("loaded %d %s files (%.1f min)", len(out), desc, sum(map(len, out)) / SR / 60)
    return out


@dataclass
class MixtureSampler:
    """Deterministic mixtures: ``example(seed, step, rank, index) -> (noisy [n], target [n])``."""

    speech: list[np.ndarray]
    noise: list[np.ndarray]
    cfg: MixConfig = field(default_factory=MixConfig)
    #: speaker key per utterance (same order as ``speech``); None = every file its own speaker
    speakers: list[str] | None = None

    def __post_init__(self) -> None:
        keys = self.speakers or [str(i) for i in range(len(self.speech))]
        groups: dict[str, list[int]] = {}
        for i, k in enumerate(keys):
            groups.setdefault(k, []).append(i)
        self._groups = [np.array(v) for _, v in sorted(groups.items())]
        dur = np.array([sum(len(self.speech[i]) for i in g) for g in self._groups], float)
        b = self.cfg.speaker_balance
        w = np.ones(len(self._groups)) if b is None else dur**b
        self._group_p = np.cumsum(w / w.sum())

    def _pick(self, rng: np.random.Generator) -> np.ndarray:
        """Speaker first (probability ~ duration**speaker_balance), then one of its files,
        speed-perturbed with probability ``p_speed``."""
        c = self.cfg
        if c.speaker_balance is None:
            u = self.speech[int(rng.integers(len(self.speech)))]
        else:
            g = self._groups[
                min(int(np.searchsorted(self._group_p, rng.random())), len(self._groups) - 1)
            ]
            u = self.speech[int(g[int(rng.integers(len(g)))])]
        if c.p_speed > 0 and rng.random() < c.p_speed:
            u = aug.speed(u, rng, c.speed)
        return u

    @classmethod
    def from_dirs(
        cls, clean_dirs: list[str | Path], noise_dirs: list[str | Path], cfg: MixConfig
    ) -> MixtureSampler:
        keys: list[str] = []
        speech = load_dir(clean_dirs, min_len=int(0.1 * SR), desc="speech", keys=keys)
        noise = load_dir(noise_dirs, min_len=int(0.1 * SR), desc="noise") if noise_dirs else []
        return cls(speech, noise, cfg, keys)

    @property
    def n_samples(self) -> int:
        return int(round(self.cfg.crop_s * SR))

    def _noise(self, n: int, rng: np.random.Generator) -> np.ndarray:
        c = self.cfg
        parts: list[np.ndarray] = []
        if self.noise and rng.random() < c.p_real_noise:
            rec = self.noise[int(rng.integers(len(self.noise)))].astype(np.float64)
            off = int(rng.integers(len(rec)))
            seg = np.resize(np.roll(rec, -off), n)  # tiles short recordings
            parts.append(aug.unit_rms(seg))
        if rng.random() < c.p_colored:
            parts.append(aug.colored_noise(n, rng))
        if c.p_shaped > 0 and rng.random() < c.p_shaped:
            parts.append(aug.shaped_noise(n, rng))
        if rng.random() < c.p_hum:
            parts.append(aug.mains_hum(n, rng))
        if rng.random() < c.p_clicks:
            parts.append(aug.clicks(n, rng))
        if rng.random() < c.p_babble:
            parts.append(aug.babble(n, rng, self.speech))
        if not parts:
            parts.append(aug.colored_noise(n, rng))
        noise = np.zeros(n)
        for p in parts:
            noise += p * 10 ** (rng.uniform(-10, 0) / 20)
        return noise

    def example(self, seed: int, step: int, rank: int, index: int) -> dict[str, np.ndarray]:
        """One mixture. Returns dict of float32 [n]: ``noisy``, ``target``, ``speech``
        (the speech component actually in the mixture, reverberant if reverb was drawn) and
        float ``snr_db`` (asked for; equals the mixture's SNR unless clipping was drawn)."""
        c = self.cfg
        rng = np.random.default_rng([seed, step, rank, index])
        n = self.n_samples
        if rng.random() < c.p_silence:
            speech = np.zeros(n)
        else:
            speech = aug.concat_utterances(n, rng, self.speech, pick=self._pick)
        target = speech
        if rng.random() < c.p_reverb:
            rir, early = aug.synthetic_rir(rng)
            speech, target = aug.convolve(speech, rir), aug.convolve(speech, early)
        noise = self._noise(n, rng)
        if c.p_voice_boost > 0 and rng.random() < c.p_voice_boost:
            f0 = aug.median_f0(speech) if c.voice_boost_at_f0 else None
            if f0 is not None or not c.voice_boost_at_f0:
                b, a = aug.voice_boost(rng, at=f0)
                speech, target = lfilter(b, a, speech), lfilter(b, a, target)
        if c.p_eq > 0:
            if rng.random() < c.p_eq:
                b, a = aug.random_eq(rng)
                speech, target = lfilter(b, a, speech), lfilter(b, a, target)
            if rng.random() < c.p_eq:
                noise = lfilter(*aug.random_eq(rng), noise)
        if rng.random() < c.p_telephone:
            speech, sos = aug.telephone_band(speech, rng)
            target = aug.sosfilt(sos, target)
            noise = aug.sosfilt(sos, noise)
        snr = float(rng.uniform(*c.snr_db))
        ps, pn = np.mean(speech**2), np.mean(noise**2)
        if ps > 1e-12 and pn > 1e-12:
            noise *= np.sqrt(ps / (pn * 10 ** (snr / 10)))
        elif pn > 1e-12:  # speech-free example: noise at the level drawn below
            noise /= np.sqrt(pn)
        noisy = speech + noise
        rms = np.sqrt(np.mean(noisy**2)) + 1e-12
        gain = 10 ** (rng.uniform(*c.level_db) / 20) / rms
        gain = min(gain, 0.99 / (np.max(np.abs(noisy)) + 1e-12))
        noisy, speech, target = noisy * gain, speech * gain, target * gain
        if rng.random() < c.p_clip:
            noisy = aug.soft_clip(noisy, rng)
        f32 = np.float32
        return {
            "noisy": noisy.astype(f32),
            "target": target.astype(f32),
            "speech": speech.astype(f32),
            "snr_db": snr,
        }

    def batch(self, seed: int, step: int, rank: int, size: int) -> tuple[np.ndarray, np.ndarray]:
        """``size`` examples stacked: (noisy [B, n], target [B, n]) float32."""
        ex = [self.example(seed, step, rank, i) for i in range(size)]
        return np.stack([e["noisy"] for e in ex]), np.stack([e["target"] for e in ex])


def default_dirs(split: str, root: str | Path | None = None) -> tuple[list[Path], list[Path]]:
    """The corpus's ``{split}/clean`` and ``{split}/noise`` folders (corpus: :func:`data_root`)."""
    corpus = data_root(root)
    return [corpus / split / "clean"], [corpus / split / "noise"]
