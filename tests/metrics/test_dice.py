import numpy as np
import pytest

from lumbar_bench.metrics.dice import dice_counts, dice_per_class, mean_dice


def test_perfect_and_disjoint():
    a = np.array([[0, 1], [2, 2]])
    assert dice_per_class(a, a, 3).tolist() == [1.0, 1.0, 1.0]
    d = dice_per_class(np.array([1, 1, 0, 0]), np.array([0, 0, 1, 1]), 2)
    assert d.tolist() == [0.0, 0.0]


def test_absent_class_is_nan_and_skipped_by_mean():
    d = dice_per_class(np.array([0, 1, 1]), np.array([0, 1, 0]), 4)
    assert d[1] == pytest.approx(2 / 3)
    assert np.isnan(d[2]) and np.isnan(d[3])
    assert mean_dice(d) == pytest.approx(2 / 3)
    assert np.isnan(mean_dice([1.0, np.nan]))


def test_ignore_pixels_are_left_out():
    truth = np.array([1, 1, 9, 9])
    pred = np.array([1, 1, 1, 0])
    assert dice_per_class(pred, truth, 2, ignore=9)[1] == 1.0
    counts = dice_counts(pred, truth, 2, ignore=9)
    assert counts[1].tolist() == [2, 0, 0]


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="shapes differ"):
        dice_per_class(np.zeros(3), np.zeros(4), 2)
