"""Bootstrap statistics of the official score over studies, vectorised.

Each part of the official score is a weighted mean ``Σ num / Σ den`` over studies, so
one bootstrap resample is a matrix product of resample counts with per-study
numerators and denominators (:func:`study_parts`). A thousand resamples of a
2,000-study fold cost one ``(1000, 2000) @ (2000, 4)`` product.

Intervals are 95% percentile intervals. Studies are resampled within each fold and
the statistic is the mean over folds of each fold's score, the number a leaderboard
shows. The paired comparison applies the same resamples to both approaches; its
two-sided p-value is ``(1 + #{|d* - d| >= |d|}) / (B + 1)``, from the bootstrap
distribution of the difference centred on the observed difference ``d``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from lumbar_bench.constants import LABEL_COLUMNS, SCORE_GROUPS, SEVERITY_WEIGHTS
from lumbar_bench.metrics.score import ANY_SEVERE_SCALAR, PART_NAMES, score_arrays

_SPINAL = np.array([lab.startswith("spinal_canal_stenosis") for lab in LABEL_COLUMNS])


@dataclass(frozen=True)
class Evidence:
    """Per-study numerators and denominators of the four score parts, with folds and ids."""

    study_ids: np.ndarray
    folds: np.ndarray
    num: np.ndarray
    den: np.ndarray

    def take(self, ids: np.ndarray) -> Evidence:
        """Return the rows of ``ids`` (which must all be present), in that order."""
        pos = pd.Index(self.study_ids).get_indexer(ids)
        return Evidence(self.study_ids[pos], self.folds[pos], self.num[pos], self.den[pos])


@dataclass(frozen=True)
class Paired:
    """Paired bootstrap of ``score(row) - score(baseline)`` on shared studies."""

    baseline: str
    n_studies: int
    diff: float
    ci_low: float
    ci_high: float
    p_value: float


def study_parts(codes: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-study numerators and denominators ``(studies, 4)`` of the score parts.

    Each part of the official score is a weighted mean ``Σ num / Σ den`` over studies,
    so a resample is a weighted sum of these rows. The numerators come from
    :func:`score_arrays` on each study alone, so clipping and renormalising match it.
    """
    weights = np.where(codes >= 0, np.take(SEVERITY_WEIGHTS, np.clip(codes, 0, 2)), 0.0)
    conditions = np.array([lab[:-6] for lab in LABEL_COLUMNS])
    den = np.zeros((len(codes), len(PART_NAMES)))
    for j, part in enumerate(PART_NAMES[:3]):
        den[:, j] = weights[:, np.isin(conditions, SCORE_GROUPS[part])].sum(axis=1)
    den[:, 3] = weights[:, _SPINAL].max(axis=1)
    num = np.zeros_like(den)
    for i in range(len(codes)):
        parts = score_arrays(codes[i : i + 1], probs[i : i + 1]).as_dict()
        num[i] = [parts[p] * den[i, j] if den[i, j] > 0 else 0.0 for j, p in enumerate(PART_NAMES)]
    return num, den


def fold_mean_scores(ev: Evidence, weights: np.ndarray) -> np.ndarray:
    """Mean over folds of the fold scores for each row of study ``weights`` ``(B, studies)``."""
    scores = []
    for fold in np.unique(ev.folds):
        cols = ev.folds == fold
        with np.errstate(invalid="ignore", divide="ignore"):
            parts = (weights[:, cols] @ ev.num[cols]) / (weights[:, cols] @ ev.den[cols])
        scores.append(_combine(parts))
    return np.mean(scores, axis=0)


def _combine(parts: np.ndarray) -> np.ndarray:
    """Score of each row of parts ``(B, 4)``, as :func:`combine_parts`: a part with no weight is left out."""
    scale = np.where(np.array(PART_NAMES) == "any_severe_spinal", ANY_SEVERE_SCALAR, 1.0)
    with np.errstate(invalid="ignore"):
        return np.nanmean(parts * scale, axis=1) if np.isnan(parts).any() else (parts * scale).mean(axis=1)


def resample_weights(folds: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """Bootstrap counts ``(n_boot, studies)``: studies drawn with replacement within each fold."""
    rng = np.random.default_rng(seed)
    out = np.zeros((n_boot, len(folds)))
    for fold in np.unique(folds):
        cols = np.flatnonzero(folds == fold)
        out[:, cols] = rng.multinomial(len(cols), np.full(len(cols), 1 / len(cols)), size=n_boot)
    return out


def bootstrap_ci(ev: Evidence, n_boot: int, seed: int) -> tuple[float, float]:
    """95% percentile interval of the fold-mean score."""
    dist = fold_mean_scores(ev, resample_weights(ev.folds, n_boot, seed))
    low, high = np.nanpercentile(dist, [2.5, 97.5])
    return float(low), float(high)


def paired_bootstrap(ev: Evidence, base: Evidence, baseline: str, n_boot: int, seed: int) -> Paired | None:
    """Paired bootstrap of the score difference on the studies both evaluated."""
    shared = np.intersect1d(ev.study_ids, base.study_ids)
    if len(shared) == 0:
        return None
    a, b = ev.take(shared), base.take(shared)
    ones = np.ones((1, len(shared)))
    observed = float(fold_mean_scores(a, ones)[0] - fold_mean_scores(b, ones)[0])
    w = resample_weights(a.folds, n_boot, seed)
    dist = fold_mean_scores(a, w) - fold_mean_scores(b, w)
    dist = dist[np.isfinite(dist)]
    low, high = np.percentile(dist, [2.5, 97.5])
    p = (1 + np.sum(np.abs(dist - observed) >= abs(observed))) / (len(dist) + 1)
    return Paired(baseline, len(shared), observed, float(low), float(high), float(min(p, 1.0)))
