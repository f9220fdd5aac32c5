"""Training data: the produced mixture has the SNR that was asked; determinism; torch STFT ==
scipy STFT (so training features equal inference features)."""

import numpy as np
import pytest
import scipy.signal
import soundfile as sf
import torch

from rtdenoise.evaluate import Pair, mix_pair
from training import augment
from training.data import MixConfig, MixtureSampler
from training.torch_stft import TorchStft

torch.set_num_threads(1)


def _tone_utterances(rng, n_utts=6):
    out = []
    for i in range(n_utts):
        n = int(rng.integers(2000, 9000))  # 0.25-1.1 s: some shorter than the crop
        t = np.arange(n) / 8000
        x = np.sin(2 * np.pi * (120 + 20 * i) * t) * np.hanning(n)
        out.append((0.2 * x).astype(np.float32))
    return out


@pytest.fixture(scope="module")
def sampler():
    rng = np.random.default_rng(0)
    noise = [rng.standard_normal(12000).astype(np.float32) * 0.1 for _ in range(3)]
    cfg = MixConfig(
        crop_s=1.0,
        p_clip=0.0,
        p_silence=0.0,
        p_colored=0.5,
        p_hum=0.5,
        p_clicks=0.5,
        p_babble=0.5,
        p_telephone=0.5,
        p_reverb=0.5,
    )
    return MixtureSampler(_tone_utterances(rng), noise, cfg)


def test_mixture_snr_is_what_was_asked(sampler):
    for i in range(40):
        ex = sampler.example(seed=3, step=7, rank=0, index=i)
        s = ex["speech"].astype(np.float64)
        n = ex["noisy"].astype(np.float64) - s
        measured = 10 * np.log10(np.mean(s**2) / np.mean(n**2))
        assert abs(measured - ex["snr_db"]) < 0.1
        assert -5 <= ex["snr_db"] <= 20
        assert len(ex["noisy"]) == 8000 and np.max(np.abs(ex["noisy"])) <= 0.99 + 1e-6


def test_mixtures_are_a_pure_function_of_seed_step_rank_index(sampler):
    a = sampler.example(1, 2, 0, 3)
    b = sampler.example(1, 2, 0, 3)
    c = sampler.example(1, 2, 1, 3)
    np.testing.assert_array_equal(a["noisy"], b["noisy"])
    assert not np.array_equal(a["noisy"], c["noisy"])


def test_reverb_target_is_early_part_of_rir():
    rng = np.random.default_rng(0)
    rir, early = augment.synthetic_rir(rng)
    assert rir[0] == early[0] == 1.0
    assert np.all(early[400:] == 0) and np.any(rir[400:] != 0)
    np.testing.assert_array_equal(rir[:400], early[:400])


@pytest.mark.parametrize("alpha,slope", [(0.0, 0.0), (1.0, -1.0), (2.0, -2.0)])
def test_colored_noise_slope(alpha, slope):
    x = augment.colored_noise(2**16, np.random.default_rng(0), alpha=alpha)
    f, p = scipy.signal.welch(x, 8000, nperseg=1024)
    sel = (f > 100) & (f < 3000)
    fit = np.polyfit(np.log10(f[sel]), np.log10(p[sel]), 1)[0]
    assert abs(fit - slope) < 0.15
    assert np.sqrt(np.mean(x**2)) == pytest.approx(1.0)


@pytest.mark.parametrize("n", [8000, 8017, 1234])
def test_torch_stft_matches_scipy(n):
    x = np.random.default_rng(n).standard_normal(n)
    _, _, z = scipy.signal.stft(x, fs=8000, nperseg=519, noverlap=488, scaling="spectrum")
    st = TorchStft()
    spec = st.stft(torch.from_numpy(x)[None].float())[0].numpy()
    assert spec.shape == (z.shape[1], 260, 2) and st.n_frames(n) == z.shape[1]
    np.testing.assert_allclose(spec[..., 0] + 1j * spec[..., 1], z.T, atol=1e-5)
    _, xr = scipy.signal.istft(z, fs=8000, nperseg=519, noverlap=488, scaling="spectrum")
    back = st.istft(torch.from_numpy(spec)[None], n)[0].numpy()
    np.testing.assert_allclose(back, xr[:n], atol=1e-5)
    np.testing.assert_allclose(back, x, atol=1e-5)


