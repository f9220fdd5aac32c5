"""benchmarks.compare's per-source breakdown: each pair carries its speech's corpus (from the
split's ``clean.csv``), and the summary reports every source apart, on the same files for
every system, so a set's mean cannot hide which speech a system trails on."""

import csv
from pathlib import Path

import pytest

from benchmarks.report import per_source_table
from benchmarks.scoring import aggregate
from benchmarks.sets import load_pairs


def _write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def test_pairs_carry_their_speech_source(tmp_path: Path) -> None:
    _write_csv(
        tmp_path / "clean.csv",
        [
            {"file": "clean/a__1.flac", "corpus": "digits", "speaker": "a"},
            {"file": "clean/b__1.flac", "corpus": "sentences", "speaker": "b"},
        ],
    )
    pairs = [
        {"clean": "clean/a__1.flac", "noise": "noise/n.flac", "noise_offset": 0, "snr_db": -5},
        {"clean": "clean/b__1.flac", "noise": "noise/n.flac", "noise_offset": 3, "snr_db": 0},
        {"clean": "clean/c__1.flac", "noise": "noise/n.flac", "noise_offset": 0, "snr_db": 5},
    ]
    _write_csv(tmp_path / "pairs.csv", pairs)
    items = load_pairs(tmp_path / "pairs.csv", None)
    assert [i.source for i in items] == ["digits", "sentences", ""]  # "" where not listed
    (tmp_path / "clean.csv").unlink()  # a pairs file without the corpus's metadata still loads
    assert [i.source for i in load_pairs(tmp_path / "pairs.csv", None)] == ["", "", ""]


def test_summary_reports_each_source_on_common_files() -> None:
    def row(i: int, source: str, stoi: float) -> dict:
        return {"id": f"f{i}", "snr": 0.0, "dur_s": 1.0, "stoi": stoi, "source": source}

    ours = [row(0, "digits", 0.9), row(1, "digits", 0.8), row(2, "sentences", 0.6)]
    peer = [row(0, "digits", 0.7), row(1, "digits", 0.7), row(2, "sentences", 0.7)]
    peer.append(row(3, "sentences", 0.1))  # scored by one system only: left out of both
    res, _ = aggregate({"test": {"ours": ours, "peer": peer}})
    per = {n: e["per_source"] for n, e in res["test"].items()}
    assert per["ours"]["digits"]["stoi"]["mean"] == pytest.approx(0.85)
    assert per["ours"]["sentences"]["stoi"]["mean"] == pytest.approx(0.6)
    assert per["peer"]["sentences"]["stoi"]["mean"] == pytest.approx(0.7)
    assert per["peer"]["sentences"]["files"] == 1
    # the overall mean favours "ours"; the per-source rows show where it trails
    overall = {n: e["overall"]["stoi"]["mean"] for n, e in res["test"].items()}
    assert overall["ours"] > overall["peer"]
    table = per_source_table({"quality": res}, "stoi", "{:.3f}")
    header, _, *body = table.splitlines()
    assert [c.strip() for c in header.strip("|").split("|")] == ["system", "digits", "sentences"]
    assert len(body) == 2 and "0.600" in table and "0.700" in table
    one, _ = aggregate({"test": {"ours": [row(0, "digits", 0.9), row(1, "digits", 0.8)]}})
    assert "per_source" not in one["test"]["ours"]  # a single source adds nothing to the mean


def test_pairs_files_reusing_names_do_not_share_ids(tmp_path: Path) -> None:
    """Cached scores are keyed by the pair's id: a variant of a split written elsewhere with the
    same file names (other audio), or the same speech over another noise stretch, is a new pair."""
    row = {"clean": "clean/a__1.flac", "noise": "noise/n.flac", "noise_offset": 0, "snr_db": 5}
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        _write_csv(tmp_path / d / "pairs.csv", [row, {**row, "noise_offset": 7}])
    a = load_pairs(tmp_path / "a" / "pairs.csv", None)
    b = load_pairs(tmp_path / "b" / "pairs.csv", None)
    assert a[0].id != a[1].id and a[0].id != b[0].id
    assert a[0].id.startswith("a__1@5-")  # still readable
    assert [i.id for i in load_pairs(tmp_path / "a" / "pairs.csv", None)] == [i.id for i in a]


def test_voice_variant_pairs_row_by_row(tmp_path: Path) -> None:
    """benchmarks.voice_variant writes the chosen rows with filtered speech (new ids) and the same
    rows of the split as ``original.csv`` (through links: the split's own ids, so its cached
    scores are reused); the speech keeps its RMS and changes where the peak is."""
    import numpy as np
    import soundfile as sf

    from benchmarks.voice_variant import write_variant

    split = tmp_path / "split"
    (split / "clean").mkdir(parents=True)
    (split / "noise").mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        sf.write(split / "clean" / f"s{i}.flac", 0.1 * rng.standard_normal(8000), 8000)
    sf.write(split / "noise" / "n.flac", 0.1 * rng.standard_normal(8000), 8000)
    rows = [
        {"clean": f"clean/s{i}.flac", "noise": "noise/n.flac", "noise_offset": i, "snr_db": 0}
        for i in range(4)
    ]
    _write_csv(split / "pairs.csv", rows)
    assert write_variant(split / "pairs.csv", tmp_path / "v", every=2) == 2
    var = load_pairs(tmp_path / "v" / "pairs.csv", None)
    orig = load_pairs(tmp_path / "v" / "original.csv", None)
    split_ids = [i.id for i in load_pairs(split / "pairs.csv", None)]
    assert [i.id for i in orig] == split_ids[::2]
    assert not set(i.id for i in var) & set(split_ids)
    x, _ = sf.read(orig[1].clean_path)
    y, _ = sf.read(var[1].clean_path)
    assert np.sqrt(np.mean(y**2)) == pytest.approx(np.sqrt(np.mean(x**2)), rel=1e-3)
    assert not np.allclose(x, y, atol=1e-3)
