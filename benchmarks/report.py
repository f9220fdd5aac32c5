"""Turn ``benchmarks/results/compare.json`` into ``docs/benchmarks.md``, its plots and the
README's headline table (between ``<!-- benchmarks:start -->`` and ``<!-- benchmarks:end -->``).

Nothing here is typed by hand: every number comes from the JSON that
:mod:`benchmarks.compare` wrote. Usage::

    python -m benchmarks.report [--json PATH] [--md PATH] [--readme PATH]
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from pathlib import Path

import numpy as np

from benchmarks.sets import readable_id

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
CACHE = RESULTS / "cache"
DOCS = ROOT / "docs"
IMG = DOCS / "img"
START, END = "<!-- benchmarks:start -->", "<!-- benchmarks:end -->"

LABELS = {
    "noisy": "noisy input",
    "passthrough": "passthrough (engine, identity)",
    # rtdenoise-onnx* are the standard-framing model (default.*), -low* the low-latency one
    # (lowlat.*), the default of every command since issue #12; the system names stay
    "rtdenoise-onnx": "**rtdenoise** standard (ONNX Runtime)",
    "rtdenoise-onnx-narrowband": "rtdenoise standard --narrowband (ONNX Runtime)",
    "rtdenoise-onnx-48k": "rtdenoise standard (ONNX, engine at 48 kHz)",
    "rtdenoise-onnx-low": "**rtdenoise low-latency (default)** (ONNX Runtime)",
    "rtdenoise-onnx-low-48k": "rtdenoise low-latency (default; ONNX, engine at 48 kHz)",
    "rtdenoise-torchscript": "rtdenoise standard (TorchScript)",
    "rtdenoise-torch": "rtdenoise standard (torch eager)",
    "rnnoise": "RNNoise",
    "dfn3": "DeepFilterNet3",
    "dfn3-12db": "DeepFilterNet3, 12 dB limit",
    "noisereduce": "noisereduce (offline)",
    "seed-original": "original design (seed)",
    "clean": "clean reference",
}
#: systems in the README headline table, in this order
HEADLINE = (
    "rtdenoise-onnx",
    "rtdenoise-onnx-low",
    "rnnoise",
    "dfn3",
    "dfn3-12db",
    "noisereduce",
    "noisy",
)
#: the wideband set's systems (spectrogram rows), and how its table names rtdenoise's two outputs
WIDEBAND = "wideband16k"
WIDEBAND_SYSTEMS = ("rtdenoise-onnx-narrowband", "rtdenoise-onnx", "rnnoise", "dfn3", "noisy")
WIDEBAND_LABELS = {
    "rtdenoise-onnx": "**rtdenoise** standard, full band (the default band)",
    "rtdenoise-onnx-narrowband": "rtdenoise standard `--narrowband`",
}
COLORS = {
    "noisy": "0.55",
    "passthrough": "0.75",
    "rtdenoise-onnx": "C3",
    "rtdenoise-onnx-narrowband": "C7",
    "rtdenoise-onnx-48k": "C9",
    "rtdenoise-onnx-low": "m",
    "rtdenoise-onnx-low-48k": "y",
    "rtdenoise-torchscript": "C1",
    "rtdenoise-torch": "C5",
    "rnnoise": "C0",
    "dfn3": "C2",
    "dfn3-12db": "C8",
    "noisereduce": "C4",
    "seed-original": "C6",
    "clean": "k",
}
METRICS = (
    ("pesq", "PESQ-nb", "{:.2f}"),
    ("pesq_wb", "PESQ-wb", "{:.2f}"),
    ("stoi", "STOI", "{:.3f}"),
    ("si_sdr", "SI-SDR (dB)", "{:.1f}"),
    ("nsr", "NSR (dB)", "{:.1f}"),
    ("ovrl", "DNSMOS OVRL", "{:.2f}"),
    ("sig", "DNSMOS SIG", "{:.2f}"),
    ("bak", "DNSMOS BAK", "{:.2f}"),
)


def label(name: str, labels: dict[str, str] | None = None) -> str:
    return (labels or {}).get(name) or LABELS.get(name, name)


def _plain(name: str) -> str:
    return label(name).replace("**", "")


def _mean(entry: dict | None, key: str) -> float | None:
    v = (entry or {}).get(key)
    return v.get("mean") if isinstance(v, dict) else None


def _fmt(v: float | None, fmt: str) -> str:
    return "–" if v is None else fmt.format(v)


def _fmt_ci(stat: dict | None, fmt: str) -> str:
    if not isinstance(stat, dict) or stat.get("mean") is None:
        return "–"
    s = fmt.format(stat["mean"])
    return s + (f" ± {fmt.format(stat['ci95'])}" if stat.get("ci95") else "")


def _nan(res: dict, key: str) -> str:
    """How many test files a metric is undefined on (from the noisy input's row)."""
    o = res.get("quality", {}).get("test", {}).get("noisy", {}).get("overall", {})
    st = o.get(key)
    return "?" if not isinstance(st, dict) else f"{st.get('nan', 0)} of {o.get('files')}"


def _load(v: list | None) -> str:
    return "?" if not v else f"{v[0]:.1f}"


def latency_str(info: dict) -> str:
    if info.get("status") != "ok":
        return "–"
    ms = info.get("algorithmic_latency_ms")
    if ms is None:
        return "whole file (offline)" if not info.get("causal", True) else "–"
    return f"{ms:.0f} ms" if ms >= 1 or ms == 0 else f"{ms:.1f} ms"


def order(names: list[str]) -> list[str]:
    known = list(LABELS)
    return sorted(names, key=lambda n: known.index(n) if n in known else len(known))


def _table(header: list[str], rows: list[list[str]], left_last: bool = False) -> str:
    align = ["---"] + ["--:"] * (len(header) - 1)
    if left_last:
        align[-1] = "---"
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- tables


def headline_table(res: dict) -> str:
    """The README's table: quality on the test mixtures, RTF and latency, per system."""
    q = res.get("quality", {}).get("test", {})
    seed = res.get("quality", {}).get("seed", {})
    tim = res.get("timing", {}).get("systems", {})
    rows = []
    for name in HEADLINE:
        info = res["systems"].get(name)
        if info is None:
            continue
        if info["status"] != "ok":
            rows.append([label(name), *["–"] * 6, f"missing: {info['reason'][:90]}"])
            continue
        o = q.get(name, {}).get("overall", {})
        s = seed.get(name, {}).get("overall", {})
        t = tim.get(name, {})
        rtf = "–" if name == "noisy" else _fmt(t.get("rtf"), "{:.3f}")
        if t.get("ratio_to_ref") is not None and name != "rtdenoise-onnx":
            rtf += f" (×{t['ratio_to_ref']:.2f})"
        rows.append(
            [
                label(name),
                _fmt(_mean(o, "pesq"), "{:.2f}"),
                _fmt(_mean(o, "stoi"), "{:.3f}"),
                _fmt(_mean(o, "si_sdr"), "{:.1f}"),
                _fmt(_mean(o, "ovrl"), "{:.2f}"),
                _fmt(_mean(s, "pesq"), "{:.2f}"),
                rtf,
                latency_str(info),
            ]
        )
    header = [
        "system",
        "PESQ-nb",
        "STOI",
        "SI-SDR dB",
        "DNSMOS",
        "PESQ seed",
        "RTF 1 core (× rtdenoise)",
        "latency",
    ]
    return _table(header, rows)


def subset_note(res: dict) -> str:
    q = res.get("quality", {}).get("test", {})
    n = max((e["overall"]["files"] for e in q.values()), default=0)
    total = res.get("test_files_total")
    dn = res.get("coverage", {}).get("test", {}).get("dnsmos_files")
    if dn is None:
        dn = res.get("dnsmos_files", {}).get("test", 0)
    return (
        f"test split: {n} of {total} mixtures of `test/pairs.csv`"
        + (" (evenly spread over SNR)" if total and n < total else "")
        + f", DNSMOS on {min(dn, n)} of them; PESQ seed: mean of the seed design's 3 sample files"
    )


def quality_table(
    res: dict, ds: str, keys: tuple[str, ...], labels: dict[str, str] | None = None
) -> str:
    q = res.get("quality", {}).get(ds, {})
    cols = [m for m in METRICS if m[0] in keys]
    rows = []
    for name in order(list(q)):
        o = q[name]["overall"]
        if not any(isinstance(o.get(k), dict) and o[k].get("mean") is not None for k, _, _ in cols):
            continue
        lag = o.get("lag")
        lag_s = (
            "–"
            if not lag
            else f"{lag['median']:.0f} / {lag['max_abs']:.0f} ({100 * lag['nonzero_frac']:.1f} %)"
        )
        files = max(
            o[k]["n"] + o[k].get("nan", 0) for k, _, _ in cols if isinstance(o.get(k), dict)
        )
        rows.append(
            [label(name, labels), str(files)] + [_fmt_ci(o.get(k), f) for k, _, f in cols] + [lag_s]
        )
    return _table(
        ["system", "files"] + [c[1] for c in cols] + ["lag median / max (samples) (files ≠ 0)"],
        rows,
    )


def per_snr_table(res: dict, key: str, fmt: str) -> str:
    q = res.get("quality", {}).get("test", {})
    snrs = sorted({float(s) for e in q.values() for s in e.get("per_snr", {})})
    rows = []
    for name in order(list(q)):
        per = q[name].get("per_snr", {})
        vals = [_mean(per.get(f"{s:g}"), key) for s in snrs]
        if all(v is None for v in vals):
            continue
        rows.append([label(name)] + [_fmt(v, fmt) for v in vals])
    return _table(["system"] + [f"{s:g} dB" for s in snrs], rows)


def per_source_table(res: dict, key: str, fmt: str) -> str:
    """One row per system, one column per speech source (``""`` if the set has none)."""
    q = res.get("quality", {}).get("test", {})
    sources = sorted({s for e in q.values() for s in e.get("per_source", {})})
    if not sources:
        return ""
    rows = []
    for name in order(list(q)):
        per = q[name].get("per_source", {})
        vals = [_mean(per.get(s), key) for s in sources]
        if all(v is None for v in vals):
            continue
        rows.append([label(name)] + [_fmt(v, fmt) for v in vals])
    return _table(["system"] + sources, rows)


def seed_per_file_table(res: dict) -> str:
    q = res.get("quality", {}).get("seed", {})
    files = sorted({f for e in q.values() for f in e.get("per_file", {})})
    rows = []
    for name in order(list(q)):
        if name == "clean":
            continue
        pf = q[name].get("per_file", {})
        cells = []
        for f in files:
            r = pf.get(f, {})
            p, s = r.get("pesq"), r.get("si_sdr")
            cells.append(f"{_fmt(p, '{:.2f}')} / {_fmt(s, '{:.1f}')}")
        rows.append([label(name)] + cells)
    return _table(["system"] + [f"{f}: PESQ / SI-SDR" for f in files], rows)


def speed_table(res: dict) -> str:
    tim = res.get("timing", {}).get("systems", {})
    rows = []
    for name in order(list(res["systems"])):
        info = res["systems"][name]
        if name in ("clean", "seed-original", "noisy"):
            continue
        if info["status"] != "ok":
            rows.append([label(name), "–", "–", "–", "–", "–", f"missing: {info['reason']}"])
            continue
        t = tim.get(name, {})
        if not t and info.get("algorithmic_latency_ms") is not None and tim:
            continue  # built but not timed in this run (e.g. wideband-only): nothing to show
        iqr = t.get("ratio_iqr")
        ratio = _fmt(t.get("ratio_to_ref"), "×{:.2f}")
        if iqr:
            ratio += f" [{iqr[0]:.2f}–{iqr[1]:.2f}]"
        rows.append(
            [
                label(name),
                _fmt(t.get("rtf"), "{:.4f}"),
                _fmt(t.get("rtf_min"), "{:.4f}"),
                ratio,
                _fmt(t.get("ratio_best"), "×{:.2f}"),
                latency_str(info),
                info.get("description", ""),
            ]
        )
    return _table(
        [
            "system",
            "RTF (median)",
            "RTF (best)",
            "time vs rtdenoise: median of pairs [IQR]",
            "best vs best",
            "latency",
            "what",
        ],
        rows,
        left_last=True,
    )


# ----------------------------------------------------------------------------- plots


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 8, "figure.dpi": 90, "savefig.dpi": 90})
    return plt


