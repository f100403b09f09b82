"""Narrowing per grade, the reader who labels it, and the oracle submission.

True severities come from the joint disease model (``disease``); the latent that sets a
grade also sets the continuous narrowing drawn in the images (``narrowing``), so "how
narrow" varies inside each grade.

The reader (the radiologist behind ``train.csv``) sees each label's latent with an error of
standard deviation ``reader_noise`` and cuts what they see at their own thresholds, the true
ones scaled by ``√(1 + reader_noise²)`` so that the observed grades keep the true (real)
frequencies. A label therefore moves grade only when its latent lies near a threshold: a
clearly Normal level is read Normal, a borderline one either way (``observation_probs``).

The oracle is the Bayes-optimal prediction under the 1/2/4-weighted log loss given everything
the phantom knows, ``q_k ∝ w_k · P(observed = k | latent)`` (its expected score is the Bayes
floor, ``floor.expected_floor``).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import ndtr

from lumbar_bench.constants import CONDITIONS, LEVELS, SEVERITY_WEIGHTS

#: The reader's error on the latent (in units of its standard deviation) of the default
#: phantom (``PhantomConfig.reader_noise``): 5.1% of the labels are read as another grade, as
#: with the flat 5% label noise it replaces.
DEFAULT_READER_NOISE = 0.175
#: Continuous narrowing range drawn for each grade (Normal/Mild, Moderate, Severe).
NARROWING = ((0.0, 0.28), (0.36, 0.60), (0.62, 0.90))


def narrowing(latent: np.ndarray, codes: np.ndarray, cuts: np.ndarray) -> np.ndarray:
    """Map each latent to its grade's narrowing range by its quantile inside the grade."""
    lo = np.where(codes == 0, -np.inf, np.where(codes == 1, cuts[:, 0], cuts[:, 1]))
    hi = np.where(codes == 0, cuts[:, 0], np.where(codes == 1, cuts[:, 1], np.inf))
    p_lo, p_hi, p = ndtr(lo), ndtr(hi), ndtr(latent)
    q = np.clip((p - p_lo) / np.maximum(p_hi - p_lo, 1e-12), 0.0, 1.0)
    ranges = np.asarray(NARROWING)[codes]
    return ranges[:, 0] + q * (ranges[:, 1] - ranges[:, 0])


def grade(latent: np.ndarray, cuts: np.ndarray) -> np.ndarray:
    """Codes 0/1/2 of latents ``(..., n)`` cut at ``cuts`` ``(n, 2)`` (moderate-or-worse, severe)."""
    return (latent > cuts[:, 0]).astype(np.int64) + (latent > cuts[:, 1])


def reader_cuts(cuts: np.ndarray, reader_noise: float) -> np.ndarray:
    """The reader's thresholds: the true ones scaled so that the observed marginals stay true."""
    return np.asarray(cuts, dtype=np.float64) * math.sqrt(1.0 + reader_noise**2)


def observe(
    rng: np.random.Generator, latent: np.ndarray, cuts: np.ndarray, reader_noise: float
) -> np.ndarray:
    """Observed codes: the latent seen with the reader's error, cut at the reader's thresholds."""
    seen = latent + reader_noise * rng.standard_normal(np.shape(latent))
    return grade(seen, reader_cuts(cuts, reader_noise))


def observation_probs(latent: np.ndarray, cuts: np.ndarray, reader_noise: float) -> np.ndarray:
    """``P(observed = k | latent)``, ``(..., n, 3)``, for latents ``(..., n)`` and true ``cuts``.

    Exact under the reader model; with no reader noise it is the one-hot of the true grade.
    """
    latent = np.asarray(latent, dtype=np.float64)
    if reader_noise == 0:
        return np.eye(3)[grade(latent, cuts)]
    edges = reader_cuts(cuts, reader_noise)
    at_least = ndtr((latent[..., None] - edges) / reader_noise)  # P(>= moderate), P(severe)
    return np.stack([1.0 - at_least[..., 0], at_least[..., 0] - at_least[..., 1], at_least[..., 1]], axis=-1)


def oracle(probs: np.ndarray) -> np.ndarray:
    """Bayes-optimal probabilities ``(..., 3)`` from ``P(observed | truth)``: ``q_k ∝ w_k · P_k``.

    With sample weights ``w = (1, 2, 4)`` from the observed grade, the expected weighted log
    loss ``Σ_k w_k P_k (-log q_k)`` is minimised by this ``q``, not by ``P`` itself.
    """
    weighted = np.asarray(probs, dtype=np.float64) * np.asarray(SEVERITY_WEIGHTS, dtype=np.float64)
    return weighted / weighted.sum(axis=-1, keepdims=True)


def severity_grid(amounts: np.ndarray) -> np.ndarray:
    """``(25,)`` amounts in label order -> ``(5 conditions, 5 levels)``."""
    return np.asarray(amounts, dtype=np.float64).reshape(len(CONDITIONS), len(LEVELS))
