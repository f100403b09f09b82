"""Leaderboards: comparable runs read back from MLflow, ranked, with bootstrap intervals.

Only FINISHED top-level runs made by ``lumbar-bench run`` that share a split digest,
a subset and a data digest are ranked together; anything else is refused with the
choices listed, never mixed. One row is one approach and config hash, pooling every
seed (the ``seed`` tag) over its folds; where a (fold, seed) was run more than once,
the latest run counts and the board says so.

A row's score is the mean over seeds of the mean over folds of the official score
(:func:`balanced_mean`: each fold's mean over the seeds that ran it, then the mean
over folds, which is the same number when every seed ran every fold). Intervals and
the paired comparison against ``resnet18`` come from the held-out
``predictions.csv``/``labels.csv`` artifacts by a two-level bootstrap, seeds then
studies (see :mod:`lumbar_bench.metrics.bootstrap`), so a board can be recomputed
from MLflow alone. The row types live in :mod:`~lumbar_bench.board.rows`, the choice of runs in
:mod:`~lumbar_bench.board.runs`, rendering in :mod:`~lumbar_bench.board.render` and the outputs
(files, the MLflow run, the UI view) in :mod:`~lumbar_bench.board.publish`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging

import numpy as np
import pandas as pd

from lumbar_bench.board.rows import BoardRequest, BoardRow, Leaderboard
from lumbar_bench.board.runs import (
    board_runs,
    comparable_key,
    fold_of,
    latest_per_fold_and_seed,
    load_evidence,
    seed_gaps,
    seed_of,
    select_comparable,
)
from lumbar_bench.core.errors import ConfigError, DataError
from lumbar_bench.metrics.bootstrap import Evidence, bootstrap_ci, paired_bootstrap
from lumbar_bench.tracking.search import RunRecord

log = logging.getLogger(__name__)


def balanced_mean(frame: pd.DataFrame) -> pd.Series:
    """Mean over folds of each fold's mean over seeds, per numeric column (``fold`` column required)."""
    return frame.groupby("fold").mean(numeric_only=True).mean()


def seed_std(frame: pd.DataFrame, column: str = "rsna_score") -> float:
    """Std (ddof=1) over seeds of each seed's fold-mean ``column``, over seeds that ran every fold.

    NaN with fewer than two such seeds (one seed measures no seed-to-seed spread).
    """
    n_folds = frame["fold"].nunique()
    per_seed = frame.groupby("seed").agg(n=("fold", "nunique"), value=(column, "mean"))
    complete = per_seed.loc[per_seed["n"] == n_folds, "value"]
    return float(complete.std(ddof=1)) if len(complete) > 1 else float("nan")


def _row(
    approach: str, chash: str, runs: list[RunRecord], ev: Evidence | None, request: BoardRequest
) -> BoardRow:
    """Aggregate one approach/config's runs (one per fold and seed)."""
    runs = sorted(runs, key=lambda r: (fold_of(r), seed_of(r)))
    frame = pd.DataFrame([dict(r.metrics) for r in runs])
    frame["fold"], frame["seed"] = [fold_of(r) for r in runs], [seed_of(r) for r in runs]
    means = balanced_mean(frame).drop(["seed"])
    metrics = {k: float(v) for k, v in means.items() if np.isfinite(v)}
    fold_scores = frame.groupby("fold")["rsna_score"].mean()
    metrics["rsna_score_std"] = float(fold_scores.std(ddof=1)) if len(fold_scores) > 1 else 0.0
    low, high = bootstrap_ci(ev, request.n_boot, request.seed) if ev is not None else (np.nan, np.nan)
    folds, seeds = tuple(sorted(set(frame["fold"]))), tuple(sorted(set(frame["seed"])))
    exceeded = sum(r.tag("budget_exceeded") == "true" for r in runs)
    collapsed = sum(r.tag("collapsed_to_prior") == "true" for r in runs)  # never set on the prior's runs
    n_studies = 0 if ev is None else len(np.unique(ev.study_ids))
    return BoardRow(
        approach,
        chash,
        folds,
        tuple(r.run_id for r in runs),
        metrics,
        low,
        high,
        n_studies,
        runs[0].tag("budget", "?"),
        exceeded,
        seeds=seeds,
        seed_std=seed_std(frame),
        collapsed=collapsed,
    )


