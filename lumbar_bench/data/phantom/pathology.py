"""Severity priors, within-study correlation, label noise and the oracle submission.

True severities are drawn per label from the per-condition, per-level frequencies of the
public RSNA ``train.csv`` (see the project reference), through a Gaussian latent with a
study-wide degeneration factor and a per-level factor, so disease clusters in a study and
at a level while every label keeps its marginal prior. The same latent sets the continuous
narrowing drawn in the images, so "how narrow" varies inside each grade. The observed label
moves one grade with probability ``label_noise``, independently per label. The oracle is the
Bayes-optimal prediction under the 1/2/4-weighted log loss, ``q_k ∝ w_k · P(observed = k | true)``
(its expected score is the Bayes floor, ``floor.expected_floor``).
"""

from __future__ import annotations

from statistics import NormalDist

import numpy as np

from lumbar_bench.constants import CONDITIONS, LABEL_COLUMNS, LEVELS, SCORE_GROUPS, SEVERITY_WEIGHTS

#: P(Normal/Mild, Moderate, Severe) per score group, rows in ``LEVELS`` order (reference table).
PRIOR: dict[str, tuple[tuple[float, float, float], ...]] = {
    "spinal": ((95.5, 3.4, 1.1), (89.7, 7.6, 2.7), (82.2, 11.7, 6.2), (75.1, 12.0, 12.9), (96.5, 2.6, 1.0)),
    "foraminal": (
        (96.4, 3.2, 0.4),
        (91.0, 8.6, 0.4),
        (77.0, 20.9, 2.1),
        (61.2, 31.9, 6.9),
        (64.2, 25.8, 10.1),
    ),
    "subarticular": (
        (93.0, 5.6, 1.4),
        (82.7, 13.2, 4.1),
        (67.1, 23.0, 9.9),
        (45.1, 31.6, 23.3),
        (71.4, 20.5, 8.1),
    ),
}
#: Latent weights: study-wide degeneration, shared per level, own noise (squares sum to 1).
W_STUDY, W_LEVEL = 0.55, 0.45
W_OWN = float(np.sqrt(1.0 - W_STUDY**2 - W_LEVEL**2))
#: Continuous narrowing range drawn for each grade (Normal/Mild, Moderate, Severe).
NARROWING = ((0.0, 0.28), (0.36, 0.60), (0.62, 0.90))
#: Blank labels favour subarticular L1/L2 and L2/L3, as in the real data.
BLANK_FAVOURITES = (
    "left_subarticular_stenosis_l1_l2",
    "right_subarticular_stenosis_l1_l2",
    "left_subarticular_stenosis_l2_l3",
    "right_subarticular_stenosis_l2_l3",
)


def prior_table() -> np.ndarray:
    """``(25, 3)`` severity probabilities in ``LABEL_COLUMNS`` order, rows summing to 1."""
    group_of = {c: g for g, members in SCORE_GROUPS.items() for c in members}
    rows = [PRIOR[group_of[c]][i] for c in CONDITIONS for i in range(len(LEVELS))]
    table = np.asarray(rows, dtype=np.float64)
    return table / table.sum(axis=1, keepdims=True)


def _thresholds(prior: np.ndarray) -> np.ndarray:
    """Latent cut points ``(25, 2)``: Moderate-or-worse and Severe."""
    nd = NormalDist()
    at_least_mod = np.clip(prior[:, 1] + prior[:, 2], 1e-9, 1 - 1e-9)
    severe = np.clip(prior[:, 2], 1e-9, 1 - 1e-9)
    return np.array(
        [[nd.inv_cdf(1 - a), nd.inv_cdf(1 - b)] for a, b in zip(at_least_mod, severe, strict=True)]
    )


def sample_severities(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, float]:
    """One study's true codes ``(25,)`` (0/1/2), narrowing amounts ``(25,)`` and degeneration.

    Codes and amounts are in ``LABEL_COLUMNS`` order (condition-major).
    """
    degeneration = float(rng.standard_normal())
    per_level = np.tile(rng.standard_normal(len(LEVELS)), len(CONDITIONS))
    latent = W_STUDY * degeneration + W_LEVEL * per_level + W_OWN * rng.standard_normal(len(LABEL_COLUMNS))
    cuts = _thresholds(prior_table())
    codes = (latent > cuts[:, 0]).astype(np.int64) + (latent > cuts[:, 1])
    return codes, narrowing(latent, codes, cuts), degeneration


def narrowing(latent: np.ndarray, codes: np.ndarray, cuts: np.ndarray) -> np.ndarray:
    """Map each latent to its grade's narrowing range by its quantile inside the grade."""
    cdf = np.vectorize(NormalDist().cdf)
    lo = np.where(codes == 0, -np.inf, np.where(codes == 1, cuts[:, 0], cuts[:, 1]))
    hi = np.where(codes == 0, cuts[:, 0], np.where(codes == 1, cuts[:, 1], np.inf))
    p_lo, p_hi, p = cdf(lo), cdf(hi), cdf(latent)
    q = np.clip((p - p_lo) / np.maximum(p_hi - p_lo, 1e-12), 0.0, 1.0)
    ranges = np.asarray(NARROWING)[codes]
    return ranges[:, 0] + q * (ranges[:, 1] - ranges[:, 0])


def noise_matrix(label_noise: float) -> np.ndarray:
    """``P(observed | true)`` as a ``(3, 3)`` matrix: one grade up or down with ``label_noise``."""
    e = float(label_noise)
    return np.array([[1 - e, e, 0.0], [e / 2, 1 - e, e / 2], [0.0, e, 1 - e]])


def observe(rng: np.random.Generator, codes: np.ndarray, label_noise: float) -> np.ndarray:
    """Noisy observed codes: each label moves to a neighbouring grade with ``label_noise``."""
    flip = rng.random(codes.shape) < label_noise
    step = np.where(codes == 0, 1, np.where(codes == 2, -1, rng.choice([-1, 1], codes.shape)))
    return np.where(flip, codes + step, codes)


def oracle(codes: np.ndarray, label_noise: float) -> np.ndarray:
    """Bayes-optimal probabilities ``(..., 3)`` given the true codes: ``q_k ∝ w_k · P(obs = k | true)``.

    With sample weights ``w = (1, 2, 4)`` from the observed grade, the expected weighted log
    loss ``Σ_k w_k P_k (-log q_k)`` is minimised by this ``q``, not by ``P`` itself.
    """
    weighted = noise_matrix(label_noise) * np.asarray(SEVERITY_WEIGHTS, dtype=np.float64)
    return (weighted / weighted.sum(axis=1, keepdims=True))[np.asarray(codes)]


def blank_labels(rng: np.random.Generator) -> np.ndarray:
    """Pick 1-3 labels (indices into ``LABEL_COLUMNS``) to leave blank."""
    k = int(rng.integers(1, 4))
    favourites = [LABEL_COLUMNS.index(c) for c in BLANK_FAVOURITES]
    picks = [
        int(rng.choice(favourites)) if rng.random() < 0.6 else int(rng.integers(len(LABEL_COLUMNS)))
        for _ in range(k)
    ]
    return np.unique(picks)


def severity_grid(amounts: np.ndarray) -> np.ndarray:
    """``(25,)`` amounts in label order -> ``(5 conditions, 5 levels)``."""
    return np.asarray(amounts, dtype=np.float64).reshape(len(CONDITIONS), len(LEVELS))
