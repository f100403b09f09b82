"""How close a dataset's labels and layouts are to the real RSNA training set.

Works on any data in the Kaggle layout (the phantom, or the real CSVs), from ``train.csv``
and ``train_series_descriptions.csv`` alone; the reference figures travel with the package
(``reference``). ``synth`` writes the report into ``phantom.json`` and its summary.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lumbar_bench.constants import LABEL_COLUMNS, LEVEL_TITLES, LEVELS, SERIES_TYPES
from lumbar_bench.data.labels import read_labels, read_series_descriptions
from lumbar_bench.data.phantom import reference
from lumbar_bench.data.phantom.disease import reference_prior


def marginal_tv(observed: np.ndarray) -> float:
    """Mean over the 25 labels of the total-variation distance to the real severity frequencies.

    ``observed`` is ``(studies, 25)`` codes, -1 for blank (left out).
    """
    distances = []
    for j, ref in enumerate(reference_prior()):
        col = observed[:, j][observed[:, j] >= 0]
        if col.size:
            freq = np.bincount(col, minlength=3)[:3] / col.size
            distances.append(0.5 * float(np.abs(freq - ref).sum()))
    return float(np.mean(distances)) if distances else float("nan")


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    both = (x >= 0) & (y >= 0)
    x, y = x[both].astype(np.float64), y[both].astype(np.float64)
    if x.size < 3 or x.std() == 0 or y.std() == 0:
        return 0.0
    return float(np.corrcoef(x, y)[0, 1])


def correlations(observed: np.ndarray) -> dict[str, list[float]]:
    """Pearson correlation on codes per reference pair and level (pairwise-complete)."""
    out = {}
    for name, (cx, cy) in reference.CORRELATION_PAIRS.items():
        out[name] = [
            _pearson(
                observed[:, LABEL_COLUMNS.index(f"{cx}_{lv}")], observed[:, LABEL_COLUMNS.index(f"{cy}_{lv}")]
            )
            for lv in LEVELS
        ]
    return out


def level_correlations(observed: np.ndarray) -> dict[str, list[float]]:
    """Pearson correlation on codes of each condition between neighbouring levels (pairwise-complete)."""
    return {
        c: [
            _pearson(
                observed[:, LABEL_COLUMNS.index(f"{c}_{lo}")], observed[:, LABEL_COLUMNS.index(f"{c}_{hi}")]
            )
            for lo, hi in zip(LEVELS[:-1], LEVELS[1:], strict=True)
        ]
        for c in reference.LEVEL_CORRELATIONS
    }


def _mean_delta(got: dict[str, list[float]], ref: dict[str, tuple[float, ...]]) -> float:
    return float(
        np.mean([abs(g - r) for name, row in ref.items() for g, r in zip(got[name], row, strict=True)])
    )


def correlation_delta(observed: np.ndarray) -> float:
    """Mean absolute difference from the within-level reference table over its 15 correlations."""
    return _mean_delta(correlations(observed), reference.CORRELATIONS)


def level_correlation_delta(observed: np.ndarray) -> float:
    """Mean absolute difference from the neighbouring-level reference table over its 20 correlations."""
    return _mean_delta(level_correlations(observed), reference.LEVEL_CORRELATIONS)


def label_distance(observed: np.ndarray) -> float:
    """One number for how far labels are from the real ones: marginal TV plus both correlation Δs."""
    return marginal_tv(observed) + correlation_delta(observed) + level_correlation_delta(observed)


def blank_rates(observed: np.ndarray) -> dict[str, float]:
    """Studies with a blank, the blank fraction of labels, and per-label blank rates."""
    blank = observed < 0
    out = {
        "studies_with_blank": float(blank.any(axis=1).mean()) if len(blank) else 0.0,
        "label_fraction": float(blank.mean()) if blank.size else 0.0,
    }
    for label in reference.BLANK_LABEL_RATES:
        left = LABEL_COLUMNS.index(f"left_{label}")
        out[label] = float(blank[:, left].mean()) if len(blank) else 0.0
    return out


def layout_rates(series: pd.DataFrame) -> dict[str, float]:
    """Fractions of studies per layout irregularity, from ``study_id, series_description`` rows."""
    counts = pd.crosstab(series["study_id"], series["series_description"])
    n = max(len(counts), 1)
    axial = counts.get("Axial T2", pd.Series(0, index=counts.index))
    t1 = counts.get("Sagittal T1", pd.Series(0, index=counts.index))
    missing = sum((counts.get(t, pd.Series(0, index=counts.index)) == 0) for t in SERIES_TYPES)
    return {
        "two_axial": float((axial == 2).sum() / n),
        "three_or_four_axial": float((axial >= 3).sum() / n),
        "several_axial": float((axial >= 2).sum() / n),
        "two_sagittal_t1": float((t1 >= 2).sum() / n),
        "missing_series": float((missing > 0).sum() / n),
    }


def report(observed: np.ndarray, series: pd.DataFrame) -> dict[str, Any]:
    """The realism report: each figure beside its reference (JSON-ready)."""
    got, between = correlations(observed), level_correlations(observed)
    layout = layout_rates(series)
    blanks = blank_rates(observed)
    several = reference.LAYOUT_RATES["two_axial"] + reference.LAYOUT_RATES["three_or_four_axial"]
    return {
        "studies": int(len(observed)),
        "marginal_tv": marginal_tv(observed),
        "correlation_mean_abs_delta": correlation_delta(observed),
        "correlations": {
            name: {"levels": list(LEVELS), "phantom": got[name], "reference": list(ref)}
            for name, ref in reference.CORRELATIONS.items()
        },
        "level_correlation_mean_abs_delta": level_correlation_delta(observed),
        "level_correlations": {
            c: {"levels": _level_pairs(), "phantom": between[c], "reference": list(ref)}
            for c, ref in reference.LEVEL_CORRELATIONS.items()
        },
        "layout": {
            key: {"phantom": value, "reference": _layout_reference(key, several)}
            for key, value in layout.items()
        },
        "blanks": {
            "studies_with_blank": {
                "phantom": blanks["studies_with_blank"],
                "reference": reference.BLANK_STUDY_RATE,
            },
            "label_fraction": {
                "phantom": blanks["label_fraction"],
                "reference": reference.BLANK_LABEL_FRACTION,
            },
            **{
                label: {"phantom": blanks[label], "reference": rate}
                for label, rate in reference.BLANK_LABEL_RATES.items()
            },
        },
    }


def _level_pairs() -> list[str]:
    """``"l1_l2~l2_l3"``-style names of the neighbouring-level pairs."""
    return [f"{lo}~{hi}" for lo, hi in zip(LEVELS[:-1], LEVELS[1:], strict=True)]


def _layout_reference(key: str, several: float) -> float:
    return several if key == "several_axial" else reference.LAYOUT_RATES[key]


def report_from_files(root: Path) -> dict[str, Any]:
    """The realism report of a dataset in the Kaggle layout (``train.csv`` + series descriptions)."""
    observed = read_labels(root / "train.csv").to_numpy(np.int64)
    return report(observed, read_series_descriptions(root / "train_series_descriptions.csv"))


def describe(rep: dict[str, Any]) -> str:
    """The report as a few lines of text: summary figures, then the correlation table."""
    lay, blanks = rep["layout"], rep["blanks"]
    lines = [
        f"  realism on {rep['studies']} studies (phantom vs real): marginal TV {rep['marginal_tv']:.3f}, "
        f"correlation mean |Δ| {rep['correlation_mean_abs_delta']:.3f} within levels, "
        f"{rep['level_correlation_mean_abs_delta']:.3f} between neighbouring levels",
        "  layouts: " + ", ".join(f"{k} {v['phantom']:.1%} vs {v['reference']:.1%}" for k, v in lay.items()),
        "  blanks: "
        + ", ".join(f"{k} {v['phantom']:.1%} vs {v['reference']:.1%}" for k, v in blanks.items()),
        "  correlation (phantom / real) " + "  ".join(f"{lv:>11}" for lv in LEVELS),
    ]
    for name, row in rep["correlations"].items():
        cells = "  ".join(
            f"{p:+.2f} / {r:.2f}" for p, r in zip(row["phantom"], row["reference"], strict=True)
        )
        lines.append(f"    {name:<26} {cells}")
    pairs = [f"{LEVEL_TITLES[lo]}~{LEVEL_TITLES[hi]}" for lo, hi in zip(LEVELS[:-1], LEVELS[1:], strict=True)]
    lines.append("  neighbouring levels (phantom / real) " + "  ".join(f"{p:>11}" for p in pairs))
    for name, row in rep["level_correlations"].items():
        cells = "  ".join(
            f"{p:+.2f} / {r:.2f}" for p, r in zip(row["phantom"], row["reference"], strict=True)
        )
        lines.append(f"    {name.replace('_', ' '):<34} {cells}")
    return "\n".join(lines)