def _save(fig, path: Path, colors: int = 64) -> None:
    """Save a figure as a small palette PNG (plots must stay a few hundred KB in all)."""
    from PIL import Image

    fig.savefig(path)
    _plt().close(fig)
    img = Image.open(path).convert("RGB")
    img.quantize(colors=colors, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)


def plot_quality_vs_snr(res: dict, path: Path) -> bool:
    q = res.get("quality", {}).get("test", {})
    if not q:
        return False
    plt = _plt()
    keys = [
        ("pesq", "PESQ-nb"),
        ("stoi", "STOI"),
        ("si_sdr", "SI-SDR (dB)"),
        ("ovrl", "DNSMOS OVRL"),
    ]
    fig, axes = plt.subplots(1, 4, figsize=(12, 3.4))
    for ax, (k, title) in zip(axes, keys, strict=True):
        for name in order(list(q)):
            per = q[name].get("per_snr", {})
            snrs = sorted(float(s) for s in per)
            ys = [_mean(per[f"{s:g}"], k) for s in snrs]
            if not snrs or all(y is None for y in ys):
                continue
            ys = [np.nan if y is None else y for y in ys]
            style = "--" if name in ("noisy", "clean", "passthrough") else "-o"
            ax.plot(snrs, ys, style, ms=3, color=COLORS.get(name), label=_plain(name))
        ax.set_title(title)
        ax.set_xlabel("input SNR (dB)")
        ax.grid(alpha=0.3)
    handles: dict = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(lab, h)
    fig.legend(handles.values(), handles.keys(), loc="lower center", ncol=min(len(handles), 6))
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    _save(fig, path)
    return True


