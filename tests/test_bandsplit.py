"""Full-band output (rtdenoise/bandsplit.py): exact crossover, streaming invariants, gating."""

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st

from rtdenoise.bandsplit import BandSplitConfig, HighBandGain
from rtdenoise.processor import MaskProcessor
from rtdenoise.stft import StftConfig
from rtdenoise.streamer import Streamer

RATES = [16000, 22050, 44100, 48000]
#: the design's framing and that of the shipped lowlat model (asymmetric windows, 15.4 ms)
SYMMETRIC = StftConfig()
LOWLAT = StftConfig(window="hann^3", synthesis_len=124)
TONES = (1000.0, 6000.0, 12000.0)
DATA = Path(__file__).resolve().parent / "data"
MODELS = Path(__file__).resolve().parents[1] / "rtdenoise" / "models"


class PowerMaskBackend:
    """A stand-in model: per-bin mask p / (p + 1e-3) of the frame ``lookahead`` frames back.

    Follows the backend contract (``step`` [C, K, F, 2] -> [C, K, F], lookahead as a delay line),
    so the mask varies with the signal, per channel, like a real model's.
    """

    def __init__(
        self, block_frames: int = 2, lookahead_frames: int = 0, stft: StftConfig = SYMMETRIC
    ) -> None:
        self.block_frames = block_frames
        self.lookahead_frames = lookahead_frames
        self.meta = {"stft": stft.to_dict()}

    def reset(self, channels: int) -> None:
        self.hist = np.zeros((channels, self.lookahead_frames, 260), np.float32)

    def step(self, spec_ri: np.ndarray) -> np.ndarray:
        p = (spec_ri**2).sum(-1)
        seq = np.concatenate([self.hist, p], axis=1)
        self.hist = seq[:, seq.shape[1] - self.lookahead_frames :]
        p = seq[:, : p.shape[1]]
        return (p / (p + 1e-3)).astype(np.float32)


def _masking(
    k: int = 2, la: int = 1, atten_lim_db: float = 20.0, stft: StftConfig = SYMMETRIC
) -> MaskProcessor:
    return MaskProcessor(PowerMaskBackend(k, la, stft), atten_lim_db=atten_lim_db)


def _test_signal(sr: int, seconds: float = 1.0, seed: int = 0) -> np.ndarray:
    """Noise bursts plus the tones below 0.45 * sr (1, 6 and 12 kHz)."""
    rng = np.random.default_rng(seed)
    n = int(sr * seconds)
    t = np.arange(n) / sr
    x = 0.05 * rng.standard_normal(n) * (np.sin(2 * np.pi * 3 * t) > 0)
    for f in TONES:
        if f < 0.45 * sr:
            x += 0.2 * np.sin(2 * np.pi * f * t + f / 1000)
    return x.astype(np.float32)


def _level(y: np.ndarray, f: float, sr: int) -> float:
    """Amplitude of the tone at f in y (lock-in over whole periods of the middle half)."""
    n = len(y)
    seg = slice(n // 4, n // 4 + int(round(n / 2 * f / sr)) * sr // int(f))
    t = np.arange(n)[seg] / sr
    return float(2 * np.abs(np.mean(y[seg] * np.exp(-2j * np.pi * f * t))))


def _feed_chunks(s: Streamer, x: np.ndarray, chunks: list[int]) -> np.ndarray:
    out, pos = [], 0
    for c in chunks:
        out.append(s.feed(x[pos : pos + c]))
        pos += c
    out.append(s.feed(x[pos:]))
    return np.concatenate(out)


# -- exactness ---------------------------------------------------------------------------------


@pytest.mark.parametrize("stft", [SYMMETRIC, LOWLAT], ids=["symmetric", "lowlat"])
@pytest.mark.parametrize("sr", RATES)
def test_identity_full_band_is_the_input_delayed(sr, stft):
    """With identity processing the output is the input, delayed by latency_samples, over the
    full band: the crossover sums back exactly (with either framing)."""
    x = _test_signal(sr)
    s = Streamer(sample_rate=sr, stft=stft)
    assert s.full_band and s.residual_delay == 0.0
    lat = s.latency_samples
    assert lat == Streamer(sample_rate=sr, stft=stft, full_band=False).latency_samples
    y = s.feed(x)
    assert np.abs(y[:lat]).max() <= 1e-3
    np.testing.assert_allclose(y[lat:], x[:-lat], rtol=0, atol=1e-3)
    for f in TONES:
        if f < 0.45 * sr:
            assert _level(y[lat:], f, sr) == pytest.approx(_level(x[:-lat], f, sr), rel=1e-3)
    assert s.underflows == 0


@pytest.mark.parametrize("sr", [16000, 44100])
def test_narrowband_is_todays_telephone_band(sr):
    x = _test_signal(sr)
    y = Streamer(sample_rate=sr, full_band=False).process(x)
    assert _level(y, 1000.0, sr) == pytest.approx(0.2, rel=1e-2)
    assert _level(y, 6000.0, sr) < 0.2 * 10 ** (-60 / 20)


def test_full_band_only_above_8k_and_at_8k_changes_nothing():
    x = _test_signal(8000)
    s = Streamer(_masking(), sample_rate=8000)
    assert not s.full_band
    np.testing.assert_array_equal(s.process(x), Streamer(_masking(), full_band=False).process(x))


# -- streaming invariants ------------------------------------------------------------------


@settings(max_examples=16, deadline=None)
@given(
    sr=st.sampled_from(RATES),
    la=st.integers(0, 2),
    stft=st.sampled_from([SYMMETRIC, LOWLAT]),
    chunks=st.lists(st.integers(0, 3000), min_size=1, max_size=10),
)
def test_streaming_equals_whole_signal_for_any_chunking(sr, la, stft, chunks):
    x = _test_signal(sr, 0.6, seed=len(chunks))
    s = Streamer(_masking(2, la, stft=stft), sample_rate=sr)
    pieces = _feed_chunks(s, x, chunks)
    whole = Streamer(_masking(2, la, stft=stft), sample_rate=sr).feed(x)
    np.testing.assert_allclose(pieces, whole, rtol=0, atol=1e-6)
    assert s.underflows == 0


def test_one_sample_at_a_time_and_reset():
    sr = 22050
    x = _test_signal(sr, 0.3)
    s = Streamer(_masking(), sample_rate=sr)
    whole = s.feed(x)
    s.reset()
    np.testing.assert_allclose(_feed_chunks(s, x, [1] * 4000), whole, rtol=0, atol=1e-6)


def test_process_matches_feed_and_flush():
    sr = 48000
    x = _test_signal(sr, 0.5)
    s = Streamer(_masking(), sample_rate=sr)
    y = s.process(x)
    s.reset()
    streamed = np.concatenate([s.feed(x), s.flush()])[s.latency_samples :]
    np.testing.assert_allclose(y, streamed, rtol=0, atol=1e-6)


@pytest.mark.parametrize("stft", [SYMMETRIC, LOWLAT], ids=["symmetric", "lowlat"])
def test_causal_changing_the_future_leaves_the_past(stft):
    sr = 44100
    x = _test_signal(sr, 0.5)
    x2 = x.copy()
    x2[12000:] = 0.0
    y = Streamer(_masking(2, 1, stft=stft), sample_rate=sr).feed(x)
    y2 = Streamer(_masking(2, 1, stft=stft), sample_rate=sr).feed(x2)
    np.testing.assert_array_equal(y2[:12000], y[:12000])


@pytest.mark.parametrize(
    ("stft", "wait", "smooth", "ahead"), [(SYMMETRIC, 7, 5, 4), (LOWLAT, 1, 3, 0)]
)
def test_gain_timing_fits_in_the_overlap_adds_wait(stft, wait, smooth, ahead):
    """The smoothing and the presence's lookahead use only frames the overlap-add waits for
    anyway: the gain never lags the audio, with either framing."""
    g = HighBandGain(stft, 1, 64, 0, 4096, 48000, 14.0)
    assert (g.wait, len(g._smooth), g._ahead, g.lag) == (wait, smooth, ahead, 0)
    assert g._smooth.sum() == 1.0


@pytest.mark.parametrize("sr", [16000, 44100])
def test_multichannel_is_per_channel(sr):
    x = np.stack([_test_signal(sr, 0.5, seed=1), 0.3 * _test_signal(sr, 0.5, seed=2)], axis=1)
    x[: sr // 4, 1] = 0.0  # one channel silent for a while: its gain must not follow the other
    y = Streamer(_masking(), sample_rate=sr, channels=2).process(x)
    for c in range(2):
        mono = Streamer(_masking(), sample_rate=sr).process(np.ascontiguousarray(x[:, c]))
        np.testing.assert_allclose(y[:, c], mono, rtol=0, atol=1e-6)


@pytest.mark.parametrize("limit_db", [6.0, 12.0])
def test_high_band_noise_goes_down_to_its_floor_and_no_further(limit_db):
    """Noise only above 4.6 kHz, nothing the mask keeps: the band above is attenuated by its
    floor (the attenuation limit, mask_exponent times in dB), not to silence."""
    sr = 48000
    hi = np.random.default_rng(3).standard_normal(sr).astype(np.float32)
    hi -= Streamer(sample_rate=sr, full_band=False).process(hi)
    y = Streamer(_masking(atten_lim_db=limit_db), sample_rate=sr).process(hi)
    mid = slice(sr // 4, -sr // 8)
    ratio_db = 10 * np.log10((y[mid] ** 2).sum() / (hi[mid] ** 2).sum())
    assert ratio_db == pytest.approx(-limit_db * BandSplitConfig().mask_exponent, abs=0.5)


def test_dry_wet_mix_reaches_the_high_band():
    """wet 0 leaves the band above untouched; wet 0.5 attenuates it, never below the floor of
    the mixed gain (0.5 + 0.5 * limit, squared)."""
    sr = 16000
    hi = np.random.default_rng(3).standard_normal(sr).astype(np.float32)
    hi -= Streamer(sample_rate=sr, full_band=False).process(hi)
    mid = slice(sr // 4, -sr // 8)
    removed = {}
    for wet in (0.0, 0.5, 1.0):
        proc = MaskProcessor(PowerMaskBackend(2, 0), atten_lim_db=20.0, wet=wet)
        y = Streamer(proc, sample_rate=sr).process(hi)
        removed[wet] = -10 * np.log10((y[mid] ** 2).sum() / (hi[mid] ** 2).sum())
    assert removed[0.0] == pytest.approx(0.0, abs=1e-3)
    assert 3.0 < removed[0.5] <= -2 * 20 * np.log10(0.5 + 0.5 * 0.1) + 0.5
    assert removed[1.0] > removed[0.5] + 6.0


# -- gating with the shipped model ------------------------------------------------------------


def _band_energy(x: np.ndarray, sr: int, lo: float, hi: float, seg: slice) -> float:
    X = np.fft.rfft(x[seg] * np.hanning(seg.stop - seg.start))
    f = np.fft.rfftfreq(seg.stop - seg.start, 1 / sr)
    return float((np.abs(X[(f >= lo) & (f < hi)]) ** 2).sum())


@pytest.fixture(scope="module")
def speech48k():
    import soxr

    c16, sr16 = sf.read(DATA / "speech16k.flac", dtype="float32")
    return soxr.resample(c16, sr16, 48000).astype(np.float32)


@pytest.mark.parametrize("model", ["default", "lowlat"])
def test_shipped_model_gates_the_high_band_like_the_band_below(speech48k, model):
    """48 kHz: in a noise-only stretch the energy above 4 kHz goes at least as much as the energy
    at 2-4 kHz (within 3 dB); in voiced stretches of clean speech the band above 4 kHz keeps its
    level within 3 dB."""
    from rtdenoise.backends import load_backend

    path = MODELS / f"{model}.onnx"
    if not path.exists():
        pytest.skip(f"no shipped model {path.name}")
    sr = 48000
    proc = MaskProcessor(load_backend("onnx", path))
    speech = np.concatenate([np.zeros(sr, np.float32), speech48k, np.zeros(sr // 2, np.float32)])
    rng = np.random.default_rng(0)
    w = rng.standard_normal(len(speech) + 1)
    noise = w[1:] + 0.5 * w[:-1]  # mildly tilted, up to 24 kHz
    noise *= np.sqrt((speech48k**2).mean() / (noise**2).mean() / 10 ** (5 / 10))  # 5 dB SNR
    noisy = (speech + noise).astype(np.float32)

    y = Streamer(proc, sample_rate=sr).process(noisy)
    pause = slice(int(0.3 * sr), int(0.95 * sr))

    def removed_db(lo: float, hi: float) -> float:
        return 10 * np.log10(
            _band_energy(noisy, sr, lo, hi, pause) / _band_energy(y, sr, lo, hi, pause)
        )

    low, high = removed_db(2000, 4000), removed_db(4000, sr / 2)
    assert low > 6.0  # the model does remove this noise
    assert high >= low - 3.0

    yc = Streamer(proc, sample_rate=sr).process(speech)
    frame = int(0.032 * sr)
    e_in, e_out, voiced = [], [], []
    for a in range(sr, sr + len(speech48k) - frame, frame // 2):
        seg = slice(a, a + frame)
        lf = _band_energy(speech, sr, 100, 1000, seg)
        hf = _band_energy(speech, sr, 4000, sr / 2, seg)
        e_in.append(hf)
        e_out.append(_band_energy(yc, sr, 4000, sr / 2, seg))
        voiced.append((lf, hf))
    lf, hf = np.array(voiced).T
    v = (lf > lf.max() * 10 ** (-2.0)) & (lf > hf)  # within 20 dB of the loudest, voicing dominant
    assert v.sum() > 40
    kept = 10 * np.log10(np.array(e_out)[v].sum() / np.array(e_in)[v].sum())
    assert abs(kept) <= 3.0


# -- file, live and eval mode -----------------------------------------------------------------


@pytest.mark.parametrize("narrowband", [False, True])
def test_file_mode_full_band_by_default_narrowband_on_request(tmp_path, capsys, narrowband):
    from rtdenoise import cli

    sr = 48000
    x = _test_signal(sr, 0.5)
    src, dst = tmp_path / "in.wav", tmp_path / "out.wav"
    sf.write(src, x, sr, subtype="FLOAT")
    flags = ["--narrowband"] if narrowband else []
    args = ["file", "-q", "--passthrough", "--block-seconds", "0.07", *flags, str(src), str(dst)]
    assert cli.main(args) == 0, capsys.readouterr().err
    y, _ = sf.read(dst, dtype="float32")
    assert y.shape == x.shape
    if narrowband:  # today's telephone band
        assert _level(y, 1000.0, sr) == pytest.approx(0.2, rel=1e-2)
        assert _level(y, 6000.0, sr) < 1e-3 and _level(y, 12000.0, sr) < 1e-3
    else:  # the input itself, full band
        np.testing.assert_allclose(y, x, rtol=0, atol=1e-3)


@pytest.mark.parametrize("command", ["file", "live", "eval"])
def test_narrowband_is_a_shared_processing_option(command):
    from rtdenoise import cli
    from rtdenoise.file_mode import streamer_options

    parser = cli.build_parser(command)
    base = {"file": ["a.wav", "b.wav"], "live": [], "eval": ["--pairs", "p.csv"]}[command]
    assert streamer_options(parser.parse_args([command, *base])) == {"full_band": True}
    narrow = parser.parse_args([command, *base, "--narrowband"])
    assert streamer_options(narrow) == {"full_band": False}


@pytest.mark.parametrize("narrowband", [False, True])
def test_python_api_full_band_by_default_narrowband_on_request(narrowband):
    import rtdenoise

    sr = 48000
    x = _test_signal(sr, 0.5)
    y = rtdenoise.denoise(x, sr, passthrough=True, narrowband=narrowband)
    if narrowband:
        assert _level(y, 12000.0, sr) < 1e-3
    else:
        np.testing.assert_allclose(y, x, rtol=0, atol=1e-3)
