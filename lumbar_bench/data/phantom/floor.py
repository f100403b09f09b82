"""The Bayes floor of the phantom: the expected official score of the Bayes-optimal oracle.

The phantom knows each label's true grade, and its observed label is drawn from
``pathology.noise_matrix`` independently per label (``pathology.observe`` draws one uniform
and one step direction per label), with blanks picked independently of the noise. Given the
true grades and which labels are blank, the official score of any submission is therefore a
random variable whose expectation can be computed exactly:

- **Row groups** (``spinal``, ``foraminal``, ``subarticular``): for each group the part is
  ``E[Σ w·loss] / E[Σ w]``, a *ratio of expectations* (not the expectation of the ratio that
  one draw realises; the two agree up to ``O(1/rows)``). Per labelled row with true grade
  ``t``: ``E[w·loss] = Σ_k P(k|t) w_k (-log q̂_k)`` and ``E[w] = Σ_k P(k|t) w_k``, where ``q̂``
  is the submitted row clipped to ``[1e-15, 1 - 1e-15]`` and renormalised, as the scorer does.
  The denominator does not depend on the submission, so ``q_k ∝ w_k P(k|t)``
  (``pathology.oracle``) minimises every row group: it is the Bayes-optimal prediction.
- **any_severe_spinal**: also a ratio of expectations over studies. Per study the observed
  grades of its labelled spinal levels are enumerated jointly (at most ``3**5 = 243``
  combinations, exact because the noise is independent per label), giving the target (any
  observed Severe) and the weight (the largest observed level weight) of each combination.
  The prediction, the largest submitted ``severe`` value over the labelled spinal levels
  (raw, clipped), is fixed by the submission. This part is *not* exactly minimised by
  ``q ∝ wP``: its per-study optimum is ``E[w·target] / E[w]``, which the oracle's largest
  ``severe`` matches only in simple cases (one diseased level); the gap is small.

:func:`expected_floor` is the expected score of the oracle, the "Bayes floor"; a single draw
of the noise (the phantom's ``train.csv``) scores the oracle a little above or below it.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from lumbar_bench.constants import LABEL_COLUMNS, LEVELS, SCORE_GROUPS, SEVERITY_WEIGHTS
from lumbar_bench.data.labels import read_labels
from lumbar_bench.data.phantom import pathology
from lumbar_bench.metrics.score import ANY_SEVERE_SCALAR, EPS, PART_NAMES

_WEIGHTS = np.asarray(SEVERITY_WEIGHTS, dtype=np.float64)
_CONDITION_OF = np.array([lab[:-6] for lab in LABEL_COLUMNS])
_SPINAL = _CONDITION_OF == "spinal_canal_stenosis"
#: Every joint observed grade of the 5 spinal levels of a study, ``(243, 5)``.
_SPINAL_COMBOS = np.array(list(itertools.product(range(3), repeat=len(LEVELS))), dtype=np.int64)


@dataclass(frozen=True)
class ExpectedScore:
    """Expected official score and its four parts (ratios of expectations; NaN = no labelled row)."""

    score: float
    spinal: float
    foraminal: float
    subarticular: float
    any_severe_spinal: float

    def as_dict(self) -> dict[str, float]:
        """``{"score": ..., "spinal": ..., ...}`` in the scorer's order."""
        return {"score": self.score, **{p: getattr(self, p) for p in PART_NAMES}}


def _renormalised(probs: np.ndarray) -> np.ndarray:
    """Clip to ``[EPS, 1 - EPS]`` and renormalise each row, as the 2024 scorer did."""
    p = np.clip(np.asarray(probs, dtype=np.float64), EPS, 1 - EPS)
    return p / p.sum(axis=-1, keepdims=True)


def _labelled_mask(true_codes: np.ndarray, labelled: np.ndarray | None) -> np.ndarray:
    """``labelled`` as a boolean array shaped like ``true_codes`` (all True when None)."""
    return np.ones(true_codes.shape, bool) if labelled is None else np.asarray(labelled, bool)


