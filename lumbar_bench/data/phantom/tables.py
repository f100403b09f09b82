"""The CSV tables of the phantom: the RSNA layout (labels, coordinates, series) and the truth.

``truth/`` holds the true grades, the reader's ``P(observed | latent)`` per label
(``observation_probs.csv``, in submission form), the Bayes-optimal oracle's submission and the
hard-case flags beside the RSNA files the approaches see.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from lumbar_bench.constants import LABEL_COLUMNS, PROB_COLUMNS, SEVERITIES, row_id
from lumbar_bench.data.phantom import pathology
from lumbar_bench.data.phantom.floor import OBSERVATION_PROBS
from lumbar_bench.data.phantom.study import HARD_KINDS, StudyResult


def _label_frame(results: list[StudyResult], attr: str) -> pd.DataFrame:
    """``train.csv`` form: study_id + 25 label columns as strings ('' = blank)."""
    names = np.array([*SEVERITIES, ""], dtype=object)
    codes = np.array([getattr(r, attr) for r in results], dtype=np.int64).reshape(
        len(results), len(LABEL_COLUMNS)
    )
    frame = pd.DataFrame(names[np.where(codes < 0, 3, codes)], columns=list(LABEL_COLUMNS))
    frame.insert(0, "study_id", [r.study_id for r in results])
    return frame


def write_tables(out: Path, train: list[StudyResult], test: list[StudyResult]) -> None:
    """Every CSV of the RSNA layout plus the truth tables."""
    _label_frame(train, "observed").to_csv(out / "train.csv", index=False)
    _label_frame(train, "true_codes").to_csv(out / "truth" / "train.csv", index=False)
    coords = [row for r in train for row in r.coordinates]
    pd.DataFrame(
        coords, columns=["study_id", "series_id", "instance_number", "condition", "level", "x", "y"]
    ).to_csv(out / "train_label_coordinates.csv", index=False)
    for part, results in (("train", train), ("test", test)):
        rows = [(r.study_id, sid, desc) for r in results for sid, desc in r.series]
        pd.DataFrame(rows, columns=["study_id", "series_id", "series_description"]).to_csv(
            out / f"{part}_series_descriptions.csv", index=False
        )
    _submission([r.study_id for r in test], np.full((len(test), len(LABEL_COLUMNS), 3), 1 / 3)).to_csv(
        out / "sample_submission.csv", index=False
    )
    ids, probs = [r.study_id for r in train], observation_probs(train)
    _submission(ids, probs).to_csv(out / "truth" / OBSERVATION_PROBS, index=False)
    _submission(ids, pathology.oracle(probs)).to_csv(out / "truth" / "oracle_submission.csv", index=False)
    flags = pd.DataFrame(
        {
            "study_id": [r.study_id for r in train],
            **{k: [int(r.hard == k) for r in train] for k in HARD_KINDS},
        }
    )
    flags.to_csv(out / "truth" / "cases.csv", index=False)


def observation_probs(train: list[StudyResult]) -> np.ndarray:
    """The reader's ``P(observed | latent)`` of every training label, ``(studies, 25, 3)``."""
    return np.array([r.observation_probs for r in train], dtype=np.float64).reshape(
        len(train), len(LABEL_COLUMNS), 3
    )


def _submission(study_ids: list[int], probs: np.ndarray) -> pd.DataFrame:
    """Kaggle submission rows ``(row_id, normal_mild, moderate, severe)`` from ``(n, 25, 3)``."""
    rows = [row_id(s, label) for s in study_ids for label in LABEL_COLUMNS]
    flat = np.asarray(probs, dtype=np.float64).reshape(-1, 3)
    return pd.DataFrame({"row_id": rows, **{c: flat[:, i] for i, c in enumerate(PROB_COLUMNS)}})


__all__ = ["observation_probs", "write_tables"]