def plot_speed(res: dict, path: Path) -> bool:
    tim = res.get("timing", {}).get("systems", {})
    names = [n for n in order(list(tim)) if tim[n].get("rtf") is not None]
    if not names:
        return False
    plt = _plt()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 0.35 * len(names) + 1.0))
    y = np.arange(len(names))
    a1.barh(y, [tim[n]["rtf"] for n in names], color=[COLORS.get(n, "C7") for n in names])
    a1.set_yticks(y, [_plain(n) for n in names])
    a1.invert_yaxis()
    a1.set_xlabel("real-time factor on one core (lower is faster)")
    a1.axvline(1.0, color="k", lw=0.5) if max(tim[n]["rtf"] for n in names) > 0.8 else None
    lat = []
    for n in names:
        ms = res["systems"][n].get("algorithmic_latency_ms")
        lat.append(np.nan if ms is None else ms)
    a2.barh(y, np.nan_to_num(lat), color=[COLORS.get(n, "C7") for n in names])
    for i, v in enumerate(lat):
        if np.isnan(v):
            a2.text(0.5, i, "whole file (offline)", va="center", fontsize=7)
    a2.set_yticks(y, [""] * len(names))
    a2.invert_yaxis()
    a2.set_xlabel("algorithmic latency (ms)")
    for a in (a1, a2):
        a.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    _save(fig, path)
    return True