def test_pairs_recipe_matches_readme(tmp_path):
    rng = np.random.default_rng(0)
    c = (0.1 * rng.standard_normal(3000)).astype(np.float32)
    nz = (0.5 * rng.standard_normal(1000)).astype(np.float32)
    sf.write(tmp_path / "c.flac", c, 8000, subtype="PCM_16")
    sf.write(tmp_path / "n.flac", nz, 8000, subtype="PCM_16")
    clean, noisy = mix_pair(Pair("c.flac", "n.flac", 200, 5.0), tmp_path)
    c16, _ = sf.read(tmp_path / "c.flac", dtype="float32")
    assert len(noisy) == len(c16)
    snr = 10 * np.log10(np.mean(clean.astype(np.float64) ** 2) / np.mean((noisy - clean) ** 2.0))
    assert snr == pytest.approx(5.0, abs=0.01)
    assert np.max(np.abs(noisy)) <= 0.98 + 1e-6


def test_speaker_balance_draws_speakers_by_duration_power():
    """One long single-voice source must not dominate: with balance 0 every speaker is equally
    likely however much audio it has; with None every file is (the long voice dominates)."""
    long_voice = [np.ones(8000, np.float32)] * 50  # 50 files of speaker A
    others = [np.full(8000, k, np.float32) for k in range(2, 6)]  # four speakers, one file each
    speech = long_voice + others
    keys = ["A"] * 50 + [f"s{k}" for k in range(2, 6)]
    rng = np.random.default_rng(0)
    for balance, expect_a in [(0.0, 1 / 5), (None, 50 / 54), (1.0, 50 / 54)]:
        smp = MixtureSampler(speech, [], MixConfig(speaker_balance=balance), keys)
        draws = [smp._pick(rng)[0] for _ in range(4000)]
        assert np.mean(np.array(draws) == 1.0) == pytest.approx(expect_a, abs=0.03)


def test_crops_do_not_always_start_with_a_gap():
    """A fresh stream must not always begin with noise: a causal model learns that prior and
    mutes files whose speech starts at once. About a third of crops start with a gap."""
    rng = np.random.default_rng(0)
    utts = [np.ones(3000) * k for k in range(1, 5)]
    starts = np.array(
        [np.argmax(augment.concat_utterances(16000, rng, utts) != 0) for _ in range(300)]
    )
    assert 0.55 < np.mean(starts == 0) < 0.85
    assert np.mean(starts > 400) > 0.2


def test_shaped_noise_is_stationary_unit_rms_and_not_a_power_law():
    """Every draw is unit RMS, steady over time, and its spectrum departs from any straight
    line in log-log (the shapes pure power laws lack)."""
    for seed in range(4):
        x = augment.shaped_noise(2**16, np.random.default_rng(seed))
        assert abs(np.sqrt(np.mean(x**2)) - 1) < 1e-6
        quarters = np.sqrt([np.mean(q**2) for q in np.split(x, 4)])
        assert quarters.max() / quarters.min() < 1.5  # brown-ish draws wander a little
        f, p = scipy.signal.welch(x, fs=8000, nperseg=1024)
        k = (f >= 60) & (f <= 3900)
        lf, lp = np.log10(f[k]), 10 * np.log10(p[k])
        resid = lp - np.polyval(np.polyfit(lf, lp, 1), lf)
        assert resid.std() > 2.0  # dB; a power law leaves ~0.5 (estimation noise)


def test_speed_moves_pitch_and_duration_by_the_drawn_factor():
    """A 200 Hz tone played at factor 40/k: its length scales by k/40 and its pitch by 40/k,
    for factors at both ends of the range and in between."""
    sr, n = 8000, 8000
    tone = np.sin(2 * np.pi * 200 * np.arange(n) / sr)
    seen = set()
    for seed in range(40):
        y = augment.speed(tone, np.random.default_rng(seed), (0.9, 1.1))
        factor = n / len(y)
        assert 0.9 - 1e-9 <= factor <= 1.1 + 1e-9
        seen.add(len(y))
        f, p = scipy.signal.periodogram(y[200:-200], fs=sr)
        assert abs(f[np.argmax(p)] - 200 * factor) < 3.0
    assert len(seen) >= 6  # the grid of 1/40 steps, not one or two factors


