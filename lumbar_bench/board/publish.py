"""A board's outputs: files on disk, a ``leaderboard`` run in MLflow, a shared UI view, a registered model."""

from __future__ import annotations

from pathlib import Path

from lumbar_bench.board.render import figure, to_frame, to_markdown
from lumbar_bench.board.rows import TABLE, TABLE_FIRST, Leaderboard
from lumbar_bench.tracking.client import set_tags, share_runs_view, tracked_run
from lumbar_bench.tracking.models import register_model
from lumbar_bench.tracking.search import RunRecord, get_run


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
