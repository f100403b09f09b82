"""Bootstrap statistics of the official score over seeds and studies, vectorised.

Each part of the official score is a weighted mean ``Σ num / Σ den`` over studies, so
one bootstrap resample is a matrix product of resample counts with per-study
numerators and denominators (:func:`study_parts`). A thousand resamples of a
2,000-study fold cost one ``(1000, 2000) @ (2000, 4)`` product per seed.

The statistic is the number a leaderboard shows: the mean over seeds of the mean
over folds of each fold's score (with every seed on every fold; where a seed lacks a
fold, each fold's score is the mean over the seeds that ran it, see :func:`seed_mean`).
Intervals are 95% percentile intervals of a two-level bootstrap: seeds are drawn with
replacement, then studies within each fold, and the same study draw applies to every
seed (a study is one sampling unit, scored once per seed). With one seed the seed
level is the identity, so the interval is the studies-only one.

The paired comparison scores both approaches on the studies both evaluated, with the
SAME study draws for both (that is the pairing); seeds are drawn independently per
approach, as seed ``i`` of one approach has nothing to do with seed ``i`` of another.
Its two-sided p-value is ``(1 + #{|d* - d| >= |d|}) / (B + 1)``, from the bootstrap
distribution of the difference centred on the observed difference ``d``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from lumbar_bench.constants import LABEL_COLUMNS, SCORE_GROUPS, SEVERITY_WEIGHTS
from lumbar_bench.metrics.score import ANY_SEVERE_SCALAR, PART_NAMES, score_arrays, submission_matrix

_SPINAL = np.array([lab.startswith("spinal_canal_stenosis") for lab in LABEL_COLUMNS])


@dataclass(frozen=True)
class Evidence:
    """Per-study numerators and denominators of the four score parts, with folds, ids and seeds.

    One row per (seed, study): with several seeds a study appears once per seed.
    ``seeds`` is None for evidence of one seed (every row seed 0).
    """

    study_ids: np.ndarray
    folds: np.ndarray
    num: np.ndarray
    den: np.ndarray
    seeds: np.ndarray | None = None

    @property
    def seed_of(self) -> np.ndarray:
        """The seed of every row (zeros when ``seeds`` is None)."""
        return np.zeros(len(self.study_ids), dtype=np.int64) if self.seeds is None else self.seeds

    @property
    def n_seeds(self) -> int:
        """How many distinct seeds the rows come from."""
        return len(np.unique(self.seed_of))

    def take(self, ids: np.ndarray) -> Evidence:
        """Return the rows, of every seed, whose study is in ``ids``."""
        keep = np.isin(self.study_ids, ids)
        seeds = None if self.seeds is None else self.seeds[keep]
        return Evidence(self.study_ids[keep], self.folds[keep], self.num[keep], self.den[keep], seeds)


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


def run_evidence(labels: pd.DataFrame, predictions: pd.DataFrame, fold: int = 0, seed: int = 0) -> Evidence:
    """The :class:`Evidence` of one run: its held-out labels and predictions, on one fold and seed."""
    codes = labels[list(LABEL_COLUMNS)].to_numpy(dtype=np.int64)
    num, den = study_parts(codes, submission_matrix(labels, predictions))
    n = len(labels)
    ids = np.asarray(labels.index, dtype=np.int64)
    return Evidence(ids, np.full(n, fold), num, den, np.full(n, seed))


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


def resample_seeds(n_seeds: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Bootstrap counts ``(n_boot, n_seeds)``: seeds drawn with replacement (all ones for one seed)."""
    return rng.multinomial(n_seeds, np.full(n_seeds, 1 / n_seeds), size=n_boot).astype(float)


def studies_of(ev: Evidence) -> tuple[np.ndarray, np.ndarray]:
    """The distinct study ids of ``ev`` (sorted) and the fold of each."""
    ids, first = np.unique(ev.study_ids, return_index=True)
    return ids, ev.folds[first]