def test_random_eq_is_stable_and_bounded():
    """Every drawn EQ has its poles inside the unit circle and a bounded response over the
    band: <= 15 dB either way, a tilt or a bump, never a notch that deletes speech; draws
    differ."""
    gains = []
    for seed in range(200):
        b, a = augment.random_eq(np.random.default_rng(seed))
        assert np.all(np.abs(np.roots(a)) < 0.9)
        _, h = scipy.signal.freqz(b, a, worN=256)
        db = 20 * np.log10(np.abs(h))
        assert db.max() < 16 and db.min() > -16
        gains.append(db[-1] - db[0])
    assert np.ptp(gains) > 10  # both tilts, several dB apart


@pytest.mark.parametrize("knob", ["p_eq", "p_voice_boost"])
def test_eq_filters_speech_and_target_alike(sampler, knob):
    """With the EQ (or the voice boost) on and no reverb the target is still exactly the speech
    in the mixture: the model learns to remove noise, not to undo the microphone."""
    import dataclasses

    on = MixtureSampler(
        sampler.speech, sampler.noise, dataclasses.replace(sampler.cfg, **{knob: 1.0}, p_reverb=0.0)
    )
    for i in range(4):
        ex = on.example(7, 3, 0, i)
        np.testing.assert_allclose(ex["target"], ex["speech"], atol=1e-7)


@pytest.mark.parametrize(
    "knob, part",
    [("p_shaped", "noisy"), ("p_speed", "speech"), ("p_eq", "speech"), ("p_voice_boost", "speech")],
)
def test_an_augmentation_off_leaves_the_mixtures_unchanged(sampler, knob, part):
    """p_shaped / p_speed / p_eq = 0 draw nothing, so recipes written before them make the same
    mixtures; on, the part they act on changes (the noise; the speech itself)."""
    import dataclasses

    same, on = (
        MixtureSampler(sampler.speech, sampler.noise, dataclasses.replace(sampler.cfg, **{knob: p}))
        for p in (0.0, 1.0)
    )
    a, b, c = (s.example(5, 1, 0, 2)[part] for s in (sampler, same, on))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_voice_boost_raises_the_fundamental_band_only():
    """The boost is a peak of 3-12 dB between ~100 and ~220 Hz and leaves 1-4 kHz within 1.5 dB."""
    import scipy.signal

    from training import augment

    rng = np.random.default_rng(0)
    for _ in range(20):
        b, a = augment.voice_boost(rng)
        f, h = scipy.signal.freqz(b, a, worN=4096, fs=8000)
        db = 20 * np.log10(np.abs(h))
        assert 3 - 1e-6 <= db.max() <= 12 + 1e-6 and 90 <= f[np.argmax(db)] <= 230
        assert np.abs(db[f >= 1000]).max() < 1.5


@pytest.mark.parametrize("f0", [85.0, 120.0, 200.0, 300.0, 380.0])
def test_median_f0_finds_the_period_not_a_multiple(f0):
    """The f0 the voice boost centres on: a harmonic tone in noise within 5 %, no octave error."""
    from training import augment

    t = np.arange(16000) / 8000
    rng = np.random.default_rng(1)
    x = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 8))
    x = x + 0.3 * rng.standard_normal(len(t))
    assert augment.median_f0(x) == pytest.approx(f0, rel=0.05)
    assert augment.median_f0(rng.standard_normal(16000)) is None  # nothing voiced
    assert augment.median_f0(np.zeros(100)) is None  # shorter than a frame


def test_voice_boost_at_f0_keeps_the_target_the_speech(sampler):
    import dataclasses

    cfg = dataclasses.replace(sampler.cfg, p_voice_boost=1.0, voice_boost_at_f0=True, p_reverb=0.0)
    on = MixtureSampler(sampler.speech, sampler.noise, cfg)
    for i in range(3):
        ex = on.example(7, 3, 0, i)
        np.testing.assert_allclose(ex["target"], ex["speech"], atol=1e-7)
