"""``synthesize``: write the synthetic lumbar phantom (RSNA + SPIDER layouts + truth).

The layout is documented in ``docs/architecture.md`` ("Phantom output"). Everything is
drawn from numpy Generators seeded by ``(seed, part, index)``, so the same config writes
byte-identical CSV and DICOM files.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

from lumbar_bench.core.parallel import process_pool, worker_count
from lumbar_bench.core.progress import progress_bar
from lumbar_bench.data.phantom.config import GENERATOR_VERSION, PhantomConfig
from lumbar_bench.data.phantom.plans import plan_studies
from lumbar_bench.data.phantom.spider import write_spider_case
from lumbar_bench.data.phantom.study import StudyPlan, StudyResult, make_study
from lumbar_bench.data.phantom.summary import PhantomSummary, summarise, write_metadata

log = logging.getLogger(__name__)


def synthesize(
    out: Path,
    config: PhantomConfig = PhantomConfig(),  # noqa: B008 (frozen, immutable)
    progress: bool = True,
    workers: int = 1,
) -> PhantomSummary:
    """Write the phantom into ``out`` (created if needed) and return a summary.

    ``workers`` processes draw studies in parallel (default 1: in-process; 0: one per CPU).
    Worker processes are spawned, so a calling script needs the ``if __name__ == "__main__"``
    guard. The output does not depend on the number of workers.
    """
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
    summary = summarise(out, config, plans, results, len(spider), start)
    write_metadata(out, config, summary)
    log.info(
        "phantom: %d DICOM files in %.1f s, Bayes floor %.4f, oracle score (realised) %s",
        summary.images,
        summary.seconds,
        summary.bayes_floor,
        summary.oracle_score,
    )
    return summary


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


__all__ = ["GENERATOR_VERSION", "PhantomConfig", "PhantomSummary", "plan_studies", "synthesize"]