def _logspec(x: np.ndarray, rate: int = 8000) -> np.ndarray:
    """Log-magnitude STFT with the design's framing (519 / hop 31 at 8 kHz, the same duration
    at other rates) -> [F, T] dB."""
    from scipy.signal import stft

    nperseg = int(round(519 * rate / 8000))
    hop = int(round(31 * rate / 8000))
    _, _, z = stft(x, fs=rate, nperseg=nperseg, noverlap=nperseg - hop)
    return 20 * np.log10(np.abs(z) + 1e-8)


def plot_spectrograms(
    res: dict,
    ex_id: str,
    systems: list[str],
    path: Path,
    rate: int = 8000,
    labels: dict[str, str] | None = None,
) -> bool:
    """clean / noisy / each system's output for one example clip (saved by compare)."""
    import soundfile as sf

    d = CACHE / "examples" / ex_id
    rows = [("input-clean", "clean"), ("input-noisy", "noisy input")]
    rows += [
        (n, label(n, labels).replace("**", "").replace("`", ""))
        for n in systems
        if n not in ("noisy", "clean")
    ]
    rows = [(f, t) for f, t in rows if (d / f"{f}.flac").exists()]
    if len(rows) < 3:
        return False
    plt = _plt()
    sigs = [sf.read(d / f"{f}.flac", dtype="float32")[0] for f, _ in rows]
    n = min(len(s) for s in sigs)
    n = min(n, 4 * rate)  # at most 4 s: enough to see, small PNG
    specs = [_logspec(s[:n], rate) for s in sigs]
    vmax = max(float(s.max()) for s in specs[:2])
    fig, axes = plt.subplots(len(rows), 1, figsize=(5.5, 0.9 * len(rows) + 0.4), sharex=True)
    for ax, (_, title), sp in zip(axes, rows, specs, strict=True):
        ax.imshow(
            sp, origin="lower", aspect="auto", cmap="magma", vmin=vmax - 80, vmax=vmax,
            extent=(0, n / rate, 0, rate / 2000), interpolation="nearest",
        )  # fmt: skip
        ax.set_ylabel("kHz")
        ax.text(0.01, 0.85, title, transform=ax.transAxes, color="w", fontsize=7)
    axes[-1].set_xlabel("time (s)")
    title = readable_id(ex_id).replace("/", ": ")
    fig.suptitle(title.replace("@", ", input SNR ") + (" dB" if "@" in title else ""), fontsize=8)
    fig.tight_layout(h_pad=0.2)
    _save(fig, path, colors=32)
    return True


