"""Pictures users would rather look at than read: confusion matrices and leaderboards.

Figures are built with :class:`matplotlib.figure.Figure` directly, never pyplot, so
no global backend state is touched.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from lumbar_bench.constants import SEVERITIES


def confusion_figure(matrix: np.ndarray, title: str) -> Figure:
    """Row-normalised 3x3 severity confusion matrix with counts in the cells."""
    fig = Figure(figsize=(4.2, 3.8), dpi=110)
    ax = fig.add_subplot()
    rows = matrix.sum(axis=1, keepdims=True)
    frac = np.divide(matrix, rows, out=np.zeros_like(matrix, dtype=float), where=rows > 0)
    ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    for i in range(3):
        for j in range(3):
            ax.text(
                j,
                i,
                f"{matrix[i, j]}\n{frac[i, j]:.0%}",
                ha="center",
                va="center",
                color="white" if frac[i, j] > 0.5 else "black",
                fontsize=8,
            )
    ax.set_xticks(range(3), SEVERITIES, fontsize=8)
    ax.set_yticks(range(3), SEVERITIES, fontsize=8)
    ax.set_xlabel("predicted (arg-max)")
    ax.set_ylabel("label")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def leaderboard_figure(
    names: Sequence[str],
    means: Sequence[float],
    lows: Sequence[float],
    highs: Sequence[float],
    title: str,
    oracle: float | None = None,
) -> Figure:
    """Horizontal bars of the score per approach with 95% CI whiskers (lower is better).

    ``oracle`` draws the Bayes-optimal prediction's realised score: the floor in
    expectation, which a finite sample can beat by chance.
    """
    fig = Figure(figsize=(6.5, 0.55 * len(names) + 1.4), dpi=110)
    ax = fig.add_subplot()
    y = np.arange(len(names))
    m = np.asarray(means, dtype=float)
    err = np.vstack([m - np.asarray(lows, dtype=float), np.asarray(highs, dtype=float) - m])
    ax.barh(y, m, xerr=np.nan_to_num(err), color="#4c72b0", alpha=0.85, capsize=4)
    if oracle is not None:
        ax.axvline(oracle, color="#c44e52", ls="--", lw=1, label=f"oracle (Bayes) score {oracle:.3f}")
        ax.legend(fontsize=8, loc="lower right")
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.set_xlabel("RSNA score (weighted log loss, lower is better)")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig
