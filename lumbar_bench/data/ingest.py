"""``prepare``: decode every series of an :class:`RSNAData` part once into the cache.

One unreadable file or series is recorded in the summary and never stops the walk.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from rich.console import Console
from rich.progress import track

from lumbar_bench.core.errors import DataError
from lumbar_bench.core.parallel import process_pool, worker_count
from lumbar_bench.data.cache import SeriesCache

if TYPE_CHECKING:  # workers import this module: keep pandas out of it
    from lumbar_bench.data.rsna import RSNAData

log = logging.getLogger(__name__)
T = TypeVar("T")
#: Series per task handed to a worker; each task writes its cache entries behind its decoding.
CHUNK = 4


@dataclass(frozen=True)
class IngestSummary:
    """What :func:`prepare` did.

    ``skipped_files``: ``(path, reason)`` of each DICOM file left out of its series;
    ``failed_series``: ``(series folder, reason)`` of each series with no usable slice.
    """

    studies: int
    series: int
    slices: int
    skipped_files: tuple[tuple[str, str], ...]
    failed_series: tuple[tuple[str, str], ...]
    seconds: float
    cache_hits: int

    @property
    def slices_per_second(self) -> float:
        """Throughput of the walk."""
        return self.slices / self.seconds if self.seconds > 0 else 0.0

    def describe(self) -> str:
        """Describe the walk in a few lines for the terminal."""
        lines = [
            f"prepared {self.series} series of {self.studies} studies: {self.slices} slices in "
            f"{self.seconds:.1f} s ({self.slices_per_second:.0f} slices/s), "
            f"{self.cache_hits} cache hits",
        ]
        if self.skipped_files:
            lines.append(f"skipped {len(self.skipped_files)} files:")
            lines += [f"  {path}: {reason}" for path, reason in self.skipped_files]
        if self.failed_series:
            lines.append(f"{len(self.failed_series)} series could not be read:")
            lines += [f"  {path}: {reason}" for path, reason in self.failed_series]
        return "\n".join(lines)


@dataclass(frozen=True)
class _SeriesResult:
    """Outcome of one series: slices and skipped files, or the reason it failed."""

    folder: Path
    slices: int = 0
    hit: bool = False
    skipped: tuple[tuple[str, str], ...] = ()
    failure: str | None = None


def _ingest_series(cache: SeriesCache, folder: Path) -> _SeriesResult:
    """Fill the cache for one series folder; never raises for a bad series."""
    try:
        volume, hit = cache.lookup(folder)
    except DataError as exc:
        log.warning("%s", exc)
        return _SeriesResult(folder, failure=str(exc))
    except Exception as exc:  # one broken series must not end the walk
        reason = f"{type(exc).__name__}: {exc}"
        log.warning("%s: series skipped (%s)", folder, reason)
        return _SeriesResult(folder, failure=reason)
    skipped = tuple((str(folder / name), reason) for name, reason in volume.skipped)
    return _SeriesResult(folder, volume.n_slices, hit, skipped)


def _ingest_chunk(cache: SeriesCache, folders: list[Path]) -> list[_SeriesResult]:
    """:func:`_ingest_series` over ``folders``, cache writes overlapping the next decode."""
    with cache.writing_behind():
        return [_ingest_series(cache, folder) for folder in folders]


def _progress(items: Iterable[T], total: int, description: str, enabled: bool) -> Iterator[T]:
    """Iterate ``items`` with a transient rich progress bar on stderr when ``enabled``."""
    if not enabled:
        yield from items
        return
    yield from track(
        items, description=description, total=total, console=Console(stderr=True), transient=True
    )


def prepare(data: RSNAData, progress: bool = True, workers: int = 1) -> IngestSummary:
    """Decode (or find in the cache) every listed series of ``data`` and summarise.

    ``workers`` processes decode series side by side (0: one per core), ``CHUNK`` series per
    task. Each holds the series it decodes and at most two waiting for their background cache
    write, so memory does not grow with the data set; cache writes are atomic, so
    concurrent writers of the same entry are harmless; a failing series is reported as with
    one worker, and the progress bar and summary count across workers.
    """
    start = time.perf_counter()
    cache = data.cache
    folders = [
        data.series_dir(st, se) for st, se in data.series[["study_id", "series_id"]].itertuples(index=False)
    ]
    n_workers = min(worker_count(workers), max(1, len(folders)))
    log.info("prepare: %d series, %d worker(s)", len(folders), n_workers)
    chunks = [folders[i : i + CHUNK] for i in range(0, len(folders), CHUNK)]
    with process_pool(n_workers, preload=__name__) as pool:
        done = chain.from_iterable(pool.map(partial(_ingest_chunk, cache), chunks))
        results = list(_progress(done, len(folders), f"prepare: {data.part} series", progress))
    return IngestSummary(
        studies=len(data.study_ids),
        series=len(folders),
        slices=sum(r.slices for r in results),
        skipped_files=tuple(item for r in results for item in r.skipped),
        failed_series=tuple((str(r.folder), r.failure) for r in results if r.failure is not None),
        seconds=time.perf_counter() - start,
        cache_hits=sum(r.hit for r in results),
    )