# ----------------------------------------------------------------------------- page


def merged_note(res: dict) -> list[str]:
    """The run line's addendum when compare --merge kept parts of an earlier run."""
    mg = res.get("merged")
    if not mg or not (mg.get("sets") or mg.get("timing")):
        return []
    parts = [f"the {', '.join(mg['sets'])} set{'s' if len(mg['sets']) > 1 else ''}"] * bool(
        mg.get("sets")
    )
    parts += ["the speed figures"] * bool(mg.get("timing"))
    f = mg.get("from", {})
    return [
        f"- Kept from the earlier run of {f.get('date_utc')} (commit `{f.get('git_commit')}`): "
        + " and ".join(parts)
        + "; everything else is from this run"
    ]


def wideband_delta(res: dict) -> str:
    """One generated sentence: full band minus narrowband (and minus noisy) on the wideband set."""
    q = res.get("quality", {}).get(WIDEBAND, {})
    full = q.get("rtdenoise-onnx", {}).get("overall", {})
    nb = q.get("rtdenoise-onnx-narrowband", {}).get("overall", {})
    noisy = q.get("noisy", {}).get("overall", {})
    cells = []
    for key, title, fmt in METRICS:
        if key not in ("pesq_wb", "stoi", "si_sdr", "ovrl"):
            continue
        f, n, y = _mean(full, key), _mean(nb, key), _mean(noisy, key)
        if f is None:
            continue
        sfmt = fmt.replace("{:", "{:+")
        d = [f"{sfmt.format(f - n)} vs narrowband" if n is not None else ""]
        d += [f"{sfmt.format(f - y)} vs noisy" if y is not None else ""]
        cells.append(f"{title} {', '.join(x for x in d if x)}")
    return ("Full band: " + "; ".join(cells) + ".") if cells else ""


