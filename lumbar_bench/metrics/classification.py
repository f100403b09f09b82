"""Accuracy, balanced accuracy and confusion matrices over the scored label rows."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import balanced_accuracy_score, confusion_matrix


def scored_rows(codes: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flatten ``(studies, 25)`` codes and ``(studies, 25, 3)`` probabilities to scored rows."""
    c = codes.reshape(-1)
    keep = c >= 0
    return c[keep], probs.reshape(-1, probs.shape[-1])[keep]


def classification_metrics(codes: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """``accuracy`` and ``balanced_accuracy`` of the arg-max severity over labelled rows."""
    y, p = scored_rows(codes, probs)
    pred = p.argmax(axis=1)
    return {
        "accuracy": float((pred == y).mean()),
        "balanced_accuracy": float(balanced_accuracy_score(y, pred)),
    }


def severity_confusion(codes: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """3x3 confusion matrix (rows: true severity, columns: arg-max prediction)."""
    y, p = scored_rows(codes, probs)
    return confusion_matrix(y, p.argmax(axis=1), labels=[0, 1, 2])
