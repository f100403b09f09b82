"""Phantom generation throughput: 100 studies at the default image size, in one process.

Run with ``pytest benchmarks/test_bench_phantom.py``; the result carries
``extra_info["studies_per_s"]`` and ``extra_info["images_per_s"]`` (DICOM files written).
Target (phantom realism v2): 100 studies, with the real rates of extra series, in at most 2 minutes.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from lumbar_bench.data.phantom.synth import PhantomConfig, PhantomSummary, synthesize

STUDIES = 100
TARGET_S = 120.0


def test_synthesize_default_size(benchmark, tmp_path: Path) -> None:  # noqa: ANN001
    config = PhantomConfig(studies=STUDIES, seed=0, test_studies=0, spider_cases=0)
    out = tmp_path / "phantom"

    def setup() -> None:
        shutil.rmtree(out, ignore_errors=True)

    summary: PhantomSummary = benchmark.pedantic(
        synthesize,
        args=(out, config),
        kwargs={"progress": False, "workers": 1},
        setup=setup,
        rounds=1,
        iterations=1,
    )
    mean = benchmark.stats.stats.mean
    benchmark.extra_info.update(
        {
            "studies": STUDIES,
            "size": config.size,
            "images": summary.images,
            "studies_per_s": STUDIES / mean if mean > 0 else float("nan"),
            "images_per_s": summary.images / mean if mean > 0 else float("nan"),
        }
    )
    assert summary.train_studies == STUDIES and summary.images > 0
    assert mean <= TARGET_S, f"{STUDIES} studies took {mean:.0f} s (target {TARGET_S:.0f} s)"