def _with_paired(row: BoardRow, evidence: dict, base_key: tuple[str, str], req: BoardRequest) -> BoardRow:
    """``row`` with its paired comparison against the baseline row ``base_key``."""
    ev, base = evidence[(row.approach, row.config_hash)], evidence[base_key]
    if ev is None or (row.approach, row.config_hash) == base_key:
        return row
    return dataclasses.replace(row, paired=paired_bootstrap(ev, base, req.baseline, req.n_boot, req.seed))


def board_id(subset: str, split_digest: str, run_ids: list[str]) -> str:
    """Deterministic id of a board: the same runs always make the same id."""
    digest = hashlib.sha256(",".join(sorted(run_ids)).encode()).hexdigest()[:8]
    return f"{subset}-{split_digest[:8]}-{digest}"


def _seed_notes(rows: list[BoardRow], groups: dict[tuple[str, str], list[RunRecord]]) -> list[str]:
    """Which folds lack which seeds, and which rows' intervals cover studies only (one seed)."""
    notes = [n for (a, c), g in groups.items() for n in seed_gaps(a, c, g)]
    single = [r.approach for r in rows if r.n_seeds == 1]
    if single and len(single) == len(rows):
        notes.append("every row has one seed: its 95% CI resamples studies only (no seed-to-seed spread)")
    elif single:
        notes.append(f"one seed for {', '.join(single)}: 95% CI over studies only (no seed-to-seed spread)")
    return notes


def build(request: BoardRequest) -> Leaderboard:
    """Read, select, deduplicate and rank runs; bootstrap intervals and paired comparisons."""
    runs = board_runs(request)
    if not runs:
        where = f"{request.tracking_uri} (subset={request.subset}, split={request.split})"
        raise ConfigError(f"no FINISHED lumbar-bench runs in experiment {request.experiment!r} at {where}")
    runs = select_comparable(runs)
    split, subset, data = comparable_key(runs[0])
    runs, notes = latest_per_fold_and_seed(runs)
    groups: dict[tuple[str, str], list[RunRecord]] = {}
    for run in runs:
        groups.setdefault((run.tag("approach"), run.tag("config_hash")), []).append(run)
    evidence: dict[tuple[str, str], Evidence | None] = {}
    for key, members in groups.items():
        try:
            evidence[key] = load_evidence(request.tracking_uri, members)
        except DataError as exc:
            evidence[key] = None
            notes.append(f"{key[0]} {key[1]}: no interval ({exc})")
    rows = sorted(
        (_row(a, c, g, evidence[(a, c)], request) for (a, c), g in groups.items()), key=lambda r: r.score
    )
    name, _, chash = request.baseline.partition(":")  # "approach" or "approach:config-hash prefix"
    base_keys = [k for k in groups if k[0] == name and k[1].startswith(chash) and evidence[k] is not None]
    if base_keys:
        base_key = next(k for k in ((r.approach, r.config_hash) for r in rows) if k in base_keys)  # best
        rows = [_with_paired(r, evidence, base_key, request) for r in rows]
        if len(base_keys) > 1:
            notes.append(f"paired comparisons use the best {request.baseline} config ({base_key[1]})")
    else:
        notes.append(f"no {request.baseline} runs on this split and subset: no paired comparison")
    if len({r.folds for r in rows}) > 1:
        notes.append("rows were evaluated on different folds; the paired comparison uses shared studies only")
    notes += _seed_notes(rows, groups)
    bid = board_id(subset, split, [r for row in rows for r in row.run_ids])
    args = (tuple(rows), tuple(notes), request.n_boot, request.baseline)
    return Leaderboard(bid, request.experiment, split, subset, data, *args)