def wideband_section(res: dict, images: dict[str, str]) -> list[str]:
    q = res.get("quality", {}).get(WIDEBAND)
    if not q:
        return []
    cov = res.get("coverage", {}).get(WIDEBAND, {})
    lines = [
        "## Full band at 16 kHz (wideband16k)",
        "",
        f"{cov.get('common_files', '?')} noisy/clean pairs at 16 kHz "
        "(`../shared/data/wideband16k`: speech that keeps its band above 4 kHz, 27 noise "
        "families, SNR 0-15 dB), processed at 16 kHz. rtdenoise runs its engine at the file's "
        "rate as `rtdenoise file` does: full band by default (the band above 4 kHz gated by the "
        "model's output, `rtdenoise/bandsplit.py`) and with `--narrowband` (the telephone band "
        "only: the output before the band split); the peers run at 48 kHz via soxr. PESQ-wb "
        "(P.862.2), STOI and SI-SDR at 16 kHz, DNSMOS P.835 on the 16 kHz outputs (DNSMOS on "
        f"{cov.get('dnsmos_files', '?')} files). Mean ± 95 % confidence half-width.",
        "",
        quality_table(
            res, WIDEBAND, ("pesq_wb", "stoi", "si_sdr", "ovrl", "sig", "bak"), WIDEBAND_LABELS
        ),
        "",
        wideband_delta(res),
        "",
    ]
    for k in images:
        if k.startswith(f"spec_{WIDEBAND}/"):
            lines += [
                "Spectrogram (log magnitude, 65 ms window, hop 3.9 ms, 80 dB range, 0-8 kHz):",
                "",
                f"![{k}]({images[k]})",
                "",
            ]
    return lines