def seed_fold_scores(ev: Evidence, ids: np.ndarray, study_w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scores ``(B, seeds, folds)`` of each seed on each fold under study weights ``(B, len(ids))``.

    ``ids`` are sorted study ids covering ``ev`` (:func:`studies_of`). Also returns which
    (seed, fold) cells were run ``(seeds, folds)``; cells not run are NaN.
    """
    col = np.searchsorted(ids, ev.study_ids)
    seeds, folds = np.unique(ev.seed_of), np.unique(ev.folds)
    grid = np.full((len(study_w), len(seeds), len(folds)), np.nan)
    ran = np.zeros((len(seeds), len(folds)), dtype=bool)
    for i, s in enumerate(seeds):
        for j, f in enumerate(folds):
            rows = (ev.seed_of == s) & (ev.folds == f)
            if rows.any():
                w = study_w[:, col[rows]]
                with np.errstate(invalid="ignore", divide="ignore"):
                    grid[:, i, j] = _combine((w @ ev.num[rows]) / (w @ ev.den[rows]))
                ran[i, j] = True
    return grid, ran


def seed_mean(grid: np.ndarray, ran: np.ndarray, seed_counts: np.ndarray) -> np.ndarray:
    """Mean over folds of each fold's mean over the (drawn) seeds that ran it, per resample.

    ``seed_counts`` ``(B, seeds)`` weights the seeds; with every seed on every fold this is
    the mean over seeds of each seed's fold-mean score. A resample that drew no seed of
    some fold is NaN (left out of the percentiles).
    """
    w = seed_counts[:, :, None] * ran[None]
    with np.errstate(invalid="ignore", divide="ignore"):
        per_fold = (w * np.where(ran, grid, 0.0)).sum(axis=1) / w.sum(axis=1)
    return per_fold.mean(axis=1)


def point_estimate(ev: Evidence) -> float:
    """The statistic on the evidence as it is: mean over seeds of the fold-mean score."""
    ids, _ = studies_of(ev)
    grid, ran = seed_fold_scores(ev, ids, np.ones((1, len(ids))))
    return float(seed_mean(grid, ran, np.ones((1, ran.shape[0])))[0])


def bootstrap_distribution(ev: Evidence, n_boot: int, seed: int, *, seeds: bool = True) -> np.ndarray:
    """``n_boot`` resampled statistics: seeds (unless ``seeds`` is False) then studies within folds."""
    ids, folds = studies_of(ev)
    grid, ran = seed_fold_scores(ev, ids, resample_weights(folds, n_boot, seed))
    k = ran.shape[0]
    counts = resample_seeds(k, n_boot, np.random.default_rng([seed, 1])) if seeds else np.ones((n_boot, k))
    return seed_mean(grid, ran, counts)


def bootstrap_ci(ev: Evidence, n_boot: int, seed: int, *, seeds: bool = True) -> tuple[float, float]:
    """95% percentile interval of the statistic; two-level unless ``seeds`` is False (studies only)."""
    low, high = np.nanpercentile(bootstrap_distribution(ev, n_boot, seed, seeds=seeds), [2.5, 97.5])
    return float(low), float(high)


def paired_bootstrap(ev: Evidence, base: Evidence, baseline: str, n_boot: int, seed: int) -> Paired | None:
    """Paired two-level bootstrap of the score difference on the studies both evaluated.

    Both approaches get the same study draws; each draws its own seeds.
    """
    shared = np.intersect1d(ev.study_ids, base.study_ids)
    if len(shared) == 0:
        return None
    a, b = ev.take(shared), base.take(shared)
    ids, folds = studies_of(a)
    study_w = np.vstack([np.ones((1, len(ids))), resample_weights(folds, n_boot, seed)])
    stats = []
    for stream, side in enumerate((a, b), 1):
        grid, ran = seed_fold_scores(side, ids, study_w)
        counts = resample_seeds(ran.shape[0], n_boot, np.random.default_rng([seed, stream]))
        stats.append(seed_mean(grid, ran, np.vstack([np.ones((1, ran.shape[0])), counts])))
    diffs = stats[0] - stats[1]
    observed, dist = float(diffs[0]), diffs[1:][np.isfinite(diffs[1:])]
    low, high = np.percentile(dist, [2.5, 97.5])
    p = (1 + np.sum(np.abs(dist - observed) >= abs(observed))) / (len(dist) + 1)
    return Paired(baseline, len(shared), observed, float(low), float(high), float(min(p, 1.0)))
