"""Process pools for the data commands (``synth``, ``prepare``): one per core by default.

Workers come from a fork server (safe when the caller has threads, unlike a plain fork) that
imports the worker's module once; each worker is then forked from it ready to run, instead of
every spawned worker importing numpy, pydicom and the rest again (about a second each here,
which is the whole gain of a second worker on a job of a few seconds).
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from typing import Protocol, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Mapper(Protocol):
    """What :func:`process_pool` yields: an ordered ``map``."""

    def map(self, fn: Callable[[T], R], items: Iterable[T], chunksize: int = 1) -> Iterator[R]:
        """``fn`` over ``items``, results in order."""
        ...


def worker_count(workers: int) -> int:
    """The processes to use: ``workers``, or one per usable CPU core when it is 0."""
    if workers:
        return max(1, int(workers))
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class _InProcess:
    """The one-worker stand-in: the builtin ``map``, with the pool's signature."""

    def map(self, fn: Callable[[T], R], items: Iterable[T], chunksize: int = 1) -> Iterator[R]:
        return map(fn, items)


@contextmanager
def process_pool(n_workers: int, preload: str) -> Generator[Mapper, None, None]:
    """Yield a pool of ``n_workers`` processes with module ``preload`` imported, or the caller for 1.

    The fork server is started once per process and kept for later pools; ``preload`` is the
    module holding the function the pool runs. Only the first pool's preload is imported by the
    server; a later pool with another one still works, its workers importing their module first.
    """
    if n_workers <= 1:
        yield _InProcess()
        return
    if "forkserver" not in multiprocessing.get_all_start_methods():  # not POSIX
        ctx = multiprocessing.get_context("spawn")
    else:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload([preload])
    with ProcessPoolExecutor(max_workers=n_workers, mp_context=ctx) as pool:
        yield pool
