"""Training loop: a tiny run reduces the loss, resume is exact, DDP (gloo, 2 processes) works.

Uses the project's model with a tiny configuration when ``rtdenoise.model`` offers one,
otherwise a small local stand-in with the same contract (forward -> mask, vq_loss, perplexity;
set_feature_stats; dropout so that RNG state matters for exact resume).
"""

import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.multiprocessing as mp

from rtdenoise.checkpoint import read_checkpoint
from training import train as T

torch.set_num_threads(1)


class StandIn(torch.nn.Module):
    """Causal conv mask estimator over normalised log-magnitude: [B, T, F, 2] -> [B, T, F]."""

    def __init__(self, n_freqs: int = 260) -> None:
        super().__init__()
        self.register_buffer("feat_mean", torch.zeros(n_freqs))
        self.register_buffer("feat_std", torch.ones(n_freqs))
        self.conv = torch.nn.Conv1d(n_freqs, 32, 3)
        self.drop = torch.nn.Dropout(0.1)
        self.out = torch.nn.Conv1d(32, n_freqs, 1)

    def raw_features(self, spec):
        return torch.log(spec.pow(2).sum(-1) + 1e-10)

    def set_feature_stats(self, mean, std):
        self.feat_mean.copy_(mean)
        self.feat_std.copy_(std)

    def forward(self, spec):
        f = (self.raw_features(spec) - self.feat_mean) / self.feat_std  # [B, T, F]
        h = torch.nn.functional.pad(f.transpose(1, 2), (2, 0))
        h = self.drop(torch.relu(self.conv(h)))
        mask = torch.sigmoid(self.out(h)).transpose(1, 2)
        vq = 0.01 * h.pow(2).mean()
        return mask, vq, torch.tensor(1.0)


#: the project's rt model, tiny: integration with its VQ (EMA buffers), BatchNorm and features
TINY_RT = {
    "preset": "rt",
    "widths": [4, 6],
    "bottleneck_dilations": [1],
    "codebook_size": 16,
    "code_dim": 4,
    "context_frames": 16,
    "se_min_hidden": 2,
}

#: the coarse grid on top (rtdenoise/coarse_grid.py): network every 2nd frame, bands above 200
TINY_COARSE = {"frame_stride": 2, "band_split": 200, "band_width": 4, "mask_head": "affine"}


def _standin(monkeypatch):
    monkeypatch.setattr(T, "build_model", lambda cfg: StandIn())
    monkeypatch.setattr(
        T, "save_best", lambda path, model, **extra: torch.save(model.state_dict(), path)
    )


@pytest.fixture(params=["standin", "rt", "coarse"])
def model_kind(request, monkeypatch):
    """A stand-in with dropout (RNG state matters) and the real rt model, tiny, with and
    without the coarse grid."""
    if request.param == "standin":
        _standin(monkeypatch)
    else:
        pytest.importorskip("rtdenoise.model")
    if request.param == "coarse":
        build = T.build_model
        monkeypatch.setattr(T, "build_model", lambda cfg: build({**cfg, **TINY_COARSE}))
    return request.param


def _make_data(root: Path) -> dict:
    """A few generated clips: harmonic 'speech' and coloured noises, plus a val pairs.csv."""
    rng = np.random.default_rng(0)
    for split in ("clean", "noise"):
        (root / split).mkdir(parents=True, exist_ok=True)
    for i in range(4):
        t = np.arange(6000 + 1000 * i) / 8000
        f0 = 110 + 25 * i + 10 * np.sin(2 * np.pi * 3 * t)
        ph = 2 * np.pi * np.cumsum(f0) / 8000
        x = sum(np.sin(k * ph) / k for k in range(1, 15)) * (np.sin(2 * np.pi * 2 * t) > -0.3)
        sf.write(root / "clean" / f"s{i}.wav", (0.1 * x).astype(np.float32), 8000)
        nz = np.cumsum(rng.standard_normal(16000)) if i % 2 else rng.standard_normal(16000)
        nz = nz / np.abs(nz).max() * 0.3
        # a 16 kHz noise file: the loader must resample it
        sf.write(root / "noise" / f"n{i}.flac", np.repeat(nz, 2).astype(np.float32), 16000)
    with open(root / "pairs.csv", "w") as f:
        f.write("clean,noise,noise_offset,snr_db\n")
        for i in range(2):
            f.write(f"clean/s{i}.wav,noise/n{i}.flac,100,{5 * i}\n")
    return {
        "train_clean": [str(root / "clean")],
        "train_noise": [str(root / "noise")],
        "val_pairs": str(root / "pairs.csv"),
        "mix": {"crop_s": 0.5},
    }


def _cfg(data: dict, steps: int, model: str = "standin", **train) -> dict:
    cfg = T.load_config(None, [])
    cfg["data"] = data
    cfg["model"] = dict(TINY_RT)
    cfg["optim"].update({"lr": 1e-2, "warmup_steps": 2})
    cfg["train"].update(
        {
            "steps": steps,
            "batch_size": 4,
            "log_every": 1,
            "ckpt_every": 1,
            "val_every": 0,
            "stats_examples": 4,
            **train,
        }
    )
    return cfg


def _fixed_batch_loss(tr: T.Trainer) -> float:
    step, tr.step = tr.step, 10**6  # a batch no training step draws
    nspec, tspec, _, _ = tr._batch()
    tr.step = step
    tr.model.eval()
    with torch.no_grad():
        mask = tr.model(nspec)[0]
    return float(T.spectral_loss(nspec * mask.unsqueeze(-1), tspec, tr.loss_cfg, nspec))


def test_overrides_parse_json_and_strings():
    cfg = T.load_config(None, ["optim.lr=3e-4", "train.select=pesq", "data.mix.snr_db=[0,5]"])
    assert cfg["optim"]["lr"] == 3e-4 and cfg["train"]["select"] == "pesq"
    assert cfg["data"]["mix"]["snr_db"] == [0, 5]


