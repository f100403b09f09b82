"""Narrowing per grade, label noise and the oracle submission.

True severities come from the joint disease model (``disease``); the latent that sets a
grade also sets the continuous narrowing drawn in the images (``narrowing``), so "how
narrow" varies inside each grade. The observed label
moves one grade with probability ``label_noise``, independently per label. The oracle is the
Bayes-optimal prediction under the 1/2/4-weighted log loss, ``q_k ∝ w_k · P(observed = k | true)``
(its expected score is the Bayes floor, ``floor.expected_floor``).
"""

from __future__ import annotations

from statistics import NormalDist

import numpy as np

from lumbar_bench.constants import CONDITIONS, LEVELS, SEVERITY_WEIGHTS

#: The label noise of the default phantom (``PhantomConfig.label_noise``).
DEFAULT_LABEL_NOISE = 0.05
#: Continuous narrowing range drawn for each grade (Normal/Mild, Moderate, Severe).
NARROWING = ((0.0, 0.28), (0.36, 0.60), (0.62, 0.90))


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


def severity_grid(amounts: np.ndarray) -> np.ndarray:
    """``(25,)`` amounts in label order -> ``(5 conditions, 5 levels)``."""
    return np.asarray(amounts, dtype=np.float64).reshape(len(CONDITIONS), len(LEVELS))