def render(res: dict, images: dict[str, str]) -> str:
    m = res["meta"]
    missing = {n: i for n, i in res["systems"].items() if i["status"] != "ok"}
    tim = res.get("timing", {})
    lines = [
        "# Benchmarks: rtdenoise versus its peers",
        "",
        "<!-- generated by `python -m benchmarks.report` from benchmarks/results/compare.json;"
        " do not edit by hand -->",
        "",
        "Same audio, same machine, same run (`python -m benchmarks.compare`): every input is "
        "resampled (soxr) to each peer's native rate, processed frame by frame, resampled back and "
        "delay-compensated; every output is aligned to the clean reference before scoring (the "
        "measured residual lag is reported and should be 0).",
        "",
        f"- Run: {m['date_utc']}, commit `{m.get('git_commit', '')}`, {m['cpu']} "
        f"({m['cores']} cores, shared; load {', '.join(f'{x:.1f}' for x in m['load_avg'] or [])}),"
        f" Python {m['python']}",
        *merged_note(res),
        f"- Threads: {', '.join(f'{k}={v}' for k, v in m['threads'].items())}; timing pinned to "
        f"CPU {tim.get('cpu')}",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()),
        f"- Data: {subset_note(res)}.",
        '- Models: rows named "standard" are the standard-framing model '
        "(`rtdenoise/models/default.onnx`, `--latency-mode standard`, 64.75 ms); rows named "
        '"low-latency (default)" the low-latency model (`lowlat.onnx`, 15.4 ms), the default '
        "of every command and of the Python API.",
    ]
    if missing:
        lines += ["", "**Missing systems** (could not be built in this run):", ""]
        lines += [f"- `{n}`: {i['reason']}" for n, i in missing.items()]
    lines += [
        "",
        "## Headline",
        "",
        headline_table(res),
        "",
        "PESQ-nb, STOI, SI-SDR: mean over the test mixtures; DNSMOS: overall MOS (P.835) on the "
        "DNSMOS subset; RTF: processing time / audio duration on one core (lower is faster), "
        "in brackets the time relative to rtdenoise (ONNX) measured pair by pair; latency: "
        "algorithmic (frame buffering + output delay at the native rate, resampling excluded).",
        "",
        "## Quality on the test mixtures",
        "",
        "Mean ± 95 % confidence half-width.",
        "",
        quality_table(res, "test", ("pesq", "stoi", "si_sdr", "nsr")),
        "",
        "### Per input SNR",
        "",
    ]
    if "quality_vs_snr" in images:
        lines += [f"![quality versus SNR]({images['quality_vs_snr']})", ""]
    for key, title, fmt in METRICS:
        if key not in ("pesq", "stoi", "si_sdr", "nsr", "ovrl"):
            continue
        lines += [f"**{title}**", "", per_snr_table(res, key, fmt), ""]
    if per_source_table(res, "stoi", "{:.3f}"):
        lines += ["### Per speech source (the corpus's `clean.csv`)", ""]
        for key, title, fmt in METRICS:
            if key in ("pesq", "stoi", "si_sdr"):
                lines += [f"**{title}**", "", per_source_table(res, key, fmt), ""]
    lines += [
        "### DNSMOS",
        "",
        "DNSMOS was trained on 16 kHz wideband speech; here 8 kHz audio is upsampled, so even "
        "clean speech scores low (see the clean reference row) and SIG/OVRL penalise the missing "
        "upper band for everyone alike. Treat it as a relative indicator; BAK (background "
        "noise) is the most telling column.",
        "",
        quality_table(res, "test", ("ovrl", "sig", "bak")),
        "",
        "## The seed design's sample files",
        "",
        "The original design's three triplets (clean, noisy, its own output). Its noise is the "
        "original's own training noise type, so the `original design (seed)` row is "
        "in-distribution for it; it exists only for these three files.",
        "",
        quality_table(res, "seed", ("pesq", "stoi", "si_sdr", "nsr", "ovrl", "sig", "bak")),
        "",
        seed_per_file_table(res),
        "",
        *wideband_section(res, images),
        "## Speed and latency",
        "",
        f"One core, {tim.get('audio_s', 0):.0f} s of test audio per call, {tim.get('repeats')} "
        f"interleaved rounds; load average of the shared 2-core machine "
        f"{_load(tim.get('load_avg_start'))} at the start and {_load(tim.get('load_avg_end'))} at "
        "the end of the timing. Each "
        "round times rtdenoise (ONNX) and the "
        "system back to back (alternating which goes first); the ratio is the median of the "
        "per-round ratios, so load drift on the shared machine cancels. Resampling to and from "
        "the peer's rate is included in its time. Under load, code dominated by vectorised "
        "arithmetic (RNNoise, DeepFilterNet3) and code dominated by Python per-hop overhead "
        "(rtdenoise's engine) do not slow down alike, so ratios taken on a busy machine move; "
        "'best vs best' (fastest call over fastest call) is the least load-sensitive figure.",
        "",
        speed_table(res),
        "",
    ]
    if "speed" in images:
        lines += [f"![speed and latency]({images['speed']})", ""]
    specs = [k for k in images if k.startswith("spec_") and not k.startswith(f"spec_{WIDEBAND}/")]
    if specs:
        lines += [
            "## Spectrograms",
            "",
            "Log-magnitude STFT with the design's framing (519-point Hann window, hop 31), 80 dB "
            "range, first seconds of each clip.",
            "",
        ]
        lines += [f"![{k}]({images[k]})" for k in specs] + [""]
    lines += [
        "## Caveats",
        "",
        "- noisereduce runs on the whole file (non-causal, offline): its latency is not "
        "comparable.",
        "- DeepFilterNet3 and RNNoise are 48 kHz fullband models fed 8 kHz speech (band-limited "
        "to 4 kHz) after resampling; DeepFilterNet3's default attenuation limit (100 dB) "
        "over-suppresses here, so it is also shown at a 12 dB limit.",
        f"- PESQ is undefined on {_nan(res, 'pesq')} and STOI on {_nan(res, 'stoi')} of the test "
        "files (clips too short: PESQ finds no utterance under ~0.25 s, STOI needs 30 non-silent "
        "frames; mostly FSDD digits): they are left out of those means, the same files for every "
        "system. SI-SDR and NSR cover every file.",
        "- Absolute times drift on this shared machine; the ratios are the robust figures.",
        "",
        "Regenerate: `python -m benchmarks.compare && python -m benchmarks.report` "
        "(see benchmarks/README.md).",
        "",
    ]
    return "\n".join(lines)