def test_tiny_run_reduces_loss_and_validates(tmp_path, model_kind):
    data = _make_data(tmp_path / "data")
    tr = T.Trainer(_cfg(data, 100, val_every=100), tmp_path / "run")
    before = _fixed_batch_loss(tr)
    tr.run()
    after = _fixed_batch_loss(tr)
    assert after < 0.85 * before
    rows = (tmp_path / "run" / "val.csv").read_text().splitlines()
    assert rows[1].startswith("noisy") and len(rows) == 3  # header, noisy baseline, step 100
    assert (tmp_path / "run" / "best.pt").exists() and (tmp_path / "run" / "last.pt").exists()
    # feature statistics were measured and stored in the model
    assert not torch.allclose(tr.model.feat_mean, torch.zeros(260))
    assert float(tr.model.feat_mean.mean()) != -14.0  # not the model's placeholder either


def test_resume_gives_exactly_the_same_next_steps(tmp_path, model_kind):
    """A run stopped at a step (--stop-step: schedule of the whole run, the weights of that
    step written) and resumed ends exactly where the uninterrupted run does; a run that
    completes its schedule writes its last step's weights."""
    data = _make_data(tmp_path / "data")
    full = T.Trainer(_cfg(data, 6), tmp_path / "full")
    full.run()
    # a completed schedule leaves its last step's weights as a model checkpoint
    assert sorted(p.name for p in (tmp_path / "full").glob("step*.pt")) == ["step6.pt"]
    part = T.Trainer(_cfg(data, 6), tmp_path / "part", stop_step=3)
    part.run()
    assert part.step == 3 and (tmp_path / "part" / "step3.pt").exists()
    del part
    resumed = T.Trainer(_cfg(data, 6), tmp_path / "part")
    assert resumed.step == 3
    resumed.run()
    for (k, a), b in zip(
        full.model.state_dict().items(), resumed.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), k
    sa, sb = full.optim.state_dict()["state"], resumed.optim.state_dict()["state"]
    assert all(torch.equal(sa[i]["exp_avg"], sb[i]["exp_avg"]) for i in sa)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, cfg: dict, out: str) -> None:
    os.environ.update(
        {
            "RANK": str(rank),
            "WORLD_SIZE": str(world),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "LOCAL_RANK": str(rank),
        }
    )
    torch.set_num_threads(1)
    T.build_model = lambda c: StandIn()  # spawned processes do not inherit monkeypatches
    T.save_best = lambda path, model, **extra: torch.save(model.state_dict(), path)
    tr = T.Trainer(cfg, Path(out))
    stats = tr.run()
    params = torch.cat([p.detach().flatten() for p in tr.model.parameters()])
    torch.save({"params": params, "loss": stats["loss"], "step": tr.step}, f"{out}/rank{rank}.pt")
    torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_ddp_two_cpu_processes_stay_in_sync(tmp_path):
    data = _make_data(tmp_path / "data")
    cfg = _cfg(data, 3, batch_size=2)
    out = tmp_path / "ddp"
    out.mkdir()
    mp.spawn(_ddp_worker, args=(2, _free_port(), cfg, str(out)), nprocs=2, join=True)
    r0, r1 = torch.load(out / "rank0.pt"), torch.load(out / "rank1.pt")
    assert r0["step"] == r1["step"] == 3
    torch.testing.assert_close(r0["params"], r1["params"], rtol=0, atol=1e-6)  # all-reduced grads
    assert r0["loss"] != r1["loss"]  # each rank drew its own batch
    assert (out / "last.pt").exists() and json.loads((out / "config.json").read_text())


def test_seed_recipe_adds_gaussian_noise_on_the_spectrogram(tmp_path, monkeypatch):
    """The original's recipe, kept to reproduce it: noisy = clean spectrogram + sigma * std *
    Gaussian noise (not a waveform mixture)."""
    _standin(monkeypatch)
    data = _make_data(tmp_path / "data")
    data["mix"] = {"crop_s": 0.5, "recipe": "seed", "seed_sigma": 0.5}
    tr = T.Trainer(_cfg(data, 1), tmp_path / "run")
    nspec, tspec, _, _ = tr._batch()
    diff = (nspec - tspec).flatten(1)
    ratio = diff.std(1) / tspec.flatten(1).std(1)
    torch.testing.assert_close(ratio, torch.full_like(ratio, 0.5), rtol=0.05, atol=0)
    n2, _, _, _ = tr._batch()
    torch.testing.assert_close(nspec, n2)  # deterministic in (seed, step, rank)


def test_init_from_checkpoint_starts_fine_tuning_from_its_weights(tmp_path, monkeypatch):
    _standin(monkeypatch)
    data = _make_data(tmp_path / "data")
    base = T.Trainer(_cfg(data, 3), tmp_path / "base")
    base.run()
    cfg = _cfg(data, 3, init=str(tmp_path / "base" / "last.pt"))
    ft = T.Trainer(cfg, tmp_path / "ft")
    assert ft.step == 0
    for (k, a), b in zip(
        base.model.state_dict().items(), ft.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), k  # weights and feature statistics come from the checkpoint


@pytest.mark.parametrize("where", ["init", "resume"])
def test_checkpoints_that_hold_code_are_refused(tmp_path, monkeypatch, where):
    """train.init=x.pt and OUT/last.pt are read weights-only: a pickle that would create a file
    is refused with one line (UserError; main() prints it without a traceback), nothing runs."""
    from rtdenoise.errors import UserError
    from tests.test_checkpoint import malicious_checkpoint

    _standin(monkeypatch)
    data = _make_data(tmp_path / "data")
    target = tmp_path / "pwned"
    (tmp_path / "run").mkdir()
    if where == "init":
        cfg = _cfg(data, 3, init=str(malicious_checkpoint(tmp_path / "evil.pt", target)))
    else:
        cfg = _cfg(data, 3)
        malicious_checkpoint(tmp_path / "run" / "last.pt", target)
    with pytest.raises(UserError, match="refusing to load .*calls io.open"):
        T.Trainer(cfg, tmp_path / "run")
    assert not target.exists()


