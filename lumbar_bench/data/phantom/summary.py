"""What a phantom run wrote: :class:`PhantomSummary`, its scores and ``phantom.json``.

:func:`summarise` writes the tables (:mod:`.tables`), scores the Bayes-optimal oracle on them
and measures the realism report; :func:`write_metadata` records it all in ``phantom.json``.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lumbar_bench.constants import LABEL_COLUMNS, SEVERITIES
from lumbar_bench.data.labels import read_labels
from lumbar_bench.data.phantom import realism
from lumbar_bench.data.phantom.cohort import true_moderate_ratio
from lumbar_bench.data.phantom.config import GENERATOR_VERSION, PhantomConfig
from lumbar_bench.data.phantom.floor import expected_floor
from lumbar_bench.data.phantom.study import StudyPlan, StudyResult
from lumbar_bench.data.phantom.tables import observation_probs, write_tables
from lumbar_bench.metrics.score import score


@dataclass(frozen=True)
class PhantomSummary:
    """What :func:`~.synth.synthesize` wrote, with the Bayes floor and the oracle's realised score.

    ``bayes_floor`` is the expected official score of the Bayes-optimal oracle under the
    reader's noise (``floor.expected_floor``); ``oracle_score`` is its score on this draw of the
    noisy labels, which can fall a little below the floor. ``true_moderate_ratio`` is the
    smallest, over the labels, of the true Moderate frequency over the observed one.
    """

    out: Path
    train_studies: int
    test_studies: int
    series: int
    images: int
    spider_volumes: int
    hard_cases: int
    irregular_studies: int
    label_counts: dict[str, int]
    oracle_score: float | None
    bayes_floor: float
    seconds: float
    realism: dict[str, Any]
    cohort_draw: int = 0
    true_moderate_ratio: float = float("nan")

    @property
    def paths(self) -> dict[str, Path]:
        """The main files and folders written under ``out``."""
        names = {
            "train_csv": "train.csv",
            "coordinates_csv": "train_label_coordinates.csv",
            "train_series_csv": "train_series_descriptions.csv",
            "test_series_csv": "test_series_descriptions.csv",
            "sample_submission_csv": "sample_submission.csv",
            "train_images": "train_images",
            "test_images": "test_images",
            "spider": "spider",
            "truth": "truth",
            "oracle_submission_csv": "truth/oracle_submission.csv",
            "observation_probs_csv": "truth/observation_probs.csv",
            "metadata_json": "phantom.json",
        }
        return {key: self.out / rel for key, rel in names.items()}

    def describe(self) -> str:
        """Describe the phantom in a few human-readable lines."""
        oracle = f"{self.oracle_score:.4f}" if self.oracle_score is not None else "n/a (no scorer)"
        counts = ", ".join(f"{k} {v}" for k, v in self.label_counts.items())
        return (
            f"phantom written to {self.out}\n"
            f"  train studies {self.train_studies}, test studies {self.test_studies}, "
            f"series {self.series}, DICOM files {self.images}, SPIDER volumes {self.spider_volumes}\n"
            f"  hard cases {self.hard_cases}, irregular studies {self.irregular_studies}\n"
            f"  labels: {counts}\n"
            f"  Bayes floor {self.bayes_floor:.4f} (expected score of the Bayes-optimal oracle "
            f"under the reader's noise)\n"
            f"  oracle score {oracle} (realised, on these noisy labels)\n"
            f"  true Moderate per observed Moderate, lowest over the labels: {self.true_moderate_ratio:.2f}\n"
            f"{realism.describe(self.realism)}\n"
            f"  took {self.seconds:.1f} s"
        )


def summarise(
    out: Path,
    config: PhantomConfig,
    plans: list[StudyPlan],
    results: list[StudyResult],
    spider_volumes: int,
    start: float,
) -> PhantomSummary:
    """Write the CSV tables and sum up what was generated."""
    train, test = results[: config.studies], results[config.studies :]
    write_tables(out, train, test)
    oracle = _oracle_score(out)
    bayes = _bayes_floor(train)
    return PhantomSummary(
        out=out,
        train_studies=len(train),
        test_studies=len(test),
        series=sum(len(r.series) for r in results),
        images=sum(r.images for r in results),
        spider_volumes=spider_volumes,
        hard_cases=sum(bool(r.hard) for r in train),
        irregular_studies=sum(bool(r.layout) or bool((r.observed < 0).any()) for r in train),
        label_counts=_label_counts(train),
        oracle_score=oracle,
        bayes_floor=bayes,
        seconds=time.perf_counter() - start,
        realism=realism.report_from_files(out),
        cohort_draw=plans[0].cohort_draw if plans else 0,
        true_moderate_ratio=_true_moderate_ratio(train),
    )


def _oracle_score(out: Path) -> float:
    """Official score of ``truth/oracle_submission.csv`` against ``train.csv``."""
    codes = read_labels(out / "train.csv").astype(np.int64)
    submission = pd.read_csv(out / "truth" / "oracle_submission.csv")
    return float(score(codes, submission).score)


def _bayes_floor(train: list[StudyResult]) -> float:
    """Expected official score of the oracle on ``train`` given the reader model and blanks (NaN if empty)."""
    if not train:
        return float("nan")
    labelled = (
        np.array([r.observed for r in train], dtype=np.int64).reshape(len(train), len(LABEL_COLUMNS)) >= 0
    )
    return expected_floor(observation_probs(train), labelled).score


def _true_moderate_ratio(train: list[StudyResult]) -> float:
    """:func:`.cohort.true_moderate_ratio` of the training studies."""
    n = len(LABEL_COLUMNS)
    true = np.array([r.true_codes for r in train], dtype=np.int64).reshape(len(train), n)
    return true_moderate_ratio(
        true, np.array([r.observed for r in train], dtype=np.int64).reshape(len(train), n)
    )


def _label_counts(train: list[StudyResult]) -> dict[str, int]:
    """Observed label counts by severity name (and blanks)."""
    codes = np.concatenate([r.observed for r in train]) if train else np.zeros(0, np.int64)
    counts = {name: int((codes == i).sum()) for i, name in enumerate(SEVERITIES)}
    counts["blank"] = int((codes < 0).sum())
    return counts


def write_metadata(out: Path, config: PhantomConfig, summary: PhantomSummary) -> None:
    """``phantom.json``: version, config, sizes, noise, Bayes floor, oracle score and realism (no timings)."""
    meta = {
        "generator": "lumbar_bench.data.phantom",
        "generator_version": GENERATOR_VERSION,
        "config": asdict(config),
        "seed": config.seed,
        "size": config.size,
        "reader_noise": config.reader_noise,
        "train_studies": summary.train_studies,
        "test_studies": summary.test_studies,
        "series": summary.series,
        "images": summary.images,
        "spider_volumes": summary.spider_volumes,
        "hard_cases": summary.hard_cases,
        "irregular_studies": summary.irregular_studies,
        "label_counts": summary.label_counts,
        "bayes_floor": summary.bayes_floor,
        "oracle_score": summary.oracle_score,
        "cohort_draw": summary.cohort_draw,
        "true_moderate_ratio": summary.true_moderate_ratio,
        "realism": summary.realism,
    }
    (out / "phantom.json").write_text(json.dumps(meta, indent=2) + "\n")


__all__ = ["PhantomSummary", "summarise", "write_metadata"]
