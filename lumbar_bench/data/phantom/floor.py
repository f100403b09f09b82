"""The Bayes floor of the phantom: the expected official score of the Bayes-optimal oracle.

The phantom knows each label's latent degeneration, and the reader's observed label is drawn
from ``P(observed | latent)`` (``pathology.observation_probs``) independently per label (one
reader error per label), with blanks picked independently of the reader. Given those
probabilities and which labels are blank, the official score of any submission is therefore a
random variable whose expectation can be computed exactly. Every function here takes the
probabilities ``p_obs`` ``(studies, labels, 3)`` rather than the model, so it holds for any
reader model whose errors are independent per label:

- **Row groups** (``spinal``, ``foraminal``, ``subarticular``): for each group the part is
  ``E[Σ w·loss] / E[Σ w]``, a *ratio of expectations* (not the expectation of the ratio that
  one draw realises; the two agree up to ``O(1/rows)``). Per labelled row:
  ``E[w·loss] = Σ_k P_k w_k (-log q̂_k)`` and ``E[w] = Σ_k P_k w_k``, where ``q̂`` is the
  submitted row clipped to ``[1e-15, 1 - 1e-15]`` and renormalised, as the scorer does. The
  denominator does not depend on the submission, so ``q_k ∝ w_k P_k`` (``pathology.oracle``)
  minimises every row group: it is the Bayes-optimal prediction.
- **any_severe_spinal**: also a ratio of expectations over studies. Per study the observed
  grades of its labelled spinal levels are enumerated jointly (at most ``3**5 = 243``
  combinations, exact because the reader's errors are independent per label), giving the
  target (any observed Severe) and the weight (the largest observed level weight) of each
  combination. The prediction, the largest submitted ``severe`` value over the labelled spinal
  levels (raw, clipped), is fixed by the submission. This part is *not* exactly minimised by
  ``q ∝ wP``: its per-study optimum is ``E[w·target] / E[w]``, which the oracle's largest
  ``severe`` matches only in simple cases (one diseased level); the gap is small.

:func:`expected_floor` is the expected score of the oracle, the "Bayes floor"; a single draw
of the reader (the phantom's ``train.csv``) scores the oracle a little above or below it.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from lumbar_bench.constants import LABEL_COLUMNS, LEVELS, SCORE_GROUPS, SEVERITY_WEIGHTS
from lumbar_bench.data.phantom import pathology
from lumbar_bench.metrics.score import ANY_SEVERE_SCALAR, EPS, PART_NAMES, submission_matrix

#: The reader's ``P(observed | latent)`` per training label, in submission form, under ``truth/``.
OBSERVATION_PROBS = "observation_probs.csv"

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


def _labelled_mask(like: np.ndarray, labelled: np.ndarray | None) -> np.ndarray:
    """``labelled`` as a boolean array shaped like ``like`` (all True when None)."""
    return np.ones(like.shape, bool) if labelled is None else np.asarray(labelled, bool)


def expected_row_terms(
    probs: np.ndarray, p_obs: np.ndarray, labelled: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per-row ``E[w·loss]`` and ``E[w]`` over the reader, each shaped like ``p_obs[..., 0]``.

    ``probs`` and ``p_obs`` (``P(observed = k)`` per row) are ``(..., 3)``; blank (not
    ``labelled``) rows contribute zero to both.
    """
    weighted = np.asarray(p_obs, dtype=np.float64) * _WEIGHTS  # P_k w_k
    keep = _labelled_mask(weighted[..., 0], labelled)
    wloss = np.sum(weighted * -np.log(_renormalised(probs)), axis=-1)
    return np.where(keep, wloss, 0.0), np.where(keep, weighted.sum(axis=-1), 0.0)


def expected_any_severe_terms(
    severe: np.ndarray, p_obs: np.ndarray, labelled: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per-study ``E[w·loss]`` and ``E[w]`` of ``any_severe_spinal``, by exact enumeration.

    ``severe`` is ``(studies, 5)``, the submitted raw ``severe`` values of the spinal levels;
    ``p_obs`` ``(studies, 5, 3)`` their ``P(observed = k)``. A study with no labelled level
    contributes zero to both.
    """
    p_obs = np.asarray(p_obs, dtype=np.float64)
    keep = _labelled_mask(p_obs[..., 0], labelled)
    p_obs = np.where(keep[..., None], p_obs, [1.0, 0.0, 0.0])
    levels = np.arange(p_obs.shape[1])
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


def expected_score(probs: np.ndarray, p_obs: np.ndarray, labelled: np.ndarray | None = None) -> ExpectedScore:
    """Expected official score of ``probs`` ``(studies, 25, 3)`` given ``p_obs`` of the same shape.

    ``p_obs`` is each label's ``P(observed = k)``; ``labelled`` ``(studies, 25)`` marks the
    non-blank labels (default: all). Parts are ratios of expectations (see the module
    docstring); a part with no labelled row is NaN and left out of the mean, as the scorer does.
    """
    p_obs = np.asarray(p_obs, dtype=np.float64)
    keep = _labelled_mask(p_obs[..., 0], labelled)
    probs = np.asarray(probs, dtype=np.float64)
    wloss, w = expected_row_terms(probs, p_obs, keep)
    parts = {
        group: _ratio(wloss[:, np.isin(_CONDITION_OF, members)], w[:, np.isin(_CONDITION_OF, members)])
        for group, members in SCORE_GROUPS.items()
    }
    parts["any_severe_spinal"] = _ratio(
        *expected_any_severe_terms(probs[:, _SPINAL, 2], p_obs[:, _SPINAL], keep[:, _SPINAL])
    )
    scale = {"any_severe_spinal": ANY_SEVERE_SCALAR}
    kept = [scale.get(p, 1.0) * parts[p] for p in PART_NAMES if not math.isnan(parts[p])]
    return ExpectedScore(score=float(sum(kept) / len(kept)) if kept else float("nan"), **parts)


def expected_floor(p_obs: np.ndarray, labelled: np.ndarray | None = None) -> ExpectedScore:
    """The Bayes floor: the expected score of the oracle ``q ∝ w·P(observed)``.

    ``p_obs`` is ``(studies, 25, 3)``; ``labelled`` marks the non-blank labels (default: all).
    """
    return expected_score(pathology.oracle(p_obs), p_obs, labelled)


def phantom_floor(root: Path, labels: pd.DataFrame) -> float | None:
    """Bayes floor of the studies in ``labels`` (codes, -1 = blank) of the phantom at ``root``.

    Reads the reader's probabilities from ``root/truth/observation_probs.csv``; None when it
    is missing (not a phantom, or one written before the reader model).
    """
    path = Path(root) / "truth" / OBSERVATION_PROBS
    if not path.is_file():
        return None
    p_obs = submission_matrix(labels, pd.read_csv(path, dtype={"row_id": str}))
    codes = labels[list(LABEL_COLUMNS)].to_numpy(np.int64)
    return expected_floor(p_obs, codes >= 0).score
