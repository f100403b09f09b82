"""The phantom's Bayes floor: the oracle ``q ∝ w·P``, its expected score, and the realised one.

The floor takes each label's ``P(observed = k)``; the hand-computed cases use a reader who
moves a label one grade with a fixed probability (:func:`_flip`), the phantom's own cases the
threshold reader of ``pathology``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lumbar_bench.cli import main
from lumbar_bench.constants import LABEL_COLUMNS
from lumbar_bench.data.labels import read_labels
from lumbar_bench.data.phantom import disease, floor, pathology
from lumbar_bench.metrics.score import score_arrays, submission_matrix

ROW_PARTS = ("spinal", "foraminal", "subarticular")


NOISE = 0.175


def _flip(e: float) -> np.ndarray:
    """``P(observed | true grade)`` of a reader who moves one grade with probability ``e``."""
    return np.array([[1 - e, e, 0.0], [e / 2, 1 - e, e / 2], [0.0, e, 1 - e]])


def _studies(n: int, seed: int) -> np.ndarray:
    """Latents ``(n, 25)`` from the phantom's own sampler."""
    rng = np.random.default_rng(seed)
    model = disease.joint_model(NOISE)
    return np.array([model.sample(rng).latent for _ in range(n)])


def _p_obs(latent: np.ndarray) -> np.ndarray:
    """The threshold reader's ``P(observed | latent)`` ``(n, 25, 3)``."""
    return pathology.observation_probs(latent, disease.joint_model(NOISE).cuts, NOISE)


def _blanks(codes: np.ndarray, seed: int) -> np.ndarray:
    """A labelled mask with ~3% blanks, including one spinal level of the first study."""
    labelled = np.random.default_rng(seed).random(codes.shape) > 0.03
    labelled[0, LABEL_COLUMNS.index("spinal_canal_stenosis_l4_l5")] = False
    return labelled


# ---------------------------------------------------------------- the oracle, by hand


def test_oracle_is_weight_times_noise_renormalised() -> None:
    # flip 0.1: P(obs | Normal) = (0.9, 0.1, 0), P(obs | Moderate) = (0.05, 0.9, 0.05),
    # P(obs | Severe) = (0, 0.1, 0.9); times w = (1, 2, 4) and renormalised:
    q = pathology.oracle(_flip(0.1))
    assert q[0] == pytest.approx([0.9 / 1.1, 0.2 / 1.1, 0.0])  # (9/11, 2/11, 0)
    assert q[1] == pytest.approx([0.05 / 2.05, 1.8 / 2.05, 0.2 / 2.05])  # (1/41, 36/41, 4/41)
    assert q[2] == pytest.approx([0.0, 0.2 / 3.8, 3.6 / 3.8])  # (0, 1/19, 18/19)
    assert pathology.oracle(np.eye(3)) == pytest.approx(np.eye(3))


def test_oracle_of_the_threshold_reader_by_hand() -> None:
    """A latent on the reader's Moderate cut: read Normal or Moderate with even odds, so the
    oracle is (1, 2, 0) / 3; a latent far below every cut is read Normal for certain."""
    cuts = np.array([[1.0, 2.0]])
    edges = pathology.reader_cuts(cuts, 0.2)[0]
    assert edges == pytest.approx([np.sqrt(1.04), 2 * np.sqrt(1.04)])
    q = pathology.oracle(pathology.observation_probs(np.array([[edges[0]], [-3.0]]), cuts, 0.2))
    assert q[0, 0] == pytest.approx([1 / 3, 2 / 3, 0.0], abs=1e-6) and q[1, 0] == pytest.approx([1, 0, 0])


def test_expected_row_terms_by_hand() -> None:
    q = pathology.oracle(_flip(0.1)[[1]])
    wloss, w = floor.expected_row_terms(q, _flip(0.1)[[1]])
    assert w[0] == pytest.approx(0.05 * 1 + 0.9 * 2 + 0.05 * 4)  # 2.05
    hand = 0.05 * -np.log(1 / 41) + 1.8 * -np.log(36 / 41) + 0.2 * -np.log(4 / 41)
    assert wloss[0] == pytest.approx(hand)
    blank_wloss, blank_w = floor.expected_row_terms(q, _flip(0.1)[[1]], np.array([False]))
    assert blank_wloss[0] == 0.0 and blank_w[0] == 0.0


# ---------------------------------------------------------------- optimality


def test_floor_is_optimal_for_the_row_groups() -> None:
    """No small move of the oracle's rows lowers the expected spinal/foraminal/subarticular loss.

    For these parts (ratios of expectations, computed analytically from the noise model) the
    denominator ``E[Σw]`` does not depend on the prediction, so ``q ∝ w·P`` is the exact optimum.
    The moves: towards each vertex (coordinate directions), towards random points of the
    simplex, and random multiplicative tilts (every tangent direction where ``q > 0``).
    """
    p_obs = _p_obs(_studies(12, seed=4))
    q = pathology.oracle(p_obs)
    best = floor.expected_score(q, p_obs)
    rng = np.random.default_rng(0)
    moves = [(1 - t) * q + t * np.eye(3)[k] for k in range(3) for t in (1e-4, 1e-2)]
    moves += [(1 - t) * q + t * rng.dirichlet(np.ones(3), q.shape[:2]) for t in (1e-4, 1e-3, 1e-2)] * 20
    for _ in range(60):
        tilted = q * np.exp(1e-2 * rng.standard_normal(q.shape))
        moves.append(tilted / tilted.sum(axis=-1, keepdims=True))
    for moved in moves:
        got = floor.expected_score(moved, p_obs)
        for part in ROW_PARTS:
            assert getattr(got, part) >= getattr(best, part) - 1e-12
    plain = floor.expected_score(p_obs, p_obs)  # the first oracle's mistake: P itself
    assert all(getattr(plain, part) > getattr(best, part) for part in ROW_PARTS)


