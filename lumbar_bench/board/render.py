"""How a leaderboard reads: the CSV frame, markdown, the terminal board and the figure.

The terminal board fits :data:`WIDTH` (120) columns with the essentials: rank, approach,
folds×seeds, score [CI], Δ vs the baseline [CI], p, runtime, budget and flags. ``wide``
adds the score parts, accuracies, Dice, the seed spread and the segmentation approaches'
grading blend; markdown and CSV always carry everything.
"""

from __future__ import annotations

import dataclasses
import io
import textwrap
from typing import Any

import numpy as np
import pandas as pd
from rich import box
from rich.console import Console
from rich.table import Table

from lumbar_bench.board.figures import leaderboard_figure
from lumbar_bench.board.rows import BoardRow, Leaderboard
from lumbar_bench.constants import SCORE_GROUPS
from lumbar_bench.core.errors import ConfigError
from lumbar_bench.metrics.score import PART_NAMES

FORMATS = ("table", "markdown", "csv")
WIDTH = 120
_WIDE_WIDTH = 400

_QUALITY = (*(f"loss/{k}" for k in PART_NAMES), "accuracy", "balanced_accuracy", "dice_mean")
_REFERENCE = ("reference/prior_score", "reference/oracle_score", "reference/bayes_floor")
_COST = ("runtime/total_s", "runtime/train_s", "runtime/train_flops", "runtime/gpu_s", "gpu/peak_memory_gb")
_BLEND = tuple(f"grading/blend_{g}" for g in SCORE_GROUPS)
_FALLBACK = "grading/prior_fallback_fraction"


def _fmt(value: float | None, digits: int = 3) -> str:
    return "–" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def _tflop(flops: float | None) -> str:
    """Training work in TFLOP (``s only``: the runs did not count their work)."""
    if flops is None or not np.isfinite(flops):
        return "s only"
    return f"{flops / 1e12:.3g}"


def to_frame(board: Leaderboard) -> pd.DataFrame:
    """One row per board row, every figure in its own column (the CSV form).

    ``seed_std`` is empty (NaN) for a row with fewer than two seeds that ran every fold.
    """
    records = []
    for rank, row in enumerate(board.rows, 1):
        paired = {f"paired_{k}": v for k, v in dataclasses.asdict(row.paired).items()} if row.paired else {}
        who = {"rank": rank, "approach": row.approach, "config_hash": row.config_hash}
        folds = {
            "n_folds": len(row.folds),
            "folds": " ".join(map(str, row.folds)),
            "n_seeds": row.n_seeds,
            "seeds": " ".join(map(str, row.seeds)),
            "n_studies": row.n_studies,
        }
        score = {
            "rsna_score": row.score,
            "rsna_score_std": row.metrics.get("rsna_score_std"),
            "seed_std": row.seed_std,
        }
        ci = {"ci_low": row.ci_low, "ci_high": row.ci_high}
        budget = {"budget": row.budget, "budget_exceeded": row.budget_exceeded}
        metrics = {k: row.metrics.get(k) for k in (*_QUALITY, *_REFERENCE, *_COST, *_BLEND, _FALLBACK)}
        collapse = {"collapsed_to_prior": row.collapsed}
        records.append(
            {
                **who,
                **folds,
                **score,
                **ci,
                **metrics,
                **budget,
                **collapse,
                **paired,
                "run_ids": ";".join(row.run_ids),
            }
        )
    return pd.DataFrame.from_records(records)


def flags(row: BoardRow, budget: bool = True) -> list[str]:
    """Short warnings and facts for a row: collapse onto the prior, budget overruns, grading blend."""
    out, n = [], len(row.run_ids)
    if row.collapsed:
        out.append(f"= prior {row.collapsed}/{n}")
    if budget and row.budget_exceeded:
        out.append(f"OVER BUDGET {row.budget_exceeded}/{n}")
    blends = [row.metrics.get(k) for k in _BLEND]
    if any(b is not None for b in blends):
        out.append("blend " + "/".join(_fmt(b, 2).removeprefix("0") for b in blends))
    if (fallback := row.metrics.get(_FALLBACK)) is not None:
        out.append(f"fallback {fallback:.0%}")
    return out


def _score_cells(row: BoardRow) -> list[str]:
    """``score [CI]``, ``Δ [CI]`` and ``p`` cells."""
    score = f"{_fmt(row.score)} [{_fmt(row.ci_low)}, {_fmt(row.ci_high)}]"
    p = row.paired
    if p is None:
        return [score, "–", "–"]
    return [score, f"{p.diff:+.3f} [{p.ci_low:+.3f}, {p.ci_high:+.3f}]", f"{p.p_value:.3f}"]


