import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import log_loss

from lumbar_bench.cli import main
from lumbar_bench.constants import LABEL_COLUMNS, PROB_COLUMNS, row_id
from lumbar_bench.core.errors import SubmissionError
from lumbar_bench.metrics.score import EPS, score, score_arrays

SPINAL = [c for c in LABEL_COLUMNS if c.startswith("spinal")]


def labels_frame(codes: dict[int, list[int]]) -> pd.DataFrame:
    return pd.DataFrame.from_dict(codes, orient="index", columns=list(LABEL_COLUMNS)).rename_axis("study_id")


def submission(study_ids, probs: np.ndarray) -> pd.DataFrame:
    rows = [row_id(s, lab) for s in study_ids for lab in LABEL_COLUMNS]
    flat = probs.reshape(-1, 3)
    return pd.DataFrame({"row_id": rows, **{c: flat[:, i] for i, c in enumerate(PROB_COLUMNS)}})


def test_uniform_all_normal_hand_computed():
    labels = labels_frame({1: [0] * 25})
    result = score(labels, submission([1], np.full((25, 3), 1 / 3)))
    assert result.spinal == pytest.approx(math.log(3))
    assert result.foraminal == pytest.approx(math.log(3))
    assert result.subarticular == pytest.approx(math.log(3))
    assert result.any_severe_spinal == pytest.approx(-math.log(2 / 3))
    assert result.score == pytest.approx((3 * math.log(3) - math.log(2 / 3)) / 4)


def test_sample_weights_and_any_severe_hand_computed():
    codes = [0] * 25
    codes[LABEL_COLUMNS.index("spinal_canal_stenosis_l2_l3")] = 1
    codes[LABEL_COLUMNS.index("spinal_canal_stenosis_l3_l4")] = 2
    probs = np.tile([0.8, 0.1, 0.1], (25, 1))
    result = score(labels_frame({7: codes}), submission([7], probs))
    # three Normal rows weight 1, one Moderate weight 2, one Severe weight 4
    expected_spinal = (3 * -math.log(0.8) + 2 * -math.log(0.1) + 4 * -math.log(0.1)) / 9
    assert result.spinal == pytest.approx(expected_spinal)
    # target 1, prediction max(severe) = 0.1, weight max = 4: a single term
    assert result.any_severe_spinal == pytest.approx(-math.log(0.1))
    assert result.foraminal == pytest.approx(-math.log(0.8))


def test_rows_are_renormalised_but_any_severe_uses_raw_values():
    probs = np.tile([0.4, 0.2, 0.2], (25, 1))  # sums to 0.8: renormalised to 0.5/0.25/0.25
    result = score(labels_frame({3: [0] * 25}), submission([3], probs))
    assert result.spinal == pytest.approx(-math.log(0.5))
    assert result.any_severe_spinal == pytest.approx(-math.log(0.8))  # raw 0.2, not 0.25
    probs = np.tile([0.3, 0.3, 0.6], (25, 1))  # renormalised severe 0.5, raw 0.6
    result = score(labels_frame({3: [0] * 25}), submission([3], probs))
    assert result.spinal == pytest.approx(-math.log(0.25))
    assert result.any_severe_spinal == pytest.approx(-math.log(0.4))


def test_values_above_one_are_clipped_before_renormalising():
    probs = np.tile([2.0, 1.0, 1.0], (25, 1))  # each clipped to 1 - 1e-15, then 1/3 each
    result = score(labels_frame({3: [0] * 25}), submission([3], probs))
    assert result.spinal == pytest.approx(math.log(3))
    assert result.any_severe_spinal == pytest.approx(-math.log(EPS), rel=1e-3)


def test_zero_probability_is_clipped_not_infinite():
    codes = [1] * 25
    probs = np.tile([1.0, 0.0, 0.0], (25, 1))
    result = score(labels_frame({5: codes}), submission([5], probs))
    assert result.foraminal == pytest.approx(-math.log(EPS / (1 + 2 * EPS)))
    assert math.isfinite(result.score)


def test_blank_labels_are_not_scored_but_rows_required():
    base = [0] * 25
    blank = list(base)
    blank[LABEL_COLUMNS.index("left_subarticular_stenosis_l1_l2")] = -1
    probs = np.tile([0.6, 0.3, 0.1], (25, 1))
    probs_bad = probs.copy()
    probs_bad[LABEL_COLUMNS.index("left_subarticular_stenosis_l1_l2")] = [0.0, 0.0, 1.0]
    a = score(labels_frame({1: blank}), submission([1], probs))
    b = score(labels_frame({1: blank}), submission([1], probs_bad))
    assert a == b
    sub = submission([1], probs)
    sub = sub[sub.row_id != "1_left_subarticular_stenosis_l1_l2"]
    with pytest.raises(SubmissionError, match="missing"):
        score(labels_frame({1: blank}), sub)


