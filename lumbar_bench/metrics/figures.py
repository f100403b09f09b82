"""A run's confusion matrix as a picture (logged beside its metrics as ``confusion_matrix.png``).

Figures are built with :class:`matplotlib.figure.Figure` directly, never pyplot, so no global
backend state is touched.
"""

from __future__ import annotations

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