def _narrow_rows(board: Leaderboard) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the 120-column board."""
    head = ["#", "approach", "config", "f×s", "score [95% CI]", f"Δ vs {board.baseline} [95% CI]", "p"]
    head += ["s/fold", "budget", "flags"]
    cells = []
    for rank, row in enumerate(board.rows, 1):
        who = [str(rank), row.approach, row.config_hash[:6], f"{len(row.folds)}×{row.n_seeds}"]
        over = f"\nOVER {row.budget_exceeded}/{len(row.run_ids)}" if row.budget_exceeded else ""
        runtime = _fmt(row.metrics.get("runtime/total_s"), 1)
        cells.append([*who, *_score_cells(row), runtime, row.budget + over, "\n".join(flags(row, False))])
    return head, cells


def _wide_rows(board: Leaderboard) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the full board (markdown and ``--wide``)."""
    head = ["#", "approach", "config", "f×s", "score [95% CI]", "seed sd", *PART_NAMES]
    head += ["accuracy", "bal. acc.", "dice", f"Δ vs {board.baseline} [95% CI]", "p"]
    head += [*(f"blend {g}" for g in SCORE_GROUPS), "fallback", "runtime s/fold", "work TFLOP/fold"]
    head += ["budget", "flags"]
    cells = []
    for rank, row in enumerate(board.rows, 1):
        m = row.metrics
        state = f"EXCEEDED {row.budget_exceeded}/{len(row.run_ids)}" if row.budget_exceeded else "ok"
        who = [str(rank), row.approach, row.config_hash, f"{len(row.folds)}×{row.n_seeds}"]
        score, delta, p = _score_cells(row)
        quality = [_fmt(m.get(k)) for k in _QUALITY]
        grading = [_fmt(m.get(k), 2) for k in (*_BLEND, _FALLBACK)]
        cost = [_fmt(m.get("runtime/total_s"), 1), _tflop(m.get("runtime/train_flops"))]
        cost += [f"{row.budget}: {state}", ", ".join(flags(row))]
        cells.append([*who, score, _fmt(row.seed_std), *quality, delta, p, *grading, *cost])
    return head, cells


def header_lines(board: Leaderboard) -> list[str]:
    """Provenance of the board: experiment, split, subset, data, bootstrap, legend, notes."""
    lines = [
        f"board {board.board_id}: experiment {board.experiment!r}, subset {board.subset}, "
        f"split {board.split_digest[:12]}, data {board.data_digest[:12]}",
        "score: mean over seeds of the mean over folds of the official score (lower is better); "
        "f×s: folds × seeds",
        f"95% CI: two-level bootstrap, seeds drawn with replacement then studies within folds "
        f"({board.n_boot} resamples); Δ: paired bootstrap on shared studies, the same study draws for "
        "both approaches and seeds drawn for each (negative = better than the baseline)",
    ]
    if (oracle := oracle_score(board)) is not None:
        lines.append(
            f"oracle score {oracle:.3f} (the Bayes-optimal prediction's realised score on these studies; "
            "the floor in expectation, which a finite sample can beat by chance)"
        )
    if (bayes := shared_metric(board, "reference/bayes_floor")) is not None:
        lines.append(f"Bayes floor {bayes:.3f} (the Bayes-optimal prediction's expected score)")
    if any(flags(r) for r in board.rows):
        lines.append(
            "flags: '= prior k/n': k of n runs predicted the training prior (within 1e-6 on every row); "
            "blend: grading weight on the segmentation per group (spinal/foraminal/subarticular); "
            "fallback: share of rows graded by the prior alone"
        )
    return lines + [f"note: {n}" for n in board.notes]


def to_markdown(board: Leaderboard) -> str:
    """Render the board as a markdown document (header, full table, notes)."""
    head, cells = _wide_rows(board)
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


def to_text_table(board: Leaderboard, width: int = WIDTH, wide: bool = False) -> str:
    """Render the board as plain text: ``width`` columns (intervals never wrap), or every column."""
    head, cells = _wide_rows(board) if wide else _narrow_rows(board)
    table = Table(
        title=f"lumbar-bench leaderboard {board.board_id}",
        box=box.SIMPLE_HEAD,
        collapse_padding=True,
        show_edge=False,
        pad_edge=False,
    )
    left = {"approach", "config", "score [95% CI]", f"Δ vs {board.baseline} [95% CI]", "budget", "flags"}
    for name in head:
        table.add_column(name, justify="left" if name in left else "right", no_wrap=name != "flags")
    for c in cells:
        table.add_row(*c)
    console = Console(record=True, width=_WIDE_WIDTH if wide else width, file=io.StringIO())
    console.print(table)
    caption = [
        textwrap.fill(line, width, subsequent_indent="    ", break_on_hyphens=False)
        for line in header_lines(board)
    ]
    body = "\n".join(line.rstrip() for line in console.export_text().splitlines())
    return body + "\n\n" + "\n".join(caption) + "\n"


def render(board: Leaderboard, fmt: str, wide: bool = False) -> str:
    """``table`` (``wide``: every column), ``markdown`` or ``csv`` text of the board."""
    if fmt == "markdown":
        return to_markdown(board)
    if fmt == "csv":
        return to_frame(board).to_csv(index=False)
    if fmt == "table":
        return to_text_table(board, wide=wide)
    raise ConfigError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")


def shared_metric(board: Leaderboard, key: str) -> float | None:
    """The rows' value of ``key`` when every row shares the same folds and has it; else None."""
    values = {(r.folds, None if (v := r.metrics.get(key)) is None else round(v, 9)) for r in board.rows}
    return next(iter(values))[1] if len(values) == 1 else None


def oracle_score(board: Leaderboard) -> float | None:
    """Mean phantom oracle score (``reference/oracle_score``) when every row shares the same folds."""
    return shared_metric(board, "reference/oracle_score")


def figure(board: Leaderboard) -> Any:
    """Score per row with its 95% CI and the oracle score (the ``leaderboard.png`` artifact)."""
    rows = board.rows
    names = [f"{r.approach} ({r.config_hash[:6]}, {len(r.folds)}×{r.n_seeds})" for r in rows]
    title = f"{board.experiment} · {board.subset} · split {board.split_digest[:8]} · folds×seeds"
    lows, highs = [r.ci_low for r in rows], [r.ci_high for r in rows]
    return leaderboard_figure(names, [r.score for r in rows], lows, highs, title, oracle=oracle_score(board))
