"""Stage outputs cached under ``<cache_dir>/stages/<stage>-<hash>/``, written atomically.

The hash covers the stage's config and a description of its inputs, so approaches that
share a stage (``nnunet-raw`` and ``nnunet-qc`` share the vertebra U-Net and the
pseudo-masks) reuse one output. A stage is built into a temporary folder and moved into
place with :func:`os.replace`, so an interrupted build is never mistaken for a result.
Builders hold a file lock beside the target while they build, so parallel tasks of a sweep
(other processes, other nodes on a shared filesystem) that need the same output wait for the
first one and read its result instead of building it again.

Each output records the seconds its build took. A run that reuses it is charged them
(:attr:`StageResult.reused_seconds`, :meth:`~lumbar_bench.approaches.context.RunContext.charge`), so a
deadline-bound approach trains as long from a warm cache as from an empty one, and variants
that share a stage are compared at the same compute.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from lumbar_bench.core.files import write_text_atomic

log = logging.getLogger(__name__)

DONE = ".done.json"
#: In a run's work directory: the stage outputs that run built, so a resumed attempt is not charged for them.
BUILT_HERE = "stages_built.json"


def stage_key(payload: Any) -> str:
    """Short, stable hash of any JSON-able payload (config dicts, study lists, upstream keys)."""
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class StageResult:
    """Where a stage's output lives, whether it came from the cache, and how long it took."""

    path: Path
    key: str
    hit: bool
    #: Seconds this call spent building the output (0 on a cache hit).
    seconds: float
    #: On a hit, the seconds the output's build took, less any time this call waited for that
    #: build to finish (a wait is already spent here); 0 when built here or recorded by older code.
    reused_seconds: float = 0.0


def cached_stage(cache_dir: Path, stage: str, payload: Any, build: Callable[[Path], None]) -> StageResult:
    """Return the cached output of ``stage`` for ``payload``; build it with ``build(tmp)`` if absent."""
    key = stage_key({"stage": stage, "payload": payload})
    target = Path(cache_dir) / "stages" / f"{stage}-{key}"
    t0 = time.monotonic()

    def build_marked(tmp: Path) -> None:
        t_build = time.monotonic()
        build(tmp)
        done = {"stage": stage, "key": key, "payload": payload, "seconds": time.monotonic() - t_build}
        (tmp / DONE).write_text(json.dumps(done, default=str))

    built = build_once(target, DONE, build_marked)
    seconds = time.monotonic() - t0
    if built:
        log.info("stage %s: built %s in %.1f s", stage, target.name, seconds)
        return StageResult(target, key, False, seconds)
    reused = max(0.0, build_seconds(target) - seconds)
    log.info("stage %s: cache hit (%s; %.1f s of build not waited for)", stage, target.name, reused)
    return StageResult(target, key, True, 0.0, reused)


def charge_reuse(stage: StageResult, ctx: Any, report: Any) -> None:
    """Charge a reused stage's build to the run: its soft budget and ``runtime/reused_s`` in ``report``.

    A stage an earlier attempt of the same run built (listed in the run's work directory) is not
    charged again: a resumed attempt already carries that attempt's seconds.
    """
    built = _built_here(ctx.workdir)
    if not stage.hit:
        if ctx.dist.is_main:
            Path(ctx.workdir).mkdir(parents=True, exist_ok=True)
            write_text_atomic(Path(ctx.workdir) / BUILT_HERE, json.dumps(sorted(built | {stage.path.name})))
        seconds = 0.0
    else:
        seconds = 0.0 if stage.path.name in built else stage.reused_seconds
    ctx.charge(seconds)
    report.seconds("reused", seconds)


def _built_here(workdir: Path) -> set[str]:
    try:
        return set(json.loads((Path(workdir) / BUILT_HERE).read_text()))
    except (OSError, ValueError, TypeError):
        return set()


def build_seconds(target: Path) -> float:
    """The seconds the build of the stage output ``target`` took, as recorded in it (0 if unrecorded)."""
    try:
        return float(json.loads((target / DONE).read_text()).get("seconds", 0.0))
    except (OSError, ValueError, TypeError, AttributeError):
        return 0.0


def _remove_stale_builds(target: Path) -> None:
    """Remove temporary build folders of ``target`` that killed builders left (call under its lock)."""
    stale = re.compile(rf"\.{re.escape(target.name)}-[a-z0-9_]{{8}}")
    for path in target.parent.iterdir():
        if path.is_dir() and stale.fullmatch(path.name):
            log.info("removing %s, left by a build that was killed", path.name)
            shutil.rmtree(path, ignore_errors=True)


def build_once(target: Path, marker: str, build: Callable[[Path], None]) -> bool:
    """Make the folder ``target`` with ``build(tmp)`` unless ``target/marker`` exists; True if built here.

    The build runs in a temporary sibling folder that is renamed into place, under a file lock
    (``<target>.lock``), so an interrupted build leaves nothing and concurrent callers build once.
    A temporary folder left by a builder that was killed outright (SIGKILL, a lost node) is removed
    by the next one: whoever holds the lock is the only builder of ``target``.
    """
    if (target / marker).exists():
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(target.parent / f"{target.name}.lock")
    try:
        lock.acquire(blocking=False)
    except Timeout:
        log.info("waiting for another process to build %s", target.name)
        lock.acquire()
    try:
        if (target / marker).exists():  # built by the process we waited for
            return False
        _remove_stale_builds(target)
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-"))
        try:
            build(tmp)
            if target.exists():  # a leftover without its marker: never a result
                shutil.rmtree(target)
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    finally:
        lock.release()
    return True