def update_readme(readme: Path, table: str, note: str) -> bool:
    """Replace the text between the markers; False (and print) if the markers are missing."""
    block = (
        f"{START}\n{table}\n\n{note}. Full results, plots and method: "
        f"[docs/benchmarks.md](docs/benchmarks.md).\n{END}"
    )
    text = readme.read_text() if readme.exists() else ""
    if START not in text or END not in text:
        print(f"{readme}: markers {START} / {END} not found; headline table:\n\n{block}\n")
        return False
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(head + block + tail)
    return True


def _spec_name(ex: str) -> str:
    return "spec_" + re.sub(r"[^A-Za-z0-9_.-]+", "-", readable_id(ex).replace("@", "_snr")) + ".png"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.report", description=__doc__.split("\n")[0]
    )
    p.add_argument("--json", type=Path, default=RESULTS / "compare.json")
    p.add_argument("--md", type=Path, default=DOCS / "benchmarks.md")
    p.add_argument("--readme", type=Path, default=ROOT / "README.md")
    p.add_argument("--img", type=Path, default=IMG)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if not args.json.exists():
        print(f"{args.json} not found: run `python -m benchmarks.compare` first", file=sys.stderr)
        return 2
    res = json.loads(args.json.read_text())
    args.img.mkdir(parents=True, exist_ok=True)
    names = {ex: _spec_name(ex) for ex in res.get("examples", [])}
    for old in args.img.glob("spec_*.png"):  # examples change with the subset: no stale plots
        if old.name not in names.values():
            old.unlink()
    rel = Path("img")
    images: dict[str, str] = {}
    if plot_quality_vs_snr(res, args.img / "quality_vs_snr.png"):
        images["quality_vs_snr"] = str(rel / "quality_vs_snr.png")
    if plot_speed(res, args.img / "speed_latency.png"):
        images["speed"] = str(rel / "speed_latency.png")
    systems = [n for n in order(list(res["systems"])) if res["systems"][n]["status"] == "ok"]
    systems = [n for n in systems if n in ("seed-original", *HEADLINE)]
    for ex, fname in names.items():
        ds = ex.split("/", 1)[0]
        rate = res.get("sets", {}).get(ds, {}).get("rate", 8000)
        if ds == WIDEBAND:
            ok = plot_spectrograms(
                res, ex, list(WIDEBAND_SYSTEMS), args.img / fname, rate, WIDEBAND_LABELS
            )
        else:
            sy = [n for n in systems if n != "seed-original" or ds == "seed"]
            ok = plot_spectrograms(res, ex, sy, args.img / fname, rate)
        if ok:
            images["spec_" + ex] = str(rel / fname)
        elif (args.img / fname).exists():  # audio not cached here: keep the plot of its run
            log.info("no audio cached for example %s: keeping %s", ex, fname)
            images["spec_" + ex] = str(rel / fname)
        else:
            log.warning("no audio cached for example %s: spectrogram skipped", ex)
    args.md.write_text(render(res, images))
    log.info("wrote %s and %d plots", args.md, len(images))
    update_readme(args.readme, headline_table(res), subset_note(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