def test_any_severe_part_is_not_exactly_minimised_by_the_oracle() -> None:
    """Honest caveat: ``any_severe_spinal`` is optimal at ``E[w·target] / E[w]``, not at ``max q_severe``.

    One Severe spinal level, others Normal (noise 0.1): the target is 1 only when that level
    stays Severe (0.9, weight 4), else it reads Moderate (weight 2), so the optimum is
    3.6 / 3.8 = 18/19, the oracle's own ``q_severe``. One Moderate level, others Normal: the
    target is 1 with 0.05 (weight 4); weight 2 with 0.9; with 0.05 it reads Normal, weight 2 if
    another level drifted to Moderate (1 - 0.9**4) else 1. So E[w] = 0.2 + 1.8 + 0.05 * 1.3439
    and the optimum 0.2 / E[w] = 0.09675 is a touch below the oracle's 4/41 = 0.09756.
    """
    reader = _flip(0.1)
    severe_one = reader[np.array([[2, 0, 0, 0, 0]])]
    p_oracle = pathology.oracle(severe_one)[..., 2]
    assert p_oracle.max() == pytest.approx(18 / 19)
    wloss, w = floor.expected_any_severe_terms(p_oracle, severe_one)
    assert w[0] == pytest.approx(3.8) and wloss[0] == pytest.approx(
        -3.6 * np.log(18 / 19) - 0.2 * np.log(1 / 19)
    )

    moderate_one = reader[np.array([[0, 0, 1, 0, 0]])]
    p_oracle = pathology.oracle(moderate_one)[..., 2]
    assert p_oracle.max() == pytest.approx(4 / 41)
    at_oracle, w = floor.expected_any_severe_terms(p_oracle, moderate_one)
    e_w = 0.2 + 1.8 + 0.05 * (2 * (1 - 0.9**4) + 0.9**4)
    assert w[0] == pytest.approx(e_w)
    best = np.full((1, 5), 0.2 / e_w)
    at_best, _ = floor.expected_any_severe_terms(best, moderate_one)
    assert at_best[0] < at_oracle[0] < at_best[0] + 1e-4 * w[0]  # beaten, by a hair


# ---------------------------------------------------------------- expected vs realised


def test_expected_floor_matches_the_mean_realised_oracle_score() -> None:
    """The mean realised score over many noise draws is the expected floor, and draws fall below it.

    80 studies read by the phantom's threshold reader, 400 draws with a fixed rng. The gap
    allowed, 0.005, is about 4 Monte Carlo standard errors (spread ~0.025 / sqrt(400) = 0.0012)
    plus the O(1/rows) bias between the ratio of expectations and the expected ratio.
    """
    latent, cuts = _studies(80, seed=1), disease.joint_model(NOISE).cuts
    labelled = _blanks(latent, seed=2)
    p_obs = _p_obs(latent)
    expected = floor.expected_floor(p_obs, labelled)
    q = pathology.oracle(p_obs)
    rng = np.random.default_rng(3)
    draws = []
    for _ in range(400):
        observed = np.where(labelled, pathology.observe(rng, latent, cuts, NOISE), -1)
        draws.append(score_arrays(observed, q))
    realised = np.array([d.score for d in draws])
    assert realised.mean() == pytest.approx(expected.score, abs=0.005)
    for part in (*ROW_PARTS, "any_severe_spinal"):
        assert np.mean([getattr(d, part) for d in draws]) == pytest.approx(getattr(expected, part), abs=0.015)
    below = (realised < expected.score).mean()
    assert 0.2 < below < 0.8  # "cannot be beaten" was wrong: one draw lands below the floor often


# ---------------------------------------------------------------- the phantom and the CLI


def test_phantom_records_floor_and_realised_score(tiny_phantom: Path) -> None:
    meta = json.loads((tiny_phantom / "phantom.json").read_text())
    truth = read_labels(tiny_phantom / "truth" / "train.csv")
    labels = read_labels(tiny_phantom / "train.csv")
    labelled = labels.loc[truth.index, list(LABEL_COLUMNS)].to_numpy() >= 0
    p_obs = submission_matrix(truth, pd.read_csv(tiny_phantom / "truth" / floor.OBSERVATION_PROBS))
    expected = floor.expected_floor(p_obs, labelled).score
    assert meta["bayes_floor"] == pytest.approx(expected)
    assert floor.phantom_floor(tiny_phantom, labels) == pytest.approx(expected)
    assert 0.0 < meta["bayes_floor"] < np.log(3) and 0.0 < meta["oracle_score"] < np.log(3)
    oracle = submission_matrix(truth, pd.read_csv(tiny_phantom / "truth" / "oracle_submission.csv"))
    assert oracle == pytest.approx(pathology.oracle(p_obs))
    codes = truth[list(LABEL_COLUMNS)].to_numpy(np.int64)  # the reader errs most where the truth is Moderate
    assert p_obs[codes == 0, 0].mean() > p_obs[codes == 1, 1].mean()
    assert floor.phantom_floor(tiny_phantom.parent, labels) is None  # not a phantom


def test_synth_prints_both_numbers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--no-progress", "synth", str(tmp_path / "p"), "--studies", "2", "--size", "32"]) == 0
    out = capsys.readouterr().out
    meta = json.loads((tmp_path / "p" / "phantom.json").read_text())
    assert f"Bayes floor {meta['bayes_floor']:.4f}" in out
    assert f"oracle score {meta['oracle_score']:.4f} (realised" in out
    assert "cannot be beaten" not in out and "floor under the label noise" not in out
