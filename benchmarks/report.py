"""Write ``results/benchmarks.md`` from the latest saved pytest-benchmark run.

Usage: ``python benchmarks/report.py [--storage .benchmarks] [--out results/benchmarks.md]``
(``make bench`` runs it after ``pytest benchmarks --benchmark-autosave``). Every figure
is printed with the machine it was measured on.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

log = logging.getLogger("benchmarks.report")
ROOT = Path(__file__).resolve().parents[1]
_HIDDEN = {"machine"}


#: Where ``make bench-full-size`` saves its runs, under the storage.
FULL_SIZE_DIR = "full-size"
#: The real training set, for the projection of a smaller full-size run.
REAL_STUDIES, REAL_SIZE = 1975, 512


def latest_run(storage: Path) -> Path:
    """The newest saved ``make bench`` JSON under ``storage`` (any machine folder; full-size runs aside)."""
    files = sorted(storage.glob("*/*.json"), key=lambda p: p.stat().st_mtime)
    if not files:
        raise FileNotFoundError(f"no saved benchmark run under {storage}; run `make bench` first")
    return files[-1]


def full_size_run(storage: Path) -> dict[str, dict] | None:
    """``{test name: extra_info}`` of the latest saved run with the largest ingest (studies x pixels)."""
    best, best_scale = None, 0
    for path in sorted((storage / FULL_SIZE_DIR).glob("*/*.json"), key=lambda p: p.stat().st_mtime):
        rows = {
            b["name"]: b.get("extra_info", {}) for b in json.loads(path.read_text()).get("benchmarks", [])
        }
        prep = rows.get("test_prepare_two_workers", {})
        scale = prep.get("studies", 0) * prep.get("size", 0) ** 2
        if scale >= best_scale and "test_synth_two_workers" in rows:  # the latest of the largest
            best, best_scale = rows, scale
    return best


def full_size_lines(rows: dict[str, dict] | None) -> list[str]:
    """The full-size ingest, measured, and projected to the real training set where it was smaller."""
    if rows is None:
        return ["No full-size run saved yet: `make bench-full-size` (STUDIES=1975 SIZE=512 by default)."]
    synth, prep = rows["test_synth_two_workers"], rows["test_prepare_two_workers"]
    n, size = prep["studies"], prep["size"]
    lines = [
        f"Measured: {n} studies at {size} px, 2 workers ({prep.get('machine', {}).get('cpu', '?')}).",
        "",
        "| step | wall | studies/s | slices/s | on disk | peak RSS |",
        "|---|---|---|---|---|---|",
        f"| synth | {_seconds(synth['synth_s'])} | {synth['studies_per_s']:.2f} | "
        f"{synth['images'] / synth['synth_s']:.0f} | DICOM {synth['dicom_gb']:.2f} GB | "
        f"{synth['peak_rss_gb']:.2f} GB |",
        f"| prepare (cold) | {_seconds(prep['prepare_s'])} | {prep['studies_per_s']:.1f} | "
        f"{prep['slices_per_s']:.0f} | cache {prep['cache_gb']:.2f} GB | {prep['peak_rss_gb']:.2f} GB |",
    ]
    speedups = [
        f"{what} {row['worker_speedup']:.2f}x"
        for what, row in (("prepare", prep), ("synth", synth))
        if "worker_speedup" in row
    ]
    if speedups:
        lines += ["", f"2 workers against 1: {', '.join(speedups)}."]
    if (n, size) != (REAL_STUDIES, REAL_SIZE):
        scale = REAL_STUDIES / n * (REAL_SIZE / size) ** 2
        lines += [
            "",
            f"Projected to {REAL_STUDIES} studies at {REAL_SIZE} px (per-study costs times "
            f"{scale:.1f}; time and disk grow with the pixels): synth {_seconds(synth['synth_s'] * scale)}, "
            f"prepare {_seconds(prep['prepare_s'] * scale)}, DICOM {synth['dicom_gb'] * scale:.0f} GB, "
            f"cache {prep['cache_gb'] * scale:.0f} GB. Peak RSS does not grow with the studies "
            "(one series per worker at a time).",
        ]
    return lines


def _number(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


def _seconds(value: float) -> str:
    if value < 1:
        return f"{value * 1e3:.1f} ms"
    if value < 120:
        return f"{value:.2f} s"
    return f"{value / 60:.1f} min" if value < 7200 else f"{value / 3600:.1f} h"


def machine_lines(doc: dict) -> list[str]:
    """The machine of a run: pytest-benchmark's description plus ours."""
    info = doc.get("machine_info", {})
    m = {"cpu": info.get("cpu", {}).get("brand_raw", "?"), **info.get("lumbar_bench", {})}
    commit = doc.get("commit_info", {})
    dirty = " (dirty)" if commit.get("dirty") else ""
    return [
        f"- CPU: {m['cpu']}, {m.get('cores', '?')} cores ({m.get('cores_usable', '?')} usable), "
        f"RAM {m.get('ram_gb', '?')} GiB, GPU: {m.get('gpu', '?')}; load average at start "
        f"{m.get('load_avg_1min_at_start', '?')} (other work on the machine slows every figure)",
        f"- software: Python {m.get('python', '?')}, torch {m.get('torch', '?')} "
        f"({m.get('torch_threads', '?')} threads), numpy {m.get('numpy', '?')}, "
        f"pandas {m.get('pandas', '?')}, pydicom {m.get('pydicom', '?')}",
        f"- host: {info.get('node', '?')}, {m.get('os', '?')}; run saved {doc.get('datetime', '?')}, "
        f"commit {str(commit.get('id', '?'))[:10]}{dirty}",
    ]


