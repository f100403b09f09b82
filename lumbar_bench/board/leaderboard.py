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
from MLflow alone. Rendering lives in :mod:`lumbar_bench.board.render`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from lumbar_bench.board.render import (
    FORMATS,
    figure,
    header_lines,
    oracle_score,
    render,
    to_frame,
    to_markdown,
    to_text_table,
)
from lumbar_bench.core.errors import ConfigError, DataError
from lumbar_bench.metrics.bootstrap import Evidence, Paired, bootstrap_ci, paired_bootstrap, run_evidence
from lumbar_bench.tracking.client import set_tags, share_runs_view, tracked_run
from lumbar_bench.tracking.models import register_model
from lumbar_bench.tracking.names import DEFAULT_EXPERIMENT, DEFAULT_TRACKING_URI
from lumbar_bench.tracking.search import RunRecord, find_runs, get_run, local_artifact

__all__ = [
    "BASELINE",
    "FORMATS",
    "BoardRequest",
    "BoardRow",
    "Leaderboard",
    "build",
    "figure",
    "header_lines",
    "oracle_score",
    "publish",
    "register_top",
    "render",
    "results_dir",
    "to_frame",
    "to_markdown",
    "share_view",
    "to_text_table",
    "write",
]

log = logging.getLogger(__name__)

BASELINE = "resnet18"
#: The board's table artifact of the leaderboard run, and its first columns.
TABLE = "leaderboard.json"
TABLE_FIRST = ("rank", "approach", "rsna_score", "ci_low", "ci_high", "paired_diff", "runtime/total_s")


@dataclass(frozen=True)
class BoardRequest:
    """Which runs to rank and how to bootstrap them."""

    tracking_uri: str = DEFAULT_TRACKING_URI
    experiment: str = DEFAULT_EXPERIMENT
    split: str | None = None
    subset: str | None = None
    baseline: str = BASELINE
    n_boot: int = 1000
    seed: int = 0
    #: Rank only these runs (e.g. the tasks of a sweep); empty ranks every comparable run.
    run_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class BoardRow:
    """One approach and config hash on the board: its runs over folds and seeds.

    ``folds`` and ``seeds`` are the distinct folds and seeds of its runs; ``seed_std`` is
    the standard deviation (ddof=1) over seeds of each seed's fold-mean score, over the
    seeds that ran every fold (NaN with fewer than two such seeds); ``collapsed`` counts
    runs tagged ``collapsed_to_prior=true``.
    """

    approach: str
    config_hash: str
    folds: tuple[int, ...]
    run_ids: tuple[str, ...]
    metrics: dict[str, float]
    ci_low: float
    ci_high: float
    n_studies: int
    budget: str
    budget_exceeded: int
    paired: Paired | None = None
    seeds: tuple[int, ...] = (0,)
    seed_std: float = float("nan")
    collapsed: int = 0

    @property
    def score(self) -> float:
        """Mean over seeds of the mean official score over folds."""
        return self.metrics["rsna_score"]

    @property
    def n_seeds(self) -> int:
        """How many distinct seeds the row pools."""
        return len(self.seeds)


@dataclass(frozen=True)
class Leaderboard:
    """A ranked board of comparable runs and what it says about them."""

    board_id: str
    experiment: str
    split_digest: str
    subset: str
    data_digest: str
    rows: tuple[BoardRow, ...]
    notes: tuple[str, ...] = ()
    n_boot: int = 1000
    baseline: str = BASELINE

    @property
    def run_ids(self) -> list[str]:
        """Every run that went into the board."""
        return [r for row in self.rows for r in row.run_ids]


def _fold(run: RunRecord) -> int:
    return int(run.tag("fold", "0"))


def _seed(run: RunRecord) -> int:
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
        key = (run.tag("approach"), run.tag("config_hash"), _fold(run), _seed(run))
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
    seeds = {_seed(r) for r in runs}
    notes = []
    for fold in sorted({_fold(r) for r in runs}):
        lacking = sorted(seeds - {_seed(r) for r in runs if _fold(r) == fold})
        if lacking:
            word = "seed" if len(lacking) == 1 else "seeds"
            notes.append(f"{approach} {chash}: fold {fold} lacks {word} {', '.join(map(str, lacking))}")
    return notes


