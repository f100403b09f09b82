"""Which runs a board ranks, and their evidence (held-out predictions and labels) read back from MLflow.

Only FINISHED top-level runs made by ``lumbar-bench run`` that share a split digest, a subset and
a data digest are ranked together; anything else is refused with the choices listed, never mixed.
Where a (fold, seed) was run more than once, the latest run counts and the board says so.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from lumbar_bench.board.rows import BoardRequest
from lumbar_bench.core.errors import ConfigError, DataError
from lumbar_bench.data.labels import read_labels
from lumbar_bench.metrics.bootstrap import Evidence, run_evidence
from lumbar_bench.tracking.search import RunRecord, find_runs, local_artifact

log = logging.getLogger(__name__)


def fold_of(run: RunRecord) -> int:
    """The run's held-out fold (its ``fold`` tag)."""
    return int(run.tag("fold", "0"))


def seed_of(run: RunRecord) -> int:
    """The run's seed (its ``seed`` tag; 0 when it has none)."""
    return int(run.tag("seed", "0"))


def comparable_key(run: RunRecord) -> tuple[str, str, str]:
    """Return what must match for two runs to be ranked together: split digest, subset, data digest."""
    return run.tag("split_digest"), run.tag("subset"), run.tag("data_digest")


def board_runs(request: BoardRequest) -> list[RunRecord]:
    """FINISHED top-level ``lumbar-bench run`` runs of the experiment, filtered in the store."""
    if request.split and not all(ch in "0123456789abcdef" for ch in request.split):
        raise ConfigError(f"--split {request.split!r}: expected a (prefix of a) hex split digest")
    runs = find_runs(
        request.tracking_uri,
        request.experiment,
        status="FINISHED",
        subset=request.subset or None,
        split_prefix=request.split or None,
        top_level=True,
    )
    wanted = set(request.run_ids)
    return [r for r in runs if r.tag("approach") and (not wanted or r.run_id in wanted)]


def select_comparable(runs: list[RunRecord]) -> list[RunRecord]:
    """Return the runs if all are comparable; else raise ConfigError listing the groups."""
    groups: dict[tuple[str, str, str], list[RunRecord]] = {}
    for run in runs:
        groups.setdefault(comparable_key(run), []).append(run)
    if len(groups) <= 1:
        return runs
    lines = [
        f"  --split {s[:12]} --subset {sub}  (data {d[:12]}): {len(g)} runs of "
        f"{', '.join(sorted({r.tag('approach') for r in g}))}"
        for (s, sub, d), g in groups.items()
    ]
    raise ConfigError(
        "these runs are not comparable (different split, subset or data); pick one group:\n"
        + "\n".join(lines)
    )


def latest_per_fold_and_seed(runs: list[RunRecord]) -> tuple[list[RunRecord], list[str]]:
    """One run per (approach, config hash, fold, seed): the latest; notes say what was dropped."""
    by_key: dict[tuple[str, str, int, int], list[RunRecord]] = {}
    for run in runs:
        key = (run.tag("approach"), run.tag("config_hash"), fold_of(run), seed_of(run))
        by_key.setdefault(key, []).append(run)
    kept, notes = [], []
    for (approach, chash, fold, seed), group in sorted(by_key.items()):
        group.sort(key=lambda r: r.start_time, reverse=True)
        kept.append(group[0])
        if len(group) > 1:
            notes.append(
                f"{approach} {chash} fold {fold} seed {seed}: {len(group)} finished runs, "
                f"took the latest ({group[0].run_id[:8]})"
            )
    return kept, notes


def seed_gaps(approach: str, chash: str, runs: list[RunRecord]) -> list[str]:
    """Notes naming each fold that lacks a seed the row ran elsewhere (e.g. ``fold 0 lacks seed 2``)."""
    seeds = {seed_of(r) for r in runs}
    notes = []
    for fold in sorted({fold_of(r) for r in runs}):
        lacking = sorted(seeds - {seed_of(r) for r in runs if fold_of(r) == fold})
        if lacking:
            word = "seed" if len(lacking) == 1 else "seeds"
            notes.append(f"{approach} {chash}: fold {fold} lacks {word} {', '.join(map(str, lacking))}")
    return notes


def load_evidence(uri: str, runs: list[RunRecord]) -> Evidence:
    """Pool the held-out ``labels.csv``/``predictions.csv`` of ``runs`` (one per fold and seed)."""
    parts = []
    with tempfile.TemporaryDirectory() as tmp:
        for run in runs:
            dst = Path(tmp) / run.run_id
            try:
                labels = read_labels(local_artifact(uri, run.run_id, "labels.csv", dst))
                preds = pd.read_csv(
                    local_artifact(uri, run.run_id, "predictions.csv", dst),
                    dtype={"row_id": str},
                )
            except Exception as exc:  # noqa: BLE001 - a run without evidence gets no interval
                raise DataError(f"run {run.run_id}: cannot read its predictions/labels ({exc})") from exc
            parts.append(run_evidence(labels, preds, fold_of(run), seed_of(run)))
    cat = np.concatenate
    return Evidence(
        cat([p.study_ids for p in parts]),
        cat([p.folds for p in parts]),
        np.vstack([p.num for p in parts]),
        np.vstack([p.den for p in parts]),
        cat([p.seed_of for p in parts]),
    )