def table_lines(doc: dict) -> list[str]:
    """One row per benchmark: mean, spread, rounds and its figures (``extra_info``)."""
    lines = ["| benchmark | mean | stddev | rounds | figures |", "|---|---|---|---|---|"]
    for bench in sorted(doc.get("benchmarks", []), key=lambda b: b["fullname"]):
        stats = bench["stats"]
        extra = {k: v for k, v in bench.get("extra_info", {}).items() if k not in _HIDDEN}
        figures = ", ".join(f"{k} {_number(v)}" for k, v in extra.items())
        lines.append(
            f"| `{bench['name']}` | {_seconds(stats['mean'])} | {_seconds(stats['stddev'])} | "
            f"{stats['rounds']} | {figures} |"
        )
    return lines


def headline_lines(doc: dict) -> list[str]:
    """Throughputs (``*_per_s``) and ratios (``*ratio``) of every benchmark, one line each."""
    lines = []
    for bench in sorted(doc.get("benchmarks", []), key=lambda b: b["fullname"]):
        for key, value in bench.get("extra_info", {}).items():
            if (key.endswith("_per_s") or key.endswith("ratio")) and isinstance(value, int | float):
                lines.append(f"- `{bench['name']}`: {key} = {_number(value)}")
    return lines


def ratio_lines(doc: dict) -> list[str]:
    """Overheads against the floors the issue names: ingest vs bare pydicom, ResNet-18 vs bare torch."""
    rate = {b["name"]: b.get("extra_info", {}) for b in doc.get("benchmarks", [])}
    lines = []
    for name, key, text in (
        ("test_ingest_cold_against_bare_decode", "cold_ratio", "x the time per slice of bare pydicom"),
        ("test_ingest_warm_against_cold", "warm_speedup", "x faster warm than cold"),
        ("test_prepare_two_workers", "worker_speedup", "x faster with 2 workers than with 1"),
        ("test_synth_two_workers", "worker_speedup", "x faster with 2 workers than with 1 (synth)"),
    ):
        if key in rate.get(name, {}):
            lines.append(f"- ingest `{name}`: {rate[name][key]:.2f}{text}")
    harness = rate.get("test_resnet18_train_harness_step", {})
    for key, what in (
        ("overhead_ratio", "training step"),
        ("pipeline_ratio", "first epoch incl. input building"),
    ):
        if key in harness:
            lines.append(f"- ResNet-18 {what}: {harness[key]:.2f}x the time per image of the bare torch loop")
    return lines


def render(doc: dict, source: Path, full_size: dict[str, dict] | None = None) -> str:
    """The markdown document."""
    skipped = doc.get("skipped", [])
    lines = [
        "# Performance benchmarks",
        "",
        "Written by `python benchmarks/report.py` from the latest `make bench` run "
        f"(`{source.relative_to(source.parents[1]) if len(source.parents) > 1 else source}`); "
        "do not edit by hand. Timings on a shared machine are noisy; compare runs on the same machine only.",
        "",
        "## Machine",
        "",
        *machine_lines(doc),
        "",
        "## Headline figures",
        "",
        *headline_lines(doc),
        "",
        "## Ratios (1.00 = as fast as the floor)",
        "",
        *ratio_lines(doc),
        "",
        "## Full-size ingest",
        "",
        *full_size_lines(full_size),
        "",
        "## Every benchmark",
        "",
        *table_lines(doc),
        "",
    ]
    if skipped:
        lines += ["## Skipped", "", *[f"- {s}" for s in skipped], ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point: write the report, return 0 (1 when there is no saved run)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", type=Path, default=ROOT / ".benchmarks")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "benchmarks.md")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        source = latest_run(args.storage)
    except FileNotFoundError as exc:
        log.error("%s", exc)
        return 1
    doc = json.loads(source.read_text())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(doc, source, full_size_run(args.storage)))
    log.info("wrote %s from %s (%d benchmarks)", args.out, source, len(doc.get("benchmarks", [])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
