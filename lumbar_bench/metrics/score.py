"""The official RSNA 2024 Lumbar Spine score, written out by hand.

The 2024 scorer called scikit-learn's ``log_loss``, which then clipped predictions
to ``[1e-15, 1 - 1e-15]`` and renormalised each row. Newer scikit-learn does
neither in the same way, so this module does not delegate to it.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from lumbar_bench.constants import LABEL_COLUMNS, PROB_COLUMNS, SCORE_GROUPS, SEVERITY_WEIGHTS, row_id
from lumbar_bench.core.errors import SubmissionError

log = logging.getLogger(__name__)

EPS = 1e-15
ANY_SEVERE_SCALAR = 1.0
PART_NAMES: tuple[str, ...] = ("spinal", "foraminal", "subarticular", "any_severe_spinal")


@dataclass(frozen=True)
class ScoreResult:
    """The score and its four parts (each a weighted log loss; lower is better).

    A part with no labelled row is NaN and left out of the mean; ``skipped`` names it.
    """

    score: float
    spinal: float
    foraminal: float
    subarticular: float
    any_severe_spinal: float
    skipped: tuple[str, ...] = field(default=())

    def as_dict(self) -> dict[str, float]:
        """``{"score": ..., "spinal": ..., ...}`` in a fixed order."""
        return {"score": self.score, **{p: getattr(self, p) for p in PART_NAMES}}


def submission_matrix(labels: pd.DataFrame, submission: pd.DataFrame) -> np.ndarray:
    """Validate ``submission`` against ``labels`` and return probabilities ``(studies, 25, 3)``.

    Raises SubmissionError on a missing column or row, or a value that is not a finite,
    non-negative number. Rows for blank labels must be present too.
    """
    missing_cols = [c for c in ("row_id", *PROB_COLUMNS) if c not in submission.columns]
    if missing_cols:
        raise SubmissionError(f"submission: missing column(s) {', '.join(missing_cols)}")
    if submission.empty:
        raise SubmissionError("submission: no rows")
    dup = submission["row_id"][submission["row_id"].duplicated()]
    if len(dup):
        raise SubmissionError(
            f"submission: {dup.nunique()} row_id(s) appear more than once, e.g. {dup.iloc[0]!r}"
        )
    sub = submission.set_index("row_id")
    wanted = [row_id(s, lab) for s in labels.index for lab in LABEL_COLUMNS]
    absent = pd.Index(wanted).difference(sub.index)
    if len(absent):
        raise SubmissionError(f"submission: {len(absent)} row(s) missing, e.g. {sorted(absent)[0]!r}")
    values = sub.loc[wanted, list(PROB_COLUMNS)]
    numeric = values.apply(pd.to_numeric, errors="coerce")
    bad = numeric.isna()
    if bad.to_numpy().any():
        rid, col = _first(bad)
        raise SubmissionError(
            f"submission: row {rid!r} column {col!r} is not numeric: {values.at[rid, col]!r}"
        )
    arr = numeric.to_numpy(dtype=np.float64)
    if not np.isfinite(arr).all():
        rid, col = _first(pd.DataFrame(~np.isfinite(arr), index=numeric.index, columns=numeric.columns))
        raise SubmissionError(f"submission: row {rid!r} column {col!r} is not finite")
    if (arr < 0).any():
        rid, col = _first(pd.DataFrame(arr < 0, index=numeric.index, columns=numeric.columns))
        raise SubmissionError(f"submission: row {rid!r} column {col!r} is negative")
    return arr.reshape(len(labels), len(LABEL_COLUMNS), len(PROB_COLUMNS))


def _first(mask: pd.DataFrame) -> tuple[str, str]:
    stacked = mask.stack()
    rid, col = stacked[stacked].index[0]
    return rid, col


def _weighted_log_loss(probs: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
    """Multiclass log loss as 2024 scikit-learn computed it: clip, renormalise, weight."""
    if w.sum() == 0:
        return float("nan")
    p = np.clip(probs, EPS, 1 - EPS)
    p = p / p.sum(axis=1, keepdims=True)
    return float(np.sum(w * -np.log(p[np.arange(len(y)), y])) / np.sum(w))


def score_arrays(codes: np.ndarray, probs: np.ndarray) -> ScoreResult:
    """Score from label codes ``(studies, 25)`` (-1 = blank) and probabilities ``(studies, 25, 3)``."""
    weights = np.where(codes >= 0, np.take(SEVERITY_WEIGHTS, np.clip(codes, 0, 2)), 0.0)
    conditions = np.array([lab[:-6] for lab in LABEL_COLUMNS])
    parts: dict[str, float] = {}
    for group, members in SCORE_GROUPS.items():
        cols = np.isin(conditions, members)
        c, p, w = codes[:, cols].ravel(), probs[:, cols].reshape(-1, 3), weights[:, cols].ravel()
        keep = c >= 0
        parts[group] = _weighted_log_loss(p[keep], c[keep], w[keep])
    parts["any_severe_spinal"] = _any_severe_spinal(
        codes[:, conditions == "spinal_canal_stenosis"],
        probs[:, conditions == "spinal_canal_stenosis", 2],
        weights[:, conditions == "spinal_canal_stenosis"],
    )
    return ScoreResult(score=combine_parts(parts), skipped=_empty(parts), **parts)


def _empty(parts: dict[str, float]) -> tuple[str, ...]:
    return tuple(p for p in PART_NAMES if math.isnan(parts[p]))


def combine_parts(parts: dict[str, float]) -> float:
    """Mean of the four parts (``any_severe_spinal`` times :data:`ANY_SEVERE_SCALAR`).

    A part with no labelled row (NaN, possible on small subsets) is left out of the mean
    (:func:`score` names it in a warning), as the competition's scorer drops unlabelled
    rows; with no part left the score is NaN.
    """
    skipped = _empty(parts)
    scale = {"any_severe_spinal": ANY_SEVERE_SCALAR}
    kept = [scale.get(p, 1.0) * parts[p] for p in PART_NAMES if p not in skipped]
    return float(sum(kept) / len(kept)) if kept else float("nan")


def _any_severe_spinal(codes: np.ndarray, severe: np.ndarray, weights: np.ndarray) -> float:
    """Binary weighted log loss of 'any spinal level is Severe', one term per study.

    Only labelled levels count: the prediction is the max raw ``severe`` over them, the
    target and weight come from them, and a study with no labelled spinal level is left out.
    """
    labelled = codes >= 0
    scored = labelled.any(axis=1)
    target = (codes == 2).any(axis=1)[scored].astype(float)
    w = weights.max(axis=1)[scored]
    p = np.clip(np.where(labelled, severe, -np.inf).max(axis=1)[scored], EPS, 1 - EPS)
    if w.sum() == 0:
        return float("nan")
    losses = -(target * np.log(p) + (1 - target) * np.log(1 - p))
    return float(np.sum(w * losses) / np.sum(w))


def score(labels: pd.DataFrame, submission: pd.DataFrame) -> ScoreResult:
    """Official score of a Kaggle-form ``submission`` against ``labels`` (train.csv codes).

    ``labels`` is indexed by ``study_id`` with the 25 label columns as codes 0/1/2 and -1
    for blank, as :func:`lumbar_bench.data.labels.read_labels` returns them.
    """
    probs = submission_matrix(labels, submission)
    codes = labels[list(LABEL_COLUMNS)].to_numpy(dtype=np.int64)
    result = score_arrays(codes, probs)
    if result.skipped:
        log.warning("score: no labelled rows for %s; left out of the mean", ", ".join(result.skipped))
    return result


def complete_submission(pred: pd.DataFrame, study_ids: list[int], approach: str) -> pd.DataFrame:
    """Check an approach returned every row for ``study_ids`` and order them like labels."""
    wanted = [row_id(s, lab) for s in study_ids for lab in LABEL_COLUMNS]
    have = pred.drop_duplicates("row_id").set_index("row_id")
    missing = pd.Index(wanted).difference(have.index)
    if len(missing):
        raise SubmissionError(f"approach {approach!r} left {len(missing)} rows out, e.g. {missing[0]!r}")
    return have.loc[wanted, list(PROB_COLUMNS)].reset_index()
