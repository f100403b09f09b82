"""Leaderboards: comparable runs read back from MLflow, ranked, with bootstrap intervals.

Only FINISHED top-level runs made by ``lumbar-bench run`` that share a split digest,
a subset and a data digest are ranked together; anything else is refused with the
choices listed, never mixed. One row is one approach and config hash; where a fold
was run more than once, the latest run counts and the board says so.

Intervals and the paired comparison against ``resnet18`` come from the held-out
``predictions.csv``/``labels.csv`` artifacts (see :mod:`lumbar_bench.metrics.bootstrap`),
so a board can be recomputed from MLflow alone.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lumbar_bench import tracking
from lumbar_bench.constants import LABEL_COLUMNS
from lumbar_bench.errors import ConfigError, DataError
from lumbar_bench.metrics.bootstrap import Evidence, Paired, bootstrap_ci, paired_bootstrap, study_parts
from lumbar_bench.metrics.score import PART_NAMES, submission_matrix

log = logging.getLogger(__name__)

BASELINE = "resnet18"
FORMATS = ("table", "markdown", "csv")


@dataclass(frozen=True)
class BoardRequest:
    """Which runs to rank and how to bootstrap them."""

    tracking_uri: str = tracking.DEFAULT_TRACKING_URI
    experiment: str = tracking.DEFAULT_EXPERIMENT
    split: str | None = None
    subset: str | None = None
    baseline: str = BASELINE
    n_boot: int = 1000
    seed: int = 0


@dataclass(frozen=True)
class BoardRow:
    """One approach and config hash on the board."""

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

    @property
    def score(self) -> float:
        """Mean official score over folds."""
        return self.metrics["rsna_score"]


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


def _tag(run: Any, key: str, default: str = "") -> str:
    return run.data.tags.get(key, default)


def comparable_key(run: Any) -> tuple[str, str, str]:
    """Return what must match for two runs to be ranked together: split digest, subset, data digest."""
    return _tag(run, "split_digest"), _tag(run, "subset"), _tag(run, "data_digest")


def find_runs(request: BoardRequest) -> list[Any]:
    """FINISHED top-level ``lumbar-bench run`` runs of the experiment, filtered in the query."""
    clauses = ["attributes.status = 'FINISHED'"]
    if request.subset:
        clauses.append(f"tags.subset = '{request.subset}'")
    if request.split:
        if not all(ch in "0123456789abcdef" for ch in request.split):
            raise ConfigError(f"--split {request.split!r}: expected a (prefix of a) hex split digest")
        clauses.append(f"tags.split_digest LIKE '{request.split}%'")
    runs = tracking.search_runs(request.tracking_uri, request.experiment, " and ".join(clauses))
    return [r for r in runs if _tag(r, "approach") and "mlflow.parentRunId" not in r.data.tags]


def select_comparable(runs: list[Any]) -> list[Any]:
    """Return the runs if all are comparable; else raise ConfigError listing the groups."""
    groups: dict[tuple[str, str, str], list[Any]] = {}
    for run in runs:
        groups.setdefault(comparable_key(run), []).append(run)
    if len(groups) <= 1:
        return runs
    lines = [
        f"  --split {s[:12]} --subset {sub}  (data {d[:12]}): {len(g)} runs of "
        f"{', '.join(sorted({_tag(r, 'approach') for r in g}))}"
        for (s, sub, d), g in groups.items()
    ]
    raise ConfigError(
        "these runs are not comparable (different split, subset or data); pick one group:\n"
        + "\n".join(lines)
    )


def latest_per_fold(runs: list[Any]) -> tuple[list[Any], list[str]]:
    """One run per (approach, config hash, fold): the latest; notes say what was dropped."""
    by_key: dict[tuple[str, str, str], list[Any]] = {}
    for run in runs:
        by_key.setdefault((_tag(run, "approach"), _tag(run, "config_hash"), _tag(run, "fold")), []).append(
            run
        )
    kept, notes = [], []
    for (approach, chash, fold), group in sorted(by_key.items()):
        group.sort(key=lambda r: r.info.start_time, reverse=True)
        kept.append(group[0])
        if len(group) > 1:
            notes.append(
                f"{approach} {chash} fold {fold}: {len(group)} finished runs, "
                f"took the latest ({group[0].info.run_id[:8]})"
            )
    return kept, notes


def load_evidence(uri: str, runs: list[Any]) -> Evidence:
    """Pool the held-out ``labels.csv``/``predictions.csv`` of ``runs`` (one per fold)."""
    from lumbar_bench.data.labels import read_labels

    ids, folds, nums, dens = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for run in runs:
            dst = Path(tmp) / run.info.run_id
            try:
                labels = read_labels(tracking.local_artifact(uri, run.info.run_id, "labels.csv", dst))
                preds = pd.read_csv(
                    tracking.local_artifact(uri, run.info.run_id, "predictions.csv", dst),
                    dtype={"row_id": str},
                )
            except Exception as exc:  # noqa: BLE001 - a run without evidence gets no interval
                raise DataError(f"run {run.info.run_id}: cannot read its predictions/labels ({exc})") from exc
            codes = labels[list(LABEL_COLUMNS)].to_numpy(dtype=np.int64)
            num, den = study_parts(codes, submission_matrix(labels, preds))
            ids.append(np.asarray(labels.index, dtype=np.int64))
            folds.append(np.full(len(labels), int(_tag(run, "fold", "0"))))
            nums.append(num)
            dens.append(den)
    return Evidence(np.concatenate(ids), np.concatenate(folds), np.vstack(nums), np.vstack(dens))


def _row(approach: str, chash: str, runs: list[Any], ev: Evidence | None, request: BoardRequest) -> BoardRow:
    """Aggregate one approach/config's runs (one per fold)."""
    runs = sorted(runs, key=lambda r: int(_tag(r, "fold", "0")))
    frame = pd.DataFrame([r.data.metrics for r in runs])
    metrics = {k: float(v) for k, v in frame.mean(numeric_only=True).items() if np.isfinite(v)}
    metrics["rsna_score_std"] = float(frame["rsna_score"].std(ddof=1)) if len(runs) > 1 else 0.0
    low, high = bootstrap_ci(ev, request.n_boot, request.seed) if ev is not None else (np.nan, np.nan)
    folds, run_ids = tuple(int(_tag(r, "fold", "0")) for r in runs), tuple(r.info.run_id for r in runs)
    exceeded = sum(_tag(r, "budget_exceeded") == "true" for r in runs)
    n_studies = 0 if ev is None else len(ev.study_ids)
    budget = _tag(runs[0], "budget", "?")
    return BoardRow(approach, chash, folds, run_ids, metrics, low, high, n_studies, budget, exceeded)


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


def build(request: BoardRequest) -> Leaderboard:
    """Read, select, deduplicate and rank runs; bootstrap intervals and paired comparisons."""
    runs = find_runs(request)
    if not runs:
        where = f"{request.tracking_uri} (subset={request.subset}, split={request.split})"
        raise ConfigError(f"no FINISHED lumbar-bench runs in experiment {request.experiment!r} at {where}")
    runs = select_comparable(runs)
    split, subset, data = comparable_key(runs[0])
    runs, notes = latest_per_fold(runs)
    groups: dict[tuple[str, str], list[Any]] = {}
    for run in runs:
        groups.setdefault((_tag(run, "approach"), _tag(run, "config_hash")), []).append(run)
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
    base_keys = [k for k in groups if k[0] == request.baseline and evidence[k] is not None]
    if base_keys:
        base_key = next(k for k in ((r.approach, r.config_hash) for r in rows) if k in base_keys)  # best
        rows = [_with_paired(r, evidence, base_key, request) for r in rows]
        if len(base_keys) > 1:
            notes.append(f"paired comparisons use the best {request.baseline} config ({base_key[1]})")
    else:
        notes.append(f"no {request.baseline} runs on this split and subset: no paired comparison")
    if len({r.folds for r in rows}) > 1:
        notes.append("rows were evaluated on different folds; the paired comparison uses shared studies only")
    all_ids = [r for row in rows for r in row.run_ids]
    bid = board_id(subset, split, all_ids)
    args = (tuple(rows), tuple(notes), request.n_boot, request.baseline)
    return Leaderboard(bid, request.experiment, split, subset, data, *args)


def _fmt(value: float | None, digits: int = 3) -> str:
    return "–" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


_QUALITY = (*(f"loss/{k}" for k in PART_NAMES), "accuracy", "balanced_accuracy", "dice_mean")
_REFERENCE = ("reference/prior_score", "reference/oracle_score")
_COST = ("runtime/total_s", "runtime/train_s", "runtime/gpu_s", "gpu/peak_memory_gb")


def to_frame(board: Leaderboard) -> pd.DataFrame:
    """One row per board row, every figure in its own column (the CSV form)."""
    records = []
    for rank, row in enumerate(board.rows, 1):
        paired = {f"paired_{k}": v for k, v in dataclasses.asdict(row.paired).items()} if row.paired else {}
        who = {"rank": rank, "approach": row.approach, "config_hash": row.config_hash}
        folds = {
            "n_folds": len(row.folds),
            "folds": " ".join(map(str, row.folds)),
            "n_studies": row.n_studies,
        }
        score = {"rsna_score": row.score, "rsna_score_std": row.metrics.get("rsna_score_std")}
        ci = {"ci_low": row.ci_low, "ci_high": row.ci_high}
        budget = {"budget": row.budget, "budget_exceeded": row.budget_exceeded}
        metrics = {k: row.metrics.get(k) for k in (*_QUALITY, *_REFERENCE, *_COST)}
        records.append(
            {**who, **folds, **score, **ci, **metrics, **budget, **paired, "run_ids": ";".join(row.run_ids)}
        )
    return pd.DataFrame.from_records(records)


def _display_rows(board: Leaderboard, baseline: str) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the human-readable board (markdown and terminal)."""
    head = "#|approach|config|folds|score [95% CI]".split("|") + list(PART_NAMES)
    head += ["accuracy", "bal. acc.", "dice", f"Δ vs {baseline} [95% CI]", "p", "runtime s/fold", "budget"]
    cells = []
    for rank, row in enumerate(board.rows, 1):
        m, p = row.metrics, row.paired
        state = f"EXCEEDED {row.budget_exceeded}/{len(row.folds)}" if row.budget_exceeded else "ok"
        paired = (
            [f"{p.diff:+.3f} [{p.ci_low:+.3f}, {p.ci_high:+.3f}]", f"{p.p_value:.3f}"] if p else ["–", "–"]
        )
        who = [str(rank), row.approach, row.config_hash, str(len(row.folds))]
        score = f"{_fmt(row.score)} [{_fmt(row.ci_low)}, {_fmt(row.ci_high)}]"
        cost = [_fmt(m.get("runtime/total_s"), 1), f"{row.budget}: {state}"]
        cells.append([*who, score, *[_fmt(m.get(k)) for k in _QUALITY], *paired, *cost])
    return head, cells


def header_lines(board: Leaderboard) -> list[str]:
    """Provenance of the board: experiment, split, subset, data, bootstrap, notes."""
    lines = [
        f"board {board.board_id}: experiment {board.experiment!r}, subset {board.subset}, "
        f"split {board.split_digest[:12]}, data {board.data_digest[:12]}",
        f"score: mean over folds of the official score (lower is better); 95% CI: bootstrap over "
        f"studies within folds, {board.n_boot} resamples; Δ: paired bootstrap on shared studies "
        "(negative = better than the baseline)",
    ]
    if (floor := oracle_floor(board)) is not None:
        lines.append(f"oracle floor {floor:.3f}: the phantom truth's own score, which no approach can beat")
    return lines + [f"note: {n}" for n in board.notes]


def to_markdown(board: Leaderboard) -> str:
    """Render the board as a markdown document (header, table, notes)."""
    head, cells = _display_rows(board, board.baseline)
    lines = [
        f"# Leaderboard {board.board_id}",
        "",
        *[f"- {h}" for h in header_lines(board)],
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    lines += ["| " + " | ".join(c) + " |" for c in cells]
    return "\n".join(lines) + "\n"


def to_text_table(board: Leaderboard, width: int = 260) -> str:
    """Render the board as a rich table (plain text; intervals never wrap)."""
    from rich.console import Console
    from rich.table import Table

    head, cells = _display_rows(board, board.baseline)
    table = Table(title=f"lumbar-bench leaderboard {board.board_id}", caption="\n".join(header_lines(board)))
    for i, name in enumerate(head):
        table.add_column(name, justify="left" if i in (1, 2, 4, 16) else "right", no_wrap=i in (1, 4, 12, 16))
    for c in cells:
        table.add_row(*c)
    console = Console(record=True, width=width, file=io.StringIO())
    console.print(table)
    return console.export_text()


def render(board: Leaderboard, fmt: str) -> str:
    """``table``, ``markdown`` or ``csv`` text of the board."""
    if fmt == "markdown":
        return to_markdown(board)
    if fmt == "csv":
        return to_frame(board).to_csv(index=False)
    if fmt == "table":
        return to_text_table(board)
    raise ConfigError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")


def oracle_floor(board: Leaderboard) -> float | None:
    """Mean phantom oracle score (``reference/oracle_score``) when every row shares the same folds."""
    floors = {(r.folds, r.metrics.get("reference/oracle_score")) for r in board.rows}
    return next(iter(floors))[1] if len(floors) == 1 else None


def figure(board: Leaderboard) -> Any:
    """Score per row with its 95% CI and the oracle floor (the ``leaderboard.png`` artifact)."""
    from lumbar_bench.figures import leaderboard_figure

    rows = board.rows
    names = [
        f"{r.approach} ({r.config_hash[:6]}, {len(r.folds)} fold{'s' * (len(r.folds) > 1)})" for r in rows
    ]
    title = f"{board.experiment} · {board.subset} · split {board.split_digest[:8]}"
    lows, highs = [r.ci_low for r in rows], [r.ci_high for r in rows]
    return leaderboard_figure(names, [r.score for r in rows], lows, highs, title, floor=oracle_floor(board))


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
    """Log the board files to a small ``leaderboard`` run and tag its runs ``leaderboard=<id>``."""
    tags = {
        "kind": "leaderboard",
        "board_id": board.board_id,
        "board.subset": board.subset,
        "board.split_digest": board.split_digest,
        "board.rows": len(board.rows),
    }
    with tracking.tracked_run(uri, board.experiment, f"leaderboard-{board.subset}", tags) as trun:
        for path in paths.values():
            trun.log_artifact(path)
    for run_id in board.run_ids:
        tracking.set_tags(uri, run_id, {"leaderboard": board.board_id})
    return trun.run_id
