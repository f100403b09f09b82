"""Stage outputs cached under ``<cache_dir>/stages/<stage>-<hash>/``, written atomically.

The hash covers the stage's config and a description of its inputs, so approaches that
share a stage (``nnunet-raw`` and ``nnunet-qc`` share the vertebra U-Net and the
pseudo-masks) reuse one output. A stage is built into a temporary folder and moved into
place with :func:`os.replace`, so an interrupted build is never mistaken for a result.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DONE = ".done.json"


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
    seconds: float


def cached_stage(cache_dir: Path, stage: str, payload: Any, build: Callable[[Path], None]) -> StageResult:
    """Return the cached output of ``stage`` for ``payload``; build it with ``build(tmp)`` if absent."""
    key = stage_key({"stage": stage, "payload": payload})
    root = Path(cache_dir) / "stages"
    target = root / f"{stage}-{key}"
    if (target / DONE).exists():
        log.info("stage %s: cache hit (%s)", stage, target.name)
        return StageResult(target, key, True, 0.0)
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{stage}-"))
    try:
        build(tmp)
        (tmp / DONE).write_text(json.dumps({"stage": stage, "key": key, "payload": payload}, default=str))
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    seconds = time.monotonic() - t0
    log.info("stage %s: built %s in %.1f s", stage, target.name, seconds)
    return StageResult(target, key, False, seconds)