def expected_row_terms(
    probs: np.ndarray, true_codes: np.ndarray, label_noise: float, labelled: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per-row ``E[w·loss]`` and ``E[w]`` over the label noise, each shaped like ``true_codes``.

    ``probs`` is ``(..., 3)``; blank (not ``labelled``) rows contribute zero to both.
    """
    codes = np.asarray(true_codes, dtype=np.int64)
    p_obs = pathology.noise_matrix(label_noise)[codes] * _WEIGHTS  # P(k | t) w_k
    keep = _labelled_mask(codes, labelled)
    wloss = np.sum(p_obs * -np.log(_renormalised(probs)), axis=-1)
    return np.where(keep, wloss, 0.0), np.where(keep, p_obs.sum(axis=-1), 0.0)


def expected_any_severe_terms(
    severe: np.ndarray, true_codes: np.ndarray, label_noise: float, labelled: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per-study ``E[w·loss]`` and ``E[w]`` of ``any_severe_spinal``, by exact enumeration.

    ``severe`` and ``true_codes`` are ``(studies, 5)``: the submitted raw ``severe`` values and
    true grades of the spinal levels. A study with no labelled level contributes zero to both.
    """
    codes = np.asarray(true_codes, dtype=np.int64)
    keep = _labelled_mask(codes, labelled)
    p_obs = np.where(keep[..., None], pathology.noise_matrix(label_noise)[codes], [1.0, 0.0, 0.0])
    levels = np.arange(codes.shape[1])
    prob = np.prod(p_obs[:, levels, _SPINAL_COMBOS], axis=-1)  # (studies, combos)
    on = keep[:, None, :]
    weight = np.where(on, _WEIGHTS[_SPINAL_COMBOS][None], 0.0).max(axis=-1)
    target = (on & (_SPINAL_COMBOS == 2)[None]).any(axis=-1)
    raw = np.where(keep, np.asarray(severe, dtype=np.float64), -np.inf).max(axis=1)
    p = np.clip(np.where(keep.any(axis=1), raw, 0.5), EPS, 1 - EPS)[:, None]
    loss = np.where(target, -np.log(p), -np.log(1 - p))
    return np.sum(prob * weight * loss, axis=1), np.sum(prob * weight, axis=1)


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> float:
    """``Σ numerator / Σ denominator``, NaN when the denominator is zero (no labelled row)."""
    total = float(np.sum(denominator))
    return float(np.sum(numerator)) / total if total > 0 else float("nan")


def expected_score(
    probs: np.ndarray, true_codes: np.ndarray, label_noise: float, labelled: np.ndarray | None = None
) -> ExpectedScore:
    """Expected official score of ``probs`` ``(studies, 25, 3)`` given the true codes ``(studies, 25)``.

    ``labelled`` (same shape as ``true_codes``) marks the non-blank labels (default: all).
    Parts are ratios of expectations (see the module docstring); a part with no labelled row
    is NaN and left out of the mean, as the scorer does.
    """
    codes = np.asarray(true_codes, dtype=np.int64)
    keep = _labelled_mask(codes, labelled)
    probs = np.asarray(probs, dtype=np.float64)
    wloss, w = expected_row_terms(probs, codes, label_noise, keep)
    parts = {
        group: _ratio(wloss[:, np.isin(_CONDITION_OF, members)], w[:, np.isin(_CONDITION_OF, members)])
        for group, members in SCORE_GROUPS.items()
    }
    parts["any_severe_spinal"] = _ratio(
        *expected_any_severe_terms(probs[:, _SPINAL, 2], codes[:, _SPINAL], label_noise, keep[:, _SPINAL])
    )
    scale = {"any_severe_spinal": ANY_SEVERE_SCALAR}
    kept = [scale.get(p, 1.0) * parts[p] for p in PART_NAMES if not math.isnan(parts[p])]
    return ExpectedScore(score=float(sum(kept) / len(kept)) if kept else float("nan"), **parts)


def expected_floor(
    true_codes: np.ndarray, label_noise: float, labelled: np.ndarray | None = None
) -> ExpectedScore:
    """The Bayes floor: the expected score of the oracle ``q ∝ w·P(observed | true)``.

    ``true_codes`` is ``(studies, 25)``; ``labelled`` marks the non-blank labels (default: all).
    """
    codes = np.asarray(true_codes, dtype=np.int64)
    return expected_score(pathology.oracle(codes, label_noise), codes, label_noise, labelled)


def phantom_floor(root: Path, labels: pd.DataFrame) -> float | None:
    """Bayes floor of the studies in ``labels`` (codes, -1 = blank) of the phantom at ``root``.

    Reads the true grades from ``root/truth/train.csv`` and the noise level from
    ``root/phantom.json``; None when either is missing (not a phantom).
    """
    truth_csv, meta = Path(root) / "truth" / "train.csv", Path(root) / "phantom.json"
    if not truth_csv.is_file() or not meta.is_file():
        return None
    noise = json.loads(meta.read_text()).get("label_noise")
    if noise is None:
        return None
    truth = read_labels(truth_csv).loc[labels.index, list(LABEL_COLUMNS)].to_numpy(np.int64)
    codes = labels[list(LABEL_COLUMNS)].to_numpy(np.int64)
    return expected_floor(truth, float(noise), codes >= 0).score
