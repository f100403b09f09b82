"""Per-class Dice of label maps, NaN where a class is absent from both (as nnU-Net reports it)."""

from __future__ import annotations

import numpy as np


def dice_counts(pred: np.ndarray, truth: np.ndarray, n_classes: int, ignore: int | None = None) -> np.ndarray:
    """``(n_classes, 3)`` true positives, false positives and false negatives over all pixels.

    Pixels where ``truth == ignore`` are left out of every count.
    """
    pred, truth = np.asarray(pred).ravel(), np.asarray(truth).ravel()
    if pred.shape != truth.shape:
        raise ValueError(f"shapes differ: prediction {pred.shape}, truth {truth.shape}")
    if ignore is not None:
        keep = truth != ignore
        pred, truth = pred[keep], truth[keep]
    pred = pred.astype(np.int64)
    truth = truth.astype(np.int64)
    both = np.bincount(truth[pred == truth], minlength=n_classes)[:n_classes]
    p = np.bincount(pred[(pred >= 0) & (pred < n_classes)], minlength=n_classes)[:n_classes]
    t = np.bincount(truth[(truth >= 0) & (truth < n_classes)], minlength=n_classes)[:n_classes]
    return np.stack([both, p - both, t - both], axis=1).astype(np.float64)


def dice_from_counts(counts: np.ndarray) -> np.ndarray:
    """Dice ``2TP / (2TP + FP + FN)`` per class; NaN where the denominator is 0."""
    tp, fp, fn = counts[:, 0], counts[:, 1], counts[:, 2]
    denom = 2 * tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, 2 * tp / np.where(denom > 0, denom, 1), np.nan)


def dice_per_class(
    pred: np.ndarray, truth: np.ndarray, n_classes: int, ignore: int | None = None
) -> np.ndarray:
    """Per-class Dice of two label maps (any shape), pooled over all pixels; NaN for absent classes."""
    return dice_from_counts(dice_counts(pred, truth, n_classes, ignore))


def mean_dice(values: np.ndarray | list[float], skip_background: bool = True) -> float:
    """Mean of the finite per-class values (background left out by default); NaN if none."""
    arr = np.asarray(values, dtype=np.float64)
    if skip_background:
        arr = arr[1:]
    arr = arr[np.isfinite(arr)]
    return float(arr.mean()) if arr.size else float("nan")
