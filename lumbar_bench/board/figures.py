"""The board as a picture: each approach's score with its interval, beside the Bayes floor.

Figures are built with :class:`matplotlib.figure.Figure` directly, never pyplot, so
no global backend state is touched.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure


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