def test_corpus_location_from_data_root_env_or_default(tmp_path, monkeypatch, capsys):
    """{data_root} paths: --data-root, else $RTDENOISE_DATA, else ../shared/data/corpus beside
    the repository (not the cwd); a missing corpus is one clear line naming both settings."""
    from training import data as D

    monkeypatch.delenv(D.DATA_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    repo = Path(T.__file__).resolve().parent.parent
    assert D.data_root() == repo.parent / "shared" / "data" / "corpus"
    monkeypatch.setenv(D.DATA_ENV, str(tmp_path / "env"))
    assert D.data_root() == tmp_path / "env"
    assert D.data_root(tmp_path / "cli") == tmp_path / "cli"  # --data-root wins
    assert D.resolve_path("{data_root}/train/clean", Path("c")) == Path("c/train/clean")
    assert D.resolve_path("x/y", Path("c")) == Path("x/y")  # other paths as given

    _standin(monkeypatch)
    _make_data(tmp_path / "corpus" / "train")  # clean/ and noise/ as the corpus has them
    cfg = _cfg(T.load_config(None, [])["data"], 2)
    tr = T.Trainer(
        {**cfg, "data": {**cfg["data"], "root": str(tmp_path / "corpus")}}, tmp_path / "r"
    )
    assert tr.data_path("val_pairs") == tmp_path / "corpus" / "val" / "pairs.csv"
    assert len(tr.sampler.speech) == 4
    monkeypatch.setenv(D.DATA_ENV, str(tmp_path / "nowhere"))
    capsys.readouterr()
    code = T.main(["--out", str(tmp_path / "r2"), "train.steps=1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1 and "corpus folder not found" in err[0]
    assert "--data-root" in err[0] and "RTDENOISE_DATA" in err[0]


def test_asymmetric_loss_weighs_removed_speech_more_than_residual_noise():
    """w_under: the same compressed-magnitude error costs (w_mag + w_under) / w_mag more when the
    estimate is below the target; w_under = 0 is the symmetric loss."""
    from training.losses import LossConfig, spectral_loss

    ref = torch.randn(2, 20, 260, 2)
    mag = ref.square().sum(-1, keepdim=True).sqrt()
    c = 0.3
    # estimates whose compressed magnitude is the target's -/+ the same amount, same phase
    down = ref * ((mag**c - 0.05).clamp_min(1e-3) ** (1 / c) / mag)
    up = ref * ((mag**c + 0.05) ** (1 / c) / mag)
    sym = LossConfig(compress=c, w_mag=1.0, w_cplx=0.0)
    asym = LossConfig(compress=c, w_mag=1.0, w_cplx=0.0, w_under=2.0)
    torch.testing.assert_close(
        spectral_loss(down, ref, sym), spectral_loss(up, ref, sym), rtol=0.05, atol=0
    )
    torch.testing.assert_close(spectral_loss(up, ref, asym), spectral_loss(up, ref, sym))
    ratio = spectral_loss(down, ref, asym) / spectral_loss(down, ref, sym)
    torch.testing.assert_close(ratio, torch.tensor(3.0), rtol=1e-4, atol=0)


def test_onset_weight_marks_level_rises_and_weighs_only_removed_speech_there():
    """onset_weight: 1 for the ``frames`` after a word starts (its level far above the minimum
    of the frames before it), 0 in steady speech, in silence and at the crop's start; w_onset
    raises only the removed-speech term, only in those frames (0 = the loss without it)."""
    from training.losses import LossConfig, onset_weight, spectral_loss

    t, f = 200, 12
    level = torch.full((t,), 1e-3)
    level[80:] = 1.0  # a word starts at frame 80, 60 dB above the silence before it
    ref = torch.stack([level[None, :, None].expand(1, t, f), torch.zeros(1, t, f)], -1)
    o = onset_weight(ref, frames=26)
    assert o.shape == (1, t)
    assert torch.all(o[0, 80:106] == 1) and torch.all(o[0, 106:] == 0) and torch.all(o[0, :80] == 0)
    gentle = torch.stack(
        [torch.linspace(0.5, 1.0, t)[None, :, None].expand(1, t, f), 0 * ref[..., 0]], -1
    )
    assert float(onset_weight(gentle, 26).max()) == 0  # a 6 dB swell is no onset

    est_down, est_up = ref * 0.5, ref * 2.0  # speech removed / noise left, everywhere
    base = LossConfig(w_mag=0.0, w_cplx=0.0, w_under=1.0)
    on = LossConfig(w_mag=0.0, w_cplx=0.0, w_under=1.0, w_onset=3.0)
    torch.testing.assert_close(
        spectral_loss(est_up, ref, on, onset=o), spectral_loss(est_up, ref, base)
    )
    torch.testing.assert_close(spectral_loss(est_down, ref, on), spectral_loss(est_down, ref, base))
    under = torch.relu(ref.norm(dim=-1) ** 0.3 - est_down.norm(dim=-1) ** 0.3) ** 2  # [1, t, f]
    want = (under * (1 + 3.0 * o).unsqueeze(-1)).mean() / (ref.norm(dim=-1) ** 0.6).mean()
    torch.testing.assert_close(spectral_loss(est_down, ref, on, onset=o), want, rtol=1e-4, atol=0)


def test_speech_norm_weighs_every_snr_alike_and_bounds_speech_free_examples():
    """loss.norm='speech': the same relative error on the speech costs the same whatever noise
    the mixture had ('noisy' divides by the mixture and so discounts low-SNR examples); a
    speech-free example's loss stays finite through the floor."""
    from training.losses import LossConfig, spectral_loss

    torch.manual_seed(0)
    ref = torch.randn(1, 20, 260, 2)
    est = 0.7 * ref
    quiet, loud = 0.1 * torch.randn_like(ref), 3.0 * torch.randn_like(ref)
    by_noisy = LossConfig(w_cplx=0.0)
    by_speech = LossConfig(w_cplx=0.0, norm="speech", norm_floor=0.0)
    a, b = (spectral_loss(est, ref, by_speech, ref + n) for n in (quiet, loud))
    torch.testing.assert_close(a, b)
    a, b = (spectral_loss(est, ref, by_noisy, ref + n) for n in (quiet, loud))
    assert float(b) < 0.7 * float(a)
    silent = torch.zeros_like(ref)
    floored = LossConfig(norm="speech", norm_floor=0.1)
    loss = spectral_loss(0.1 * loud, silent, floored, loud)
    # residual noise at -20 dB: (0.1^0.6) / 0.1 = 2.5, not the 1e8 of an unfloored target norm
    assert torch.isfinite(loss) and 2.0 < float(loss) < 3.0
    with pytest.raises(ValueError, match="loss.norm"):
        LossConfig(norm="clean")


def test_grown_bottleneck_starts_as_the_checkpoint(tmp_path):
    """train.init from a checkpoint with fewer bottleneck dilations: the new residual layers
    start as the identity, so the grown model computes exactly what the checkpoint did."""
    from rtdenoise.model import DenoiserNet, preset_config, save_checkpoint

    small = DenoiserNet(preset_config("rt", widths=(4, 6), bottleneck_dilations=(1, 2))).eval()
    save_checkpoint(tmp_path / "small.pt", small)
    big = DenoiserNet(preset_config("rt", widths=(4, 6), bottleneck_dilations=(1, 2, 4, 8)))
    st = torch.load(tmp_path / "small.pt", weights_only=True)
    missing, unexpected = big.load_state_dict(st["state_dict"], strict=False)
    assert T._zero_new_residuals(big, missing) == set(missing) and not unexpected
    x = torch.randn(1, 50, 260, 2)
    with torch.no_grad():
        torch.testing.assert_close(big.eval()(x)[0], small(x)[0])


def test_grown_input_channel_starts_as_the_checkpoint(tmp_path):
    """train.init from a checkpoint without the harmonic comb channel: the first stage's and
    the head's weights for the new input channel start at zero, so the grown model computes
    exactly what the checkpoint did."""
    from rtdenoise.model import DenoiserNet, preset_config, save_checkpoint

    torch.manual_seed(0)
    cfg = dict(widths=(4, 6), frame_stride=2, mask_head="affine", band_split=130, band_width=5)
    small = DenoiserNet(preset_config("rt", **cfg)).eval()
    save_checkpoint(tmp_path / "small.pt", small)
    big = DenoiserNet(preset_config("rt", harmonic_channel=True, **cfg)).eval()
    weights = torch.load(tmp_path / "small.pt", weights_only=True)["state_dict"]
    padded = T._zero_new_inputs(big, weights)
    assert sorted(padded) == ["net.enc.0.conv.block.conv.weight", "net.out.weight"]
    big.load_state_dict(weights)
    x = torch.randn(1, 50, 260, 2)
    with torch.no_grad():
        torch.testing.assert_close(big(x)[0], small(x)[0])
        big.net.out.weight[:, -1].fill_(1.0)  # the channel reaches the mask once it has weight
        assert (big(x)[0] - small(x)[0]).abs().max() > 1e-3


def test_packed_shards_give_the_same_mixtures(tmp_path):
    """training.pack: shards (several, tiny size limit) hold the folders' audio in order, to
    16-bit precision, and a sampler built from them draws the same mixtures."""
    from training import pack
    from training.data import MixConfig, MixtureSampler

    data = _make_data(tmp_path / "data")
    m = pack.pack(data["train_clean"], data["train_noise"], tmp_path / "shards", max_mb=0.05)
    assert m["speech_shards"] > 1 and m["speech_files"] == 4 and m["noise_files"] == 4
    assert all(p.stat().st_size <= 0.05e6 for p in (tmp_path / "shards").glob("*.npz"))
    speech, keys, noise = pack.load_shards(tmp_path / "shards")
    cfg = MixConfig(crop_s=0.5)
    ref = MixtureSampler.from_dirs(data["train_clean"], data["train_noise"], cfg)
    assert keys == ref.speakers and len(speech) == len(ref.speech) == 4
    for a, b in zip(speech + noise, ref.speech + ref.noise, strict=True):
        np.testing.assert_allclose(a, b, atol=np.abs(b).max() / 32767)
    got = MixtureSampler(speech, noise, cfg, keys).batch(0, 5, 0, 3)
    want = ref.batch(0, 5, 0, 3)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, atol=1e-3)


def test_gpu_recipe_rehearsal_on_cpu(tmp_path):
    """The GPU recipe (training/configs/gpu.json: shards, data workers, large batch) with a
    tiny setting: worker processes feed exactly the batches the main process would mix."""
    from training import pack

    data = _make_data(tmp_path / "data")
    pack.pack(data["train_clean"], data["train_noise"], tmp_path / "shards")
    recipe = json.loads((Path(T.__file__).parent / "configs" / "gpu.json").read_text())
    assert recipe["train"]["workers"] >= 4 and recipe["data"]["shards"]
    runs = {}
    for workers in (0, 2):
        cfg = T.deep_update(T.load_config(None, []), recipe)
        cfg["data"] = {
            "shards": str(tmp_path / "shards"),
            "val_pairs": data["val_pairs"],
            "mix": {**recipe["data"].get("mix", {}), "crop_s": 0.5},
        }
        cfg["model"].update({k: v for k, v in TINY_RT.items() if k != "preset"})
        cfg["train"].update(
            {
                "steps": 4,
                "batch_size": 3,
                "workers": workers,
                "val_every": 0,
                "stats_examples": 4,
                "threads": 1,
                "init": None,
            }
        )
        tr = T.Trainer(cfg, tmp_path / f"run{workers}")
        tr.run()
        runs[workers] = tr
    assert runs[2].step == 4 and runs[2]._stream is None
    for a, b in zip(runs[0].model.parameters(), runs[2].model.parameters(), strict=True):
        torch.testing.assert_close(a, b)


def test_stoi_loss_orders_mixtures_as_pystoi_does():
    """The STOI-style term: 0 for the target at any gain, and on speech + noise at several SNRs
    its 1 - loss follows pystoi's STOI (same order, close values); gradients reach the input."""
    import soxr
    from pystoi import stoi

    from training.losses import stoi_loss
    from training.torch_stft import TorchStft

    c16, _ = sf.read(Path(__file__).parent / "data" / "speech16k.flac", dtype="float32")
    clean = soxr.resample(c16, 16000, 8000).astype(np.float32)
    st = TorchStft()
    ref = st.stft(torch.from_numpy(clean)[None])
    assert float(stoi_loss(3.0 * ref, ref, 8000, 31)) < 0.01
    noise = np.random.default_rng(0).standard_normal(clean.size).astype(np.float32)
    noise *= np.sqrt(np.mean(clean**2) / np.mean(noise**2))
    ours, theirs = [], []
    for snr in (-10, -5, 0, 5, 10, 20):
        noisy = clean + noise * 10 ** (-snr / 20)
        est = st.stft(torch.from_numpy(noisy)[None]).requires_grad_(True)
        loss = stoi_loss(est, ref, 8000, 31)
        loss.backward()
        assert est.grad is not None and float(est.grad.abs().sum()) > 0
        ours.append(1 - float(loss.detach()))
        theirs.append(stoi(clean, noisy, 8000))
    assert np.all(np.diff(ours) > 0) and np.all(np.diff(theirs) > 0)
    assert np.max(np.abs(np.array(ours) - np.array(theirs))) < 0.1


def test_ablation_runs_arms_from_one_start_and_continues(tmp_path, monkeypatch, capsys):
    """training.ablate: each arm trains from the same config for the same steps, is scored on
    the same pairs, the table has a paired-difference column against the first arm, and a rerun
    reads finished arms back instead of training them again."""
    from training import ablate as A

    cfg = _cfg(_make_data(tmp_path / "d"), 2)
    base = tmp_path / "base.json"
    base.write_text(json.dumps(cfg))
    argv = ["--config", str(base), "--out", str(tmp_path / "abl"), "--steps", "2",
            "--val-pairs", "2", "ref", "stoi loss.w_stoi=0.5"]  # fmt: skip
    assert A.main(argv) == 0
    res = json.loads((tmp_path / "abl" / "ablation.json").read_text())
    assert list(res["arms"]) == ["ref", "stoi"] and res["notes"]["stoi"] == "loss.w_stoi=0.5"
    for arm in res["arms"].values():
        assert arm["steps"] == 2 and len(arm["pesq"]) == len(arm["stoi"]) == 2
    assert (tmp_path / "abl" / "stoi" / "final.pt").exists()
    assert json.loads((tmp_path / "abl" / "stoi" / "config.json").read_text())["loss"] == {
        **cfg["loss"],
        "w_stoi": 0.5,
    }
    md = (tmp_path / "abl" / "ablation.md").read_text().splitlines()
    assert len(md) == 4 and "| ref |" in md[2] and "±" in md[3]
    assert "STOI <= 0 dB" in md[0] and arm["snr"] == [0.0, 5.0]  # the pairs.csv SNRs
    # the low-SNR column keeps the pairs aligned and ignores those above 0 dB
    arm = {**arm, "stoi": [0.5, 0.9], "snr": [-5.0, 10.0]}
    assert "| 0.5000 | ref |" in A.table({"a": arm, "b": {**arm, "stoi": [0.5, 0.1]}}, {})

    def no_training(*a, **k):
        raise AssertionError("a finished arm was trained again")

    monkeypatch.setattr(T, "Trainer", no_training)
    assert A.main(argv) == 0
    capsys.readouterr()
    assert A.main(argv[:-2] + ["bad=1"]) == 2
    assert "starts with its name" in capsys.readouterr().err


def test_standard_framing_twin_differs_from_the_low_latency_run_only_in_framing():
    """rt_std.json is rt_low.json with the design's symmetric framing: the comparison of issue
    #12 (what the low-latency framing costs a model trained the same way) rests on it."""
    cfgs = Path(T.__file__).parent / "configs"
    low = json.loads((cfgs / "rt_low.json").read_text())
    std = json.loads((cfgs / "rt_std.json").read_text())
    assert (low["model"]["stft_window"], std["model"]["stft_window"]) == ("hann^3", "hann")
    for c in (low, std):
        del c["model"]["stft_window"], c["model"]["stft_synthesis_len"]
    assert low == std


def test_the_cheap_run_trains_the_ablated_network_with_the_adopted_recipe():
    """rt_cheap_stoi.json (the long run of the cheap network) trains the network of the `cheap`
    arm of the architecture ablation (rt_cheap.json) on the recipe the ablations kept: the
    mixing of rt_low.json, the asymmetric term and the STOI term."""
    cfgs = Path(T.__file__).parent / "configs"
    run = json.loads((cfgs / "rt_cheap_stoi.json").read_text())
    arm = json.loads((cfgs / "rt_cheap.json").read_text())
    low = json.loads((cfgs / "rt_low.json").read_text())
    assert run["model"] == arm["model"]
    assert run["data"] == low["data"]
    assert run["loss"] == {**low["loss"], "w_stoi": 0.3}
    # the next CPU stage trains the same network from the shipped weights
    nxt = json.loads((cfgs / "rt_cheap_next.json").read_text())
    assert nxt["model"] == run["model"] and nxt["loss"] == run["loss"]
    assert nxt["train"]["init"] == "rtdenoise/models/lowlat.pt"
    # the low-SNR stage: the same network from the shipped weights, the two changes that the
    # low-SNR ablation found to raise STOI at <= 0 dB, nothing else
    lows = json.loads((cfgs / "rt_cheap_lowsnr.json").read_text())
    nxt = json.loads((cfgs / "rt_cheap_lowsnr_next.json").read_text())
    assert {**nxt, "seed": 8, "optim": lows["optim"]} == lows  # its next stage: seed and lr only
    # the GPU recipe trains the shipped (twice widened) network from its weights on the shipped
    # recipe
    gpu = json.loads((cfgs / "gpu.json").read_text())
    wide = json.loads((cfgs / "rt_wide.json").read_text())
    shipped = json.loads((cfgs.parent.parent / "rtdenoise/models/lowlat.json").read_text())
    harm = json.loads((cfgs / "rt_wide2_harm.json").read_text())
    assert gpu["model"] == harm["model"]  # the comb line ships since 2026-12-01
    assert gpu["model"]["widths"] == shipped["model_config"]["widths"]
    assert gpu["model"]["harmonic_channel"] == shipped["model_config"]["harmonic_channel"]
    # the shipped recipe since stage 15: the low-SNR one with the onset term, exponent 0.7, the
    # 3x SI-SDR term and the gain floored at the shipped limit (rt_wide2_floor.json; the EQ
    # line, rt_wide2_eq.json, adds only p_eq)
    assert gpu["loss"] == {
        **lows["loss"],
        "w_onset": 2.0,
        "compress": 0.7,
        "w_sisdr": 0.03,
        "mask_floor_db": 20.0,
    }
    # and since stage 17 its mixtures with the random EQ on half the speech and noise
    assert gpu["data"]["mix"] == {**lows["data"]["mix"], "p_eq": 0.5}
    assert gpu["train"]["init"] == lows["train"]["init"]
    assert lows["model"] == run["model"] and lows["train"]["init"] == "rtdenoise/models/lowlat.pt"
    assert lows["loss"] == {**run["loss"], "w_stoi": 1.0}
    assert lows["data"] == {**run["data"], "mix": {**run["data"]["mix"], "snr_db": [-10, 15]}}
    # the widened stage: the shipped recipe on the shipped network widened by training.widen;
    # its next stage continues from the shipped (widened) weights: seed, lr and init only
    nxt = json.loads((cfgs / "rt_wide_next.json").read_text())
    assert {**nxt, "seed": 10, "optim": wide["optim"], "train": wide["train"]} == wide
    assert {**nxt["train"], "init": wide["train"]["init"]} == wide["train"]
    assert nxt["train"]["init"] == "rtdenoise/models/lowlat.pt"
    # the cycle after it: the same from the then shipped weights, shorter, a lower peak lr
    cyc = json.loads((cfgs / "rt_wide_cycle.json").read_text())
    assert {**cyc, "seed": 11, "optim": nxt["optim"], "train": nxt["train"]} == nxt
    assert {**cyc["optim"], "lr": nxt["optim"]["lr"]} == nxt["optim"]
    assert cyc["train"] == {**nxt["train"], "steps": 12000}
    assert cyc["optim"]["lr"] < nxt["optim"]["lr"]
    assert wide["loss"] == lows["loss"] and wide["data"] == lows["data"]
    assert {**wide["model"], "widths": lows["model"]["widths"]} == lows["model"]
    pairs = zip(wide["model"]["widths"], lows["model"]["widths"], strict=True)
    assert all(a > b for a, b in pairs)
    # the second widening: the widened stage's recipe on the shipped weights widened again
    wide2 = json.loads((cfgs / "rt_wide2.json").read_text())
    assert {**wide2, "seed": wide["seed"], "model": wide["model"], "train": wide["train"]} == wide
    assert {**wide2["model"], "widths": wide["model"]["widths"]} == wide["model"]
    assert {**wide2["train"], "init": wide["train"]["init"]} == wide["train"]
    pairs = zip(wide2["model"]["widths"], wide["model"]["widths"], strict=True)
    assert all(a >= b for a, b in pairs) and wide2["model"]["widths"] != wide["model"]["widths"]
    # its cycle: the first widening's cycle recipe on the second widening's step-10000 weights
    cyc2 = json.loads((cfgs / "rt_wide2_cycle.json").read_text())
    assert {**cyc2, "seed": cyc["seed"], "model": cyc["model"], "train": cyc["train"]} == cyc
    assert cyc2["model"] == wide2["model"]
    assert {**cyc2["train"], "init": cyc["train"]["init"]} == cyc["train"]
    assert (cfgs.parent.parent / cyc2["train"]["init"]).is_file()
    # the comb line: that cycle's recipe with the harmonic comb channel, from its ablation arm
    harm = json.loads((cfgs / "rt_wide2_harm.json").read_text())
    assert {**harm, "seed": cyc2["seed"], "model": cyc2["model"], "train": cyc2["train"]} == cyc2
    assert harm["model"] == {**cyc2["model"], "harmonic_channel": True}
    assert {**harm["train"], "init": cyc2["train"]["init"]} == cyc2["train"]
    assert (cfgs.parent.parent / harm["train"]["init"]).is_file()
    # its cycle: the same recipe from the shipped weights (its step 8000), a longer schedule
    hcyc = json.loads((cfgs / "rt_wide2_harm_cycle.json").read_text())
    assert {**hcyc, "seed": harm["seed"], "train": harm["train"]} == harm
    assert hcyc["train"] == {**harm["train"], "steps": 14000, "init": "rtdenoise/models/lowlat.pt"}
    # the onset line: that cycle with the onset term (the onset ablation arm ships as stage 11)
    ons = json.loads((cfgs / "rt_wide2_onset.json").read_text())
    assert {**ons, "seed": hcyc["seed"], "loss": hcyc["loss"]} == hcyc
    assert ons["loss"] == {**hcyc["loss"], "w_onset": 2.0} and ons["seed"] != hcyc["seed"]
    # the compression line: the onset line's recipe with a larger magnitude exponent (the
    # compression ablation), from the shipped weights (its last step), a shorter schedule
    comp = json.loads((cfgs / "rt_wide2_comp.json").read_text())
    assert {**comp, "seed": ons["seed"], "loss": ons["loss"], "train": ons["train"]} == ons
    assert comp["loss"] == {**ons["loss"], "compress": comp["loss"]["compress"]}
    assert comp["loss"]["compress"] > ons["loss"]["compress"] and comp["seed"] != ons["seed"]
    assert comp["train"] == {**ons["train"], "steps": comp["train"]["steps"]}
    # the SI-SDR line: the compression recipe with a 3x heavier SI-SDR term (the loss arms of
    # the eleventh session), from the average of the compression line's two cycle ends
    sis = json.loads((cfgs / "rt_wide2_sisdr.json").read_text())
    assert {**sis, "seed": comp["seed"], "loss": comp["loss"], "train": comp["train"]} == comp
    assert sis["loss"] == {**comp["loss"], "w_sisdr": 0.03} and sis["seed"] != comp["seed"]
    assert sis["train"] == {**comp["train"], "steps": 10000, "init": "runs/soup/soup13_c2.pt"}
    # the floor line: the SI-SDR recipe trained on the gain the engine applies (the twelfth
    # session's floor arm), from the shipped weights, a shorter schedule
    flo = json.loads((cfgs / "rt_wide2_floor.json").read_text())
    assert {**flo, "seed": sis["seed"], "loss": sis["loss"], "train": sis["train"]} == sis
    assert flo["loss"] == {**sis["loss"], "mask_floor_db": 20.0} and flo["seed"] != sis["seed"]
    assert flo["train"] == {**sis["train"], "steps": 7000, "init": "rtdenoise/models/lowlat.pt"}
    # (the shipped limit when it was written; the models ship at 40 dB since the fourteenth
    # session, and the lines below train at 40 dB)
    assert flo["loss"]["mask_floor_db"] == 20.0 and shipped["atten_lim_db"] >= 20.0
    # the EQ line: the floor recipe with RNNoise's random EQ on half the speech and noise (the
    # thirteenth session's EQ arm), a new seed; nothing else
    eq = json.loads((cfgs / "rt_wide2_eq.json").read_text())
    assert {**eq, "seed": flo["seed"], "data": flo["data"]} == flo and eq["seed"] != flo["seed"]
    assert eq["data"] == {**flo["data"], "mix": {**flo["data"]["mix"], "p_eq": 0.5}}
    # the 40 dB line: the EQ recipe trained on the gain the engine applies since the limit
    # went to 40 dB, at a third of the peak lr (the fourteenth session's lr1f40 arm); a new
    # seed, nothing else
    f40 = json.loads((cfgs / "rt_wide2_f40.json").read_text())
    assert {**f40, "seed": eq["seed"], "loss": eq["loss"], "optim": eq["optim"]} == eq
    assert f40["loss"] == {**eq["loss"], "mask_floor_db": 40.0} and f40["seed"] != eq["seed"]
    assert f40["optim"] == {**eq["optim"], "lr": 1e-4}
    assert f40["loss"]["mask_floor_db"] == shipped["atten_lim_db"]
    # its onset variant: twice the onset weight (the onset ablation's trade: `val`'s short words
    # for `val2`'s PESQ, which the 40 dB line had tipped the other way); stage 19 is its mean
    # with stage 18
    f40o = json.loads((cfgs / "rt_wide2_f40_onset.json").read_text())
    assert {**f40o, "seed": f40["seed"], "loss": f40["loss"]} == f40 and f40o["seed"] != f40["seed"]
    assert f40o["loss"] == {**f40["loss"], "w_onset": 4.0}
    # and with utterances drawn in proportion to each speaker's speech time (balance 1): the
    # adult continuous voices the test gap is in, heard more often; a shorter schedule
    bal = json.loads((cfgs / "rt_wide2_f40_bal.json").read_text())
    assert {**bal, "seed": f40o["seed"], "data": f40o["data"], "train": f40o["train"]} == f40o
    assert bal["data"]["mix"] == {**f40o["data"]["mix"], "speaker_balance": 1.0}
    assert bal["train"] == {**f40o["train"], "steps": 6000} and bal["seed"] != f40o["seed"]
    assert bal["data"] == {**f40o["data"], "mix": bal["data"]["mix"]}
    # the third widening: stage 22's recipe (the onset variant with w_sisdr 0.09 and w_onset
    # 6) on the shipped weights widened at the two deepest stages, a new seed, the second
    # widening's warm-up and a peak lr between it and the fine-tunes', a full schedule
    w3 = json.loads((cfgs / "rt_wide3.json").read_text())
    assert w3["loss"] == {**f40o["loss"], "w_sisdr": 0.09, "w_onset": 6.0}
    assert {**w3["model"], "widths": f40o["model"]["widths"]} == f40o["model"]
    pairs = zip(w3["model"]["widths"], f40o["model"]["widths"], strict=True)
    assert all(a >= b for a, b in pairs) and w3["model"]["widths"] != f40o["model"]["widths"]
    assert w3["data"] == f40o["data"] and w3["seed"] != f40o["seed"]
    assert w3["optim"] == {**f40o["optim"], "lr": 3e-4, "warmup_steps": 200}
    assert w3["train"] == {**f40o["train"], "steps": 14000, "init": "runs/wide3_init.pt"}
    # and its GPU recipe: the GPU recipe's batch, schedule and data with this network and loss,
    # from the widening's committed CPU state (what a lent machine continues)
    gw3 = json.loads((cfgs / "gpu_wide3.json").read_text())
    same = {"seed": gpu["seed"], "model": gpu["model"], "loss": gpu["loss"], "train": gpu["train"]}
    assert {**gw3, **same} == gpu and gw3["seed"] != gpu["seed"]
    assert gw3["model"] == w3["model"] and gw3["loss"] == w3["loss"]
    assert gw3["train"] == {**gpu["train"], "init": "training/state/rt_wide3.pt"}
    assert (cfgs.parent.parent / gw3["train"]["init"]).is_file()


def test_selection_score_follows_train_select():
    """train.select weighs the validation metrics that choose best.pt; a typo is refused."""
    from rtdenoise.errors import UserError

    assert T.parse_select("pesq+0.1*si_sdr+5*stoi") == [
        (1.0, "pesq"),
        (0.1, "si_sdr"),
        (5.0, "stoi"),
    ]
    m = {"pesq": 2.0, "stoi": 0.8, "si_sdr": 10.0, "nsr": -9.0}
    tr = T.Trainer.__new__(T.Trainer)
    tr.select = T.parse_select("pesq + 0.1*si_sdr + 5*stoi")
    assert tr.selection_score(m) == pytest.approx(2.0 + 1.0 + 4.0)
    for bad in ("pesq+0.1*sisdr", "pesq+x*stoi"):
        with pytest.raises(UserError, match="train.select"):
            T.parse_select(bad)


def test_weight_averaging_snapshots_the_tail_and_validates_the_mean(tmp_path):
    """train.snapshot_every: the weights every N steps from average_from x steps on; at the
    schedule's end avg.pt holds their mean (the VQ codebook from the last), validated; a run
    split over two sessions averages the same snapshots into the same weights."""
    data = _make_data(tmp_path / "data")
    cfg = _cfg(data, 8, snapshot_every=2, average_from=0.5, val_every=8)
    T.Trainer(cfg, tmp_path / "full").run()
    run = tmp_path / "full"
    names = sorted(p.name for p in (run / "snaps").iterdir())
    assert names == ["step4.pt", "step6.pt", "step8.pt"]  # none before step 4, no temp files
    snaps = [read_checkpoint(run / "snaps" / n)["state_dict"] for n in names]
    avg = read_checkpoint(run / "avg.pt")
    assert avg["extra"]["averaged_steps"] == [4, 6, 8]
    sd = avg["state_dict"]
    w = "net.enc.0.conv.block.conv.weight"
    torch.testing.assert_close(sd[w], sum(s[w] for s in snaps) / 3)
    assert not torch.equal(sd[w], snaps[-1][w])
    assert torch.equal(sd["net.vq.codebook"], snaps[-1]["net.vq.codebook"])
    rows = (run / "val.csv").read_text().splitlines()
    assert rows[-2].startswith("8,") and rows[-1].startswith("avg,")
    assert avg["extra"]["val"]["pesq"] == pytest.approx(float(rows[-1].split(",")[1]))
    T.Trainer(cfg, tmp_path / "part", stop_step=5).run()
    assert not (tmp_path / "part" / "avg.pt").exists()  # the schedule has not ended
    T.Trainer(cfg, tmp_path / "part").run()
    split = read_checkpoint(tmp_path / "part" / "avg.pt")["state_dict"]
    for k, v in sd.items():
        assert torch.equal(v, split[k]), k


def test_bf16_autocast_on_the_cpu_trains(tmp_path):
    """train.bf16_cpu: the network's convs run in bf16 on the CPU, the weights stay fp32, and
    training still learns."""
    data = _make_data(tmp_path / "data")
    tr = T.Trainer(_cfg(data, 100, bf16_cpu=True), tmp_path / "run")
    seen = set()
    conv = next(m for m in tr.model.modules() if isinstance(m, torch.nn.Conv2d))
    hook = conv.register_forward_hook(lambda m, i, o: seen.add(o.dtype))
    before = _fixed_batch_loss(tr)
    tr.train_step()
    assert torch.bfloat16 in seen
    hook.remove()
    tr.run()
    assert _fixed_batch_loss(tr) < 0.85 * before
    assert all(p.dtype == torch.float32 for p in tr.model.parameters())


def test_mask_floor_trains_the_gain_the_engine_applies():
    """loss.mask_floor_db = the export's attenuation limit: the losses see exactly the gain the
    engine's processor applies (max(mask, floor)), with no gradient below the floor; 0 = the
    mask itself."""
    from rtdenoise.processor import MaskProcessor
    from training.losses import LossConfig, shipped_gain

    rng = np.random.default_rng(0)
    mask = rng.uniform(0, 1, (1, 1, 40)).astype(np.float32) ** 3  # many below 0.1

    class Fixed:  # a backend whose network answers with this mask
        meta, block_frames, lookahead_frames = {}, 1, 0

        def reset(self, channels):
            pass

        def step(self, ri):
            return mask

    proc = MaskProcessor(Fixed(), atten_lim_db=20.0)
    out = np.zeros((1, 1, 40), np.complex64)
    proc.process(np.ones((1, 1, 40), np.complex64), out)
    m = torch.tensor(mask, requires_grad=True)
    g = shipped_gain(m, LossConfig(mask_floor_db=20.0))
    np.testing.assert_allclose(g.detach().numpy(), out.real, rtol=1e-6)
    g.sum().backward()
    assert torch.equal(m.grad, (m >= 0.1).float()) and 0 < float((m < 0.1).sum()) < 40
    assert shipped_gain(m, LossConfig()) is m