def load_evidence(uri: str, runs: list[RunRecord]) -> Evidence:
    """Pool the held-out ``labels.csv``/``predictions.csv`` of ``runs`` (one per fold and seed)."""
    from lumbar_bench.data.labels import read_labels

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
            parts.append(run_evidence(labels, preds, _fold(run), _seed(run)))
    cat = np.concatenate
    return Evidence(
        cat([p.study_ids for p in parts]),
        cat([p.folds for p in parts]),
        np.vstack([p.num for p in parts]),
        np.vstack([p.den for p in parts]),
        cat([p.seed_of for p in parts]),
    )


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
    runs = sorted(runs, key=lambda r: (_fold(r), _seed(r)))
    frame = pd.DataFrame([dict(r.metrics) for r in runs])
    frame["fold"], frame["seed"] = [_fold(r) for r in runs], [_seed(r) for r in runs]
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


def write(board: Leaderboard, out_dir: Path) -> dict[str, Path]:
    """Write ``leaderboard.md``, ``.csv`` and ``.png`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {ext: out_dir / f"leaderboard.{ext}" for ext in ("md", "csv", "png")}
    paths["md"].write_text(to_markdown(board))
    to_frame(board).to_csv(paths["csv"], index=False)
    figure(board).savefig(paths["png"])
    return paths


def results_dir(root: Path, experiment: str) -> Path:
    """``root/<experiment>`` with the experiment name made safe for a folder."""
    safe = (
        "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in experiment).strip("._") or "experiment"
    )
    return root / safe


def publish(board: Leaderboard, uri: str, paths: dict[str, Path]) -> str:
    """Log the board to a small ``leaderboard`` run and tag its runs ``leaderboard=<id>``.

    The run holds the board as a table (``leaderboard.json``, sortable in the UI, read back
    with ``mlflow.load_table``), as ``.md``/``.csv``/``.png`` files, and as its description.
    """
    tags = {
        "kind": "leaderboard",
        "board_id": board.board_id,
        "board.subset": board.subset,
        "board.split_digest": board.split_digest,
        "board.rows": len(board.rows),
        "mlflow.note.content": to_markdown(board),
    }
    with tracked_run(uri, board.experiment, f"leaderboard-{board.subset}", tags) as trun:
        frame = to_frame(board)
        first = [c for c in TABLE_FIRST if c in frame]  # the UI shows the leftmost columns
        trun.log_table(frame[first + [c for c in frame if c not in first]], TABLE)
        for path in paths.values():
            trun.log_artifact(path)
    for run_id in board.run_ids:
        set_tags(uri, run_id, {"leaderboard": board.board_id})
    return trun.run_id


#: Runs-table columns of a board's view in the MLflow UI (the UI's own column keys).
VIEW_COLUMNS = (
    "tags.`approach`",
    "tags.`seed`",
    "metrics.`rsna_score`",
    "metrics.`rsna_score_ci_low`",
    "metrics.`rsna_score_ci_high`",
    "metrics.`runtime/total_s`",
    "metrics.`balanced_accuracy`",
)


def share_view(board: Leaderboard, uri: str) -> str:
    """Save the UI view of the board's runs (best score first, score, CI and runtime as columns).

    Returns the path to open after ``mlflow ui``'s address (``http://127.0.0.1:5000``).
    """
    view = {
        "searchFilter": f"tags.leaderboard = '{board.board_id}'",
        "orderByKey": "metrics.`rsna_score`",
        "orderByAsc": True,
        "selectedColumns": list(VIEW_COLUMNS),
    }
    return share_runs_view(uri, board.experiment, f"board-{board.board_id}", view)


def register_top(board: Leaderboard, uri: str, name: str) -> tuple[int, RunRecord]:
    """Register the model of the top row's best run as a new version of ``name``.

    The version's tags give the board id, the row's score and 95% CI, and the run's own score.
    Returns the version number and the run.
    """
    top = board.rows[0]
    runs = [get_run(uri, r) for r in top.run_ids]
    best = min(runs, key=lambda r: r.metric("rsna_score", float("inf")))
    tags = {
        "board_id": board.board_id,
        "approach": top.approach,
        "config_hash": top.config_hash,
        "board_rsna_score": f"{top.score:.6f}",
        "board_ci": f"[{top.ci_low:.6f}, {top.ci_high:.6f}]",
        "run_rsna_score": f"{best.metric('rsna_score', float('nan')):.6f}",
        "subset": board.subset,
        "split_digest": board.split_digest,
    }
    return register_model(uri, name, best.run_id, tags), best
