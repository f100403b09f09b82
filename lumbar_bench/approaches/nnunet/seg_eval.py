"""Held-out segmentation metrics: Dice against pseudo-masks and, on the phantom, against truth.

``dice/<series>/<class>`` compares predictions with the pseudo-masks of held-out studies
(the original study's "pseudo Dice", ignore pixels left out). ``truth_dice/<series>/<class>``
compares the same predictions with the phantom's noise-free masks in ``truth/``: the true
anatomy and each lesion zone carrying its true severity.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from lumbar_bench.approaches.nnunet.pseudo_masks import ClassScheme
from lumbar_bench.approaches.nnunet.vertebrae import DISC, VERTEBRA, resize, spider_classes
from lumbar_bench.constants import CONDITIONS, LABEL_COLUMNS, LEVELS, slug
from lumbar_bench.metrics.dice import dice_counts, dice_from_counts, mean_dice

log = logging.getLogger(__name__)


def read_truth_labels(root: Path) -> pd.DataFrame | None:
    """Noise-free severities (train.csv form, int codes) from ``truth/train.csv``, or None."""
    path = Path(root) / "truth" / "train.csv"
    if not path.is_file():
        return None
    from lumbar_bench.data.labels import read_labels

    return read_labels(path)


def truth_label(
    root: Path,
    study_id: int,
    series_id: int,
    instance: int,
    scheme: ClassScheme,
    severities: pd.Series,
    size: int,
) -> np.ndarray | None:
    """Return the true class map of one slice at working size (None if unavailable)."""
    path = Path(root) / "truth" / "masks" / str(study_id) / f"{series_id}.npz"
    if not path.is_file():
        return None
    with np.load(path) as z:
        where = np.flatnonzero(z["instance_numbers"] == instance)
        if not len(where):
            return None
        anat, lesion = z["anatomy"][where[0]], z["lesion"][where[0]]
    classes = spider_classes(anat.astype(np.int64))
    out = np.zeros(anat.shape, dtype=np.uint8)
    if "vertebra" in scheme.anatomy:
        out[classes == VERTEBRA] = scheme.anatomy_index("vertebra")
    if "disc" in scheme.anatomy:
        out[classes == DISC] = scheme.anatomy_index("disc")
    for value in np.unique(lesion[lesion > 0]):
        cond, level = CONDITIONS[(int(value) - 1) // 5], LEVELS[(int(value) - 1) % 5]
        sev = int(severities.get(f"{cond}_{level}", -1))
        if cond in scheme.conditions and sev >= 0:
            out[lesion == value] = scheme.lesion(cond, sev)
    return resize(out[None], size, nearest=True)[0]


@dataclass
class DiceBook:
    """Pooled Dice counts per series type, against pseudo-masks and against truth."""

    schemes: dict[str, ClassScheme]
    pseudo: dict[str, np.ndarray] = field(default_factory=dict)
    truth: dict[str, np.ndarray] = field(default_factory=dict)

    def add(self, desc: str, pred: np.ndarray, label: np.ndarray, truth: np.ndarray | None) -> None:
        """Add one slice's prediction, pseudo-mask and (optional) true mask."""
        scheme = self.schemes[desc]
        n = len(scheme.names)
        c = dice_counts(pred, label, n, ignore=scheme.ignore)
        self.pseudo[desc] = self.pseudo.get(desc, 0) + c
        if truth is not None:
            self.truth[desc] = self.truth.get(desc, 0) + dice_counts(pred, truth, n)

    def metrics(self) -> dict[str, float]:
        """``dice/<series>/<class>``, ``dice_mean`` and the ``truth_dice`` counterparts.

        A class absent from both prediction and reference has NaN Dice; it is left out of
        the dict (MLflow skips NaN, and ``--json`` stays valid JSON) and out of the mean.
        """
        out: dict[str, float] = {}
        for prefix, book in (("dice", self.pseudo), ("truth_dice", self.truth)):
            values = []
            for desc, counts in book.items():
                dice = dice_from_counts(counts)
                for name, d in zip(self.schemes[desc].names[1:], dice[1:], strict=True):
                    if np.isfinite(d):
                        out[f"{prefix}/{slug(desc)}/{name.replace('/', '_')}"] = float(d)
                values += list(dice[1:])
            mean = mean_dice(np.array([np.nan, *values]))
            if np.isfinite(mean):
                out[f"{prefix}_mean"] = mean
        return out


def evaluate_cases(
    book: DiceBook,
    cases: pd.DataFrame,
    load: Callable[[str], tuple[np.ndarray, np.ndarray]],
    predict: dict[str, Callable[[np.ndarray], np.ndarray]],
    root: Path,
    truth_labels: pd.DataFrame | None,
    size: int,
) -> dict[str, tuple]:
    """Predict every case, add it to ``book``; returns ``case_id -> (image, label, prediction)``."""
    out = {}
    for case in cases.itertuples(index=False):
        desc = case.series_type
        if desc not in predict or desc not in book.schemes:
            continue
        image, label = load(case.case_id)
        pred = predict[desc](image).argmax(0).astype(np.uint8)
        truth = None
        if truth_labels is not None and case.study_id in truth_labels.index:
            truth = truth_label(
                root,
                case.study_id,
                case.series_id,
                case.instance_number,
                book.schemes[desc],
                truth_labels.loc[case.study_id, list(LABEL_COLUMNS)],
                size,
            )
        book.add(desc, pred, label, truth)
        out[case.case_id] = (image, label, pred)
    return out
