"""``synthesize``: write the synthetic lumbar phantom (RSNA + SPIDER layouts + truth).

The layout is documented in ``docs/architecture.md`` ("Phantom output"). Everything is
drawn from numpy Generators seeded by ``(seed, part, index)``, so the same config writes
byte-identical CSV and DICOM files.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lumbar_bench.constants import LABEL_COLUMNS, PROB_COLUMNS, SEVERITIES, row_id
from lumbar_bench.core.errors import ConfigError
from lumbar_bench.core.parallel import process_pool, worker_count
from lumbar_bench.data.labels import read_labels
from lumbar_bench.data.phantom import cohort, pathology, realism, reference
from lumbar_bench.data.phantom.floor import expected_floor
from lumbar_bench.data.phantom.spider import write_spider_case
from lumbar_bench.data.phantom.study import HARD_KINDS, PART_CODES, StudyPlan, StudyResult, make_study

log = logging.getLogger(__name__)

#: Bumped whenever the generated data changes for the same config (2: the Bayes-optimal oracle
#: file; 3: the joint disease model, real layout irregularities and blank-label rates).
GENERATOR_VERSION = 3
#: Study and series ids are drawn from this range (7-10 digits, like the real ids).
ID_RANGE = (1_000_000, 4_300_000_000)
#: Series ids reserved per study (two sagittal T1, one T2/STIR, up to four axial).
SERIES_PER_STUDY = 7


@dataclass(frozen=True)
class PhantomConfig:
    """What to generate; the same config always writes the same data."""

    studies: int = 200
    seed: int = 0
    size: int = 128
    test_studies: int | None = None
    label_noise: float = pathology.DEFAULT_LABEL_NOISE
    hard_case_rate: float = 0.10
    #: Scale on the real rates of layout irregularities and blank labels (0: all regular).
    irregularity: float = 1.0
    #: Label draws of the training cohort; the one closest to the real statistics is kept.
    cohort_draws: int = 8
    spider_cases: int = 12

    @property
    def n_test(self) -> int:
        """Test studies: ``test_studies`` or ``max(2, studies // 20)``."""
        return self.test_studies if self.test_studies is not None else max(2, self.studies // 20)

    def __post_init__(self) -> None:
        if (
            self.studies < 1
            or self.size < 32
            or self.n_test < 0
            or self.spider_cases < 0
            or self.cohort_draws < 1
        ):
            raise ConfigError(
                f"PhantomConfig: need studies >= 1, size >= 32, non-negative counts; got {self}"
            )
        for name in ("label_noise", "hard_case_rate", "irregularity"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"PhantomConfig: {name} must lie in [0, 1], got {getattr(self, name)}")


@dataclass(frozen=True)
class PhantomSummary:
    """What :func:`synthesize` wrote, with the Bayes floor and the oracle's realised score.

    ``bayes_floor`` is the expected official score of the Bayes-optimal oracle under the label
    noise (``floor.expected_floor``); ``oracle_score`` is its score on this draw of the noisy
    labels, which can fall a little below the floor.
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
            f"under the label noise)\n"
            f"  oracle score {oracle} (realised, on these noisy labels)\n"
            f"{realism.describe(self.realism)}\n"
            f"  took {self.seconds:.1f} s"
        )


def synthesize(
    out: Path, config: PhantomConfig = PhantomConfig(), progress: bool = True, workers: int = 1
) -> PhantomSummary:
    """Write the phantom into ``out`` (created if needed) and return a summary.

    ``workers`` processes draw studies in parallel (default 1: in-process; 0: one per CPU).
    Worker processes are spawned, so a calling script needs the ``if __name__ == "__main__"``
    guard. The output does not depend on the number of workers.
    """
    from lumbar_bench.core.progress import progress_bar

    start = time.perf_counter()
    out = Path(out)
    truth = out / "truth"
    truth.mkdir(parents=True, exist_ok=True)
    plans = plan_studies(config)
    n_workers = worker_count(workers)
    log.info(
        "phantom: %d train + %d test studies at %d px, seed %d, %d worker(s)",
        config.studies,
        config.n_test,
        config.size,
        config.seed,
        n_workers,
    )
    job = partial(_study_job, out=out, seed=config.seed, size=config.size)
    spider_job = partial(_spider_job, out=out / "spider", seed=config.seed, size=config.size)
    with process_pool(n_workers, preload=__name__) as pool:
        results = list(
            progress_bar(_Counted(pool.map(job, plans), len(plans)), "synthesising studies", enabled=progress)
        )
        spider = [name for names in pool.map(spider_job, range(config.spider_cases)) for name in names]
    summary = _summarise(out, config, plans, results, len(spider), start)
    _write_json(out, config, summary)
    log.info(
        "phantom: %d DICOM files in %.1f s, Bayes floor %.4f, oracle score (realised) %s",
        summary.images,
        summary.seconds,
        summary.bayes_floor,
        summary.oracle_score,
    )
    return summary


def _summarise(
    out: Path,
    config: PhantomConfig,
    plans: list[StudyPlan],
    results: list[StudyResult],
    spider_volumes: int,
    start: float,
) -> PhantomSummary:
    """Write the CSV tables and sum up what was generated."""
    train, test = results[: config.studies], results[config.studies :]
    _write_tables(out, train, test, config.label_noise)
    oracle = _oracle_score(out)
    bayes = _bayes_floor(train, config.label_noise)
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
    )


def _study_job(plan: StudyPlan, *, out: Path, seed: int, size: int) -> StudyResult:
    """One study (a top-level function, so worker processes can run it)."""
    truth = out / "truth" if plan.part == "train" else None
    return make_study(out, truth, plan, seed=seed, size=size)


def _spider_job(case: int, *, out: Path, seed: int, size: int) -> list[str]:
    """One SPIDER case (a top-level function, so worker processes can run it)."""
    return write_spider_case(out, case, seed=seed, size=size)


class _Counted:
    """An iterator with a known length, so the progress bar can show a total."""

    def __init__(self, items: Iterator[StudyResult], n: int) -> None:
        self.items, self.n = items, n

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[StudyResult]:
        return iter(self.items)


def _draw_ids(rng: np.random.Generator, n: int, taken: set[int]) -> list[int]:
    """``n`` distinct ids in ``ID_RANGE`` not in ``taken`` (which is updated)."""
    out: list[int] = []
    while len(out) < n:
        value = int(rng.integers(*ID_RANGE))
        if value not in taken:
            taken.add(value)
            out.append(value)
    return out


def plan_studies(config: PhantomConfig) -> list[StudyPlan]:
    """Ids, layouts, hard-case kinds and labels of every study (train first, then test)."""
    rng = np.random.default_rng([config.seed, 7919])
    taken: set[int] = set()
    total = config.studies + config.n_test
    study_ids = _draw_ids(rng, total, taken)
    series_ids = _draw_ids(rng, total * SERIES_PER_STUDY, taken)
    hard = _assign(rng, config.studies, config.hard_case_rate, HARD_KINDS, force=config.studies >= 50)
    plans = []
    for part, n in (("train", config.studies), ("test", config.n_test)):
        layouts, blanks = _layouts(config, part, n)
        draws = config.cohort_draws if part == "train" else 1
        labels, draw = cohort.draw_cohort(
            config.seed, PART_CODES[part], blanks, label_noise=config.label_noise, draws=draws
        )
        for j in range(n):
            i = j if part == "train" else config.studies + j
            plans.append(
                StudyPlan(
                    part=part,
                    index=j,
                    study_id=study_ids[i],
                    series_ids=tuple(series_ids[i * SERIES_PER_STUDY : (i + 1) * SERIES_PER_STUDY]),
                    labels=labels[j],
                    layout=layouts[j],
                    hard=hard[j] if part == "train" else "",
                    cohort_draw=draw,
                )
            )
    return plans


def _layouts(config: PhantomConfig, part: str, n: int) -> tuple[list[str], list[bool]]:
    """Layout kind and blank-label flag per study of one part, by quota of the real rates."""
    rng = cohort.cohort_rng(config.seed, PART_CODES[part])
    shares = {k: v * config.irregularity for k, v in cohort.LAYOUT_SHARES.items()}
    force = part == "train" and n >= 20 and config.irregularity > 0
    layouts = cohort.quota(rng, n, shares, force=force)
    if part != "train":
        return layouts, [False] * n
    blank_share = {"blank": reference.BLANK_STUDY_RATE * config.irregularity}
    return layouts, [k == "blank" for k in cohort.quota(rng, n, blank_share, force=force)]


def _assign(rng: np.random.Generator, n: int, rate: float, kinds: tuple[str, ...], force: bool) -> list[str]:
    """Draw a kind (or ``""``) per study at ``rate``; with ``force`` every kind appears once."""
    out = [str(rng.choice(kinds)) if rng.random() < rate else "" for _ in range(n)]
    if force:
        free = [i for i in rng.permutation(n).tolist() if not out[i]]
        for kind in kinds:
            if kind not in out and free:
                out[free.pop()] = kind
    return out


def _label_frame(results: list[StudyResult], attr: str) -> pd.DataFrame:
    """``train.csv`` form: study_id + 25 label columns as strings ('' = blank)."""
    names = np.array([*SEVERITIES, ""], dtype=object)
    codes = np.array([getattr(r, attr) for r in results], dtype=np.int64).reshape(
        len(results), len(LABEL_COLUMNS)
    )
    frame = pd.DataFrame(names[np.where(codes < 0, 3, codes)], columns=list(LABEL_COLUMNS))
    frame.insert(0, "study_id", [r.study_id for r in results])
    return frame


def _write_tables(out: Path, train: list[StudyResult], test: list[StudyResult], label_noise: float) -> None:
    """Every CSV of the RSNA layout plus the truth tables."""
    _label_frame(train, "observed").to_csv(out / "train.csv", index=False)
    _label_frame(train, "true_codes").to_csv(out / "truth" / "train.csv", index=False)
    coords = [row for r in train for row in r.coordinates]
    pd.DataFrame(
        coords, columns=["study_id", "series_id", "instance_number", "condition", "level", "x", "y"]
    ).to_csv(out / "train_label_coordinates.csv", index=False)
    for part, results in (("train", train), ("test", test)):
        rows = [(r.study_id, sid, desc) for r in results for sid, desc in r.series]
        pd.DataFrame(rows, columns=["study_id", "series_id", "series_description"]).to_csv(
            out / f"{part}_series_descriptions.csv", index=False
        )
    _submission([r.study_id for r in test], np.full((len(test), len(LABEL_COLUMNS), 3), 1 / 3)).to_csv(
        out / "sample_submission.csv", index=False
    )
    truth_codes = np.array([r.true_codes for r in train]).reshape(len(train), len(LABEL_COLUMNS))
    _submission([r.study_id for r in train], pathology.oracle(truth_codes, label_noise)).to_csv(
        out / "truth" / "oracle_submission.csv", index=False
    )
    flags = pd.DataFrame(
        {
            "study_id": [r.study_id for r in train],
            **{k: [int(r.hard == k) for r in train] for k in HARD_KINDS},
        }
    )
    flags.to_csv(out / "truth" / "cases.csv", index=False)


def _submission(study_ids: list[int], probs: np.ndarray) -> pd.DataFrame:
    """Kaggle submission rows ``(row_id, normal_mild, moderate, severe)`` from ``(n, 25, 3)``."""
    rows = [row_id(s, label) for s in study_ids for label in LABEL_COLUMNS]
    flat = np.asarray(probs, dtype=np.float64).reshape(-1, 3)
    return pd.DataFrame({"row_id": rows, **{c: flat[:, i] for i, c in enumerate(PROB_COLUMNS)}})


def _oracle_score(out: Path) -> float | None:
    """Official score of ``truth/oracle_submission.csv`` against ``train.csv`` (None without a scorer)."""
    try:
        from lumbar_bench.metrics.score import score
    except ImportError:
        log.warning("phantom: lumbar_bench.metrics.score is not available; oracle score left empty")
        return None
    codes = read_labels(out / "train.csv").astype(np.int64)
    submission = pd.read_csv(out / "truth" / "oracle_submission.csv")
    return float(score(codes, submission).score)


def _bayes_floor(train: list[StudyResult], label_noise: float) -> float:
    """Expected official score of the oracle on ``train`` given its truth and blanks (NaN if empty)."""
    if not train:
        return float("nan")
    n = len(LABEL_COLUMNS)
    truth = np.array([r.true_codes for r in train], dtype=np.int64).reshape(len(train), n)
    labelled = np.array([r.observed for r in train], dtype=np.int64).reshape(len(train), n) >= 0
    return expected_floor(truth, label_noise, labelled).score


def _label_counts(train: list[StudyResult]) -> dict[str, int]:
    """Observed label counts by severity name (and blanks)."""
    codes = np.concatenate([r.observed for r in train]) if train else np.zeros(0, np.int64)
    counts = {name: int((codes == i).sum()) for i, name in enumerate(SEVERITIES)}
    counts["blank"] = int((codes < 0).sum())
    return counts


def _write_json(out: Path, config: PhantomConfig, summary: PhantomSummary) -> None:
    """``phantom.json``: version, config, sizes, noise, Bayes floor, oracle score and realism (no timings)."""
    meta = {
        "generator": "lumbar_bench.data.phantom",
        "generator_version": GENERATOR_VERSION,
        "config": asdict(config),
        "seed": config.seed,
        "size": config.size,
        "label_noise": config.label_noise,
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
        "realism": summary.realism,
    }
    (out / "phantom.json").write_text(json.dumps(meta, indent=2) + "\n")
