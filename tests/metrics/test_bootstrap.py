"""The bootstrap reuses the official score: its point estimate is ``score`` on the same rows."""

import numpy as np
import pytest

from lumbar_bench.constants import LABEL_COLUMNS
from lumbar_bench.metrics.bootstrap import Evidence, point_estimate, study_parts
from lumbar_bench.metrics.score import score_arrays

SPINAL = [i for i, c in enumerate(LABEL_COLUMNS) if c.startswith("spinal")]


def _random(n: int, seed: int, blank: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    codes = rng.choice([0, 1, 2, -1], size=(n, 25), p=[0.7, 0.15, 0.15 - blank, blank])
    probs = rng.dirichlet([1, 1, 1], size=(n, 25)) * rng.uniform(0.5, 1.5, size=(n, 25, 1))
    return codes, probs


def _point(codes: np.ndarray, probs: np.ndarray) -> float:
    num, den = study_parts(codes, probs)
    ev = Evidence(np.arange(len(codes)), np.zeros(len(codes), dtype=int), num, den)
    return point_estimate(ev)


def test_point_estimate_equals_the_score_with_blank_labels():
    codes, probs = _random(30, 0, blank=0.15)
    codes[3, SPINAL] = -1  # a study with no labelled spinal level
    codes[4, SPINAL[-1]] = -1  # a blank L5/S1 ...
    probs[4, SPINAL[-1]] = [0.0, 0.0, 5.0]  # ... predicted severe
    assert _point(codes, probs) == pytest.approx(score_arrays(codes, probs).score, rel=1e-12)


def test_point_estimate_equals_the_score_when_a_group_is_empty():
    codes, probs = _random(6, 1)
    codes[:, SPINAL] = -1  # spinal and any_severe_spinal have no labelled row
    expected = score_arrays(codes, probs)
    assert expected.skipped == ("spinal", "any_severe_spinal")
    assert _point(codes, probs) == pytest.approx(expected.score, rel=1e-12)
