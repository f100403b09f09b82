"""``prior``: class frequencies of the training folds, per condition and level.

The baseline every model must beat. It is also the fallback other approaches use where
they find nothing to look at (:func:`fit_prior`, :func:`prior_submission`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from lumbar_bench.approaches.base import Approach, FitReport
from lumbar_bench.approaches.context import RunContext
from lumbar_bench.constants import LABEL_COLUMNS, PROB_COLUMNS, row_id
from lumbar_bench.data.rsna import RSNAData


@dataclass(frozen=True)
class PriorConfig:
    """Additive (Laplace) smoothing of the class counts."""

    alpha: float = 1.0

    @classmethod
    def for_subset(cls, subset: str) -> PriorConfig:
        """The prior needs no schedule: the same config for every subset."""
        return cls()


def fit_prior(labels: pd.DataFrame, alpha: float = 1.0) -> np.ndarray:
    """Smoothed class frequencies ``(25, 3)`` from train.csv-coded ``labels`` (blanks ignored)."""
    codes = labels[list(LABEL_COLUMNS)].to_numpy(dtype=np.int64)
    counts = np.stack([(codes == k).sum(axis=0) for k in range(3)], axis=1).astype(float) + alpha
    return counts / counts.sum(axis=1, keepdims=True)


def prior_submission(probs: np.ndarray, study_ids: Sequence[int]) -> pd.DataFrame:
    """Submission rows giving every study the per-label distribution ``probs`` ``(25, 3)``."""
    rows = [row_id(s, lab) for s in study_ids for lab in LABEL_COLUMNS]
    values = np.tile(probs, (len(study_ids), 1))
    return pd.DataFrame({"row_id": rows, **{c: values[:, i] for i, c in enumerate(PROB_COLUMNS)}})


class PriorApproach(Approach):
    """Predicts the training folds' class frequencies for every study."""

    name = "prior"
    Config = PriorConfig

    def __init__(self, config: PriorConfig) -> None:
        super().__init__(config)
        self.probs: np.ndarray | None = None

    def fit(self, data: RSNAData, study_ids: Sequence[int], ctx: RunContext) -> FitReport:
        """Count severities per label over ``study_ids``: no network, so no training work (0 FLOPs)."""
        self.probs = fit_prior(data.labels.loc[list(study_ids)], self.config.alpha)
        return FitReport(stage_flops={"prior": 0.0})

    def predict(self, data: RSNAData, study_ids: Sequence[int], ctx: RunContext) -> pd.DataFrame:
        """The same distribution for every study."""
        if self.probs is None:
            raise RuntimeError("prior: predict() before fit()")
        return prior_submission(self.probs, study_ids)

    def save(self, directory: Path) -> None:
        """Write the (25, 3) table as JSON."""
        table = {
            lab: dict(zip(PROB_COLUMNS, map(float, p), strict=True))
            for lab, p in zip(LABEL_COLUMNS, self.probs, strict=True)
        }
        (directory / "prior.json").write_text(json.dumps(table, indent=1))

    @classmethod
    def load(cls, directory: Path, config: PriorConfig) -> PriorApproach:
        """Read the table :meth:`save` wrote."""
        table = json.loads((directory / "prior.json").read_text())
        approach = cls(config)
        approach.probs = np.array([[table[lab][c] for c in PROB_COLUMNS] for lab in LABEL_COLUMNS])
        return approach
