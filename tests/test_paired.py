"""benchmarks.paired: the statistics that decide whether a checkpoint ships. A difference must
be taken file by file on the files both sides have, and its standard error must be the paired
one (the spread of the differences), which is what separates two close checkpoints."""

import numpy as np
import pytest

from benchmarks.paired import compare, main


def _rows(scores: dict[str, tuple[float, float, str]], offset: float = 0.0) -> list[dict]:
    return [
        {
            "id": i,
            "snr": snr,
            "source": src,
            "pesq": 2 + s + offset,
            "stoi": 0.8 + s / 10,
            "si_sdr": 10 * s,
        }
        for i, (s, snr, src) in scores.items()
    ]


def test_paired_difference_and_its_standard_error() -> None:
    rng = np.random.default_rng(0)
    spread = rng.normal(0, 0.5, 200)  # per-file scores vary far more than the difference
    common = {
        f"f{k}": (float(v), float(k % 2 * 5), "a" if k < 150 else "b") for k, v in enumerate(spread)
    }
    a = _rows(common, offset=0.01)
    b = _rows(common)
    b.append(
        {"id": "extra", "snr": 0.0, "source": "a", "pesq": 100.0, "stoi": 1.0, "si_sdr": 0.0}
    )  # scored by one side only: left out
    overall, per_snr, per_source = compare(a, b)
    assert overall["pesq"]["n"] == 200
    assert overall["pesq"]["d"] == pytest.approx(0.01)
    # identical spread on both sides: the paired error is ~0, the unpaired one would be ~0.05
    assert overall["pesq"]["se"] < 1e-9
    assert overall["stoi"]["d"] == pytest.approx(0.0, abs=1e-12)
    assert set(per_snr) == {"0", "5"} and per_snr["5"]["pesq"]["n"] == 100
    assert per_source["b"]["pesq"]["n"] == 50
    assert per_source["a"]["pesq"]["a"] == pytest.approx(np.mean(2 + spread[:150] + 0.01))


def test_standard_error_is_that_of_the_differences() -> None:
    d = np.array([0.1, -0.1, 0.3, 0.1])
    a = [
        {"id": str(k), "snr": 0.0, "pesq": 2 + v, "stoi": 0.5, "si_sdr": 1.0}
        for k, v in enumerate(d)
    ]
    b = [{"id": str(k), "snr": 0.0, "pesq": 2.0, "stoi": 0.5, "si_sdr": 1.0} for k in range(4)]
    overall, _, per_source = compare(a, b)
    assert overall["pesq"]["d"] == pytest.approx(d.mean())
    assert overall["pesq"]["se"] == pytest.approx(d.std(ddof=1) / 2)
    assert per_source == {}  # no source column: no per-source rows


def test_bad_side_is_a_clear_error(tmp_path) -> None:
    (tmp_path / "p.csv").write_text("clean,noise,noise_offset,snr_db\nc.flac,n.flac,0,5\n")
    with pytest.raises(SystemExit, match="not a checkpoint"):
        main(["no-such-thing", "shipped", "--pairs", str(tmp_path / "p.csv")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="no lowlat.onnx"):
        main([str(tmp_path / "empty"), "shipped", "--pairs", str(tmp_path / "p.csv")])