def test_matches_independent_sklearn_pipeline_on_random_data():
    rng = np.random.default_rng(0)
    n = 40
    codes = rng.choice([0, 1, 2, -1], size=(n, 25), p=[0.7, 0.18, 0.1, 0.02])
    probs = rng.dirichlet([1, 1, 1], size=(n, 25)) * rng.uniform(0.5, 2.0, size=(n, 25, 1))
    result = score_arrays(codes, probs)
    weights = np.array([1.0, 2.0, 4.0])
    p = np.clip(probs, EPS, 1 - EPS)
    p = p / p.sum(-1, keepdims=True)
    groups = {"spinal": slice(0, 5), "foraminal": slice(5, 15), "subarticular": slice(15, 25)}
    for name, cols in groups.items():
        y, pp = codes[:, cols].ravel(), p[:, cols].reshape(-1, 3)
        keep = y >= 0
        expected = log_loss(y[keep], pp[keep], sample_weight=weights[y[keep]], labels=[0, 1, 2])
        assert getattr(result, name) == pytest.approx(expected, rel=1e-9)
    sp = codes[:, :5]
    has = (sp >= 0).any(1)
    target = (sp == 2).any(1)[has].astype(int)
    pred = np.clip(np.where(sp >= 0, probs[:, :5, 2], 0).max(1)[has], EPS, 1 - EPS)
    w = np.where(sp >= 0, weights[np.clip(sp, 0, 2)], 0).max(1)[has]
    expected_any = log_loss(target, pred, sample_weight=w, labels=[0, 1])
    assert result.any_severe_spinal == pytest.approx(expected_any, rel=1e-9)


@pytest.mark.parametrize(
    ("value", "message"),
    [("abc", "not numeric"), (float("nan"), "not numeric"), (float("inf"), "not finite"), (-0.1, "negative")],
)
def test_invalid_values_are_refused(value, message):
    sub = submission([1], np.full((25, 3), 1 / 3)).astype({"moderate": object})
    sub.loc[3, "moderate"] = value
    with pytest.raises(SubmissionError, match=message):
        score(labels_frame({1: [0] * 25}), sub)


def test_missing_column_is_refused():
    sub = submission([1], np.full((25, 3), 1 / 3)).drop(columns="severe")
    with pytest.raises(SubmissionError, match="severe"):
        score(labels_frame({1: [0] * 25}), sub)


def _spinal(level: str) -> int:
    return LABEL_COLUMNS.index(f"spinal_canal_stenosis_{level}")


def test_any_severe_ignores_a_blank_spinal_level_hand_computed():
    codes = [0] * 25
    codes[_spinal("l5_s1")] = -1
    probs = np.tile([0.9, 0.05, 0.05], (25, 1))
    probs[_spinal("l5_s1")] = [0.05, 0.05, 0.9]  # a confident Severe on the unlabelled level
    result = score(labels_frame({1: codes}), submission([1], probs))
    # only the four labelled levels: max severe 0.05, target 0, weight 1
    assert result.any_severe_spinal == pytest.approx(-math.log(0.95))
    # the blank row is not scored in the spinal group either
    assert result.spinal == pytest.approx(-math.log(0.9))


def test_any_severe_target_and_weight_come_from_labelled_levels_only():
    codes = [0] * 25
    codes[_spinal("l1_l2")] = 1  # Moderate: weight 2
    codes[_spinal("l4_l5")] = -1
    probs = np.tile([0.7, 0.2, 0.1], (25, 1))
    probs[_spinal("l4_l5")] = [0.0, 0.0, 1.0]
    a = labels_frame({1: codes})
    result = score(a, submission([1], probs))
    assert result.any_severe_spinal == pytest.approx(-math.log(0.9))  # weight 2 / 2 cancels
    # a study with no labelled spinal level is left out of that part
    blank = [0] * 25
    for level in ("l1_l2", "l2_l3", "l3_l4", "l4_l5", "l5_s1"):
        blank[_spinal(level)] = -1
    probs2 = np.tile([0.7, 0.2, 0.1], (50, 1))
    probs2[25 + _spinal("l1_l2")] = [0.0, 0.0, 1.0]
    both = score(labels_frame({1: codes, 2: blank}), submission([1, 2], probs2))
    assert both.any_severe_spinal == pytest.approx(result.any_severe_spinal)


def test_a_group_with_no_labelled_rows_is_left_out_and_named(caplog):
    codes = [0] * 25
    for level in ("l1_l2", "l2_l3", "l3_l4", "l4_l5", "l5_s1"):
        codes[_spinal(level)] = -1
    probs = np.tile([0.8, 0.1, 0.1], (25, 1))
    with caplog.at_level("WARNING"):
        result = score(labels_frame({1: codes}), submission([1], probs))
    assert math.isnan(result.spinal) and math.isnan(result.any_severe_spinal)
    assert result.skipped == ("spinal", "any_severe_spinal")
    assert result.score == pytest.approx(-math.log(0.8))  # mean of foraminal and subarticular
    assert "spinal, any_severe_spinal" in caplog.text


def test_duplicated_row_id_is_refused():
    sub = submission([1], np.full((25, 3), 1 / 3))
    sub = pd.concat([sub, sub.iloc[[4]]], ignore_index=True)
    with pytest.raises(SubmissionError, match="more than once.*spinal_canal_stenosis_l5_s1"):
        score(labels_frame({1: [0] * 25}), sub)


@pytest.mark.parametrize("content", ["", "row_id,normal_mild,moderate,severe\n"])
def test_cli_refuses_an_empty_submission_in_one_line(tmp_path, capsys, content):
    labels = tmp_path / "labels.csv"
    labels_frame({1: [0] * 25}).replace({0: "Normal/Mild"}).to_csv(labels)
    empty = tmp_path / "sub.csv"
    empty.write_text(content)
    assert main(["score", str(labels), str(empty)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(empty) in err
    assert ("empty file" in err) or ("no rows" in err)


def test_cli_refuses_a_duplicated_row_id(tmp_path, capsys):
    labels = tmp_path / "labels.csv"
    labels_frame({1: [0] * 25}).replace({0: "Normal/Mild"}).to_csv(labels)
    sub = submission([1], np.full((25, 3), 1 / 3))
    path = tmp_path / "sub.csv"
    pd.concat([sub, sub.iloc[[0]]]).to_csv(path, index=False)
    assert main(["score", str(labels), str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "more than once" in err and str(path) in err
