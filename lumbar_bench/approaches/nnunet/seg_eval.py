"""Held-out segmentation metrics: Dice against pseudo-masks and, on the phantom, against truth.

``dice/<series>/<class>`` compares predictions with the pseudo-masks of held-out studies
(the original study's "pseudo Dice", ignore pixels left out). ``truth_dice/<series>/<class>``
compares the same predictions with the phantom's noise-free masks in ``truth/``: the true
anatomy and each lesion zone carrying its true severity.

The same truth judges the training labels themselves: :func:`pseudo_mask_truth_dice` scores
each series' pseudo-masks (what QC is judged against), and :class:`LabelAudit` the labels of
self-refinement before and after the out-of-fold merge.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from lumbar_bench.approaches.nnunet.pseudo_masks import load_case
from lumbar_bench.approaches.nnunet.schemes import ClassScheme, load_schemes
from lumbar_bench.approaches.nnunet.vertebrae import DISC, VERTEBRA, resize, spider_classes
from lumbar_bench.constants import CONDITIONS, LABEL_COLUMNS, LEVELS, slug
from lumbar_bench.data.labels import read_labels
from lumbar_bench.metrics.dice import dice_counts, dice_from_counts, mean_dice

log = logging.getLogger(__name__)


def read_truth_labels(root: Path) -> pd.DataFrame | None:
    """Noise-free severities (train.csv form, int codes) from ``truth/train.csv``, or None."""
    path = Path(root) / "truth" / "train.csv"
    if not path.is_file():
        return None
    return read_labels(path)


def read_truth_masks(truth_dir: Path, study_id: int, series_id: int) -> tuple[np.ndarray, ...] | None:
    """``(instance_numbers, anatomy, lesion)`` of one series from ``truth/masks`` (None if absent)."""
    path = Path(truth_dir) / "masks" / str(study_id) / f"{series_id}.npz"
    if not path.is_file():
        return None
    with np.load(path) as z:
        return z["instance_numbers"], z["anatomy"], z["lesion"]


def truth_classes(
    anat: np.ndarray, lesion: np.ndarray, scheme: ClassScheme, severities: pd.Series, size: int
) -> np.ndarray:
    """The true class map of one slice (SPIDER anatomy + lesion zones) at working size."""
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
    masks = read_truth_masks(Path(root) / "truth", study_id, series_id)
    if masks is None:
        return None
    where = np.flatnonzero(masks[0] == instance)
    if not len(where):
        return None
    return truth_classes(masks[1][where[0]], masks[2][where[0]], scheme, severities, size)


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


def collapse_severity(label: np.ndarray, scheme: ClassScheme) -> np.ndarray:
    """Lesion classes merged into one class per lesion group; ``scheme.ignore`` becomes the last value.

    Values: background, anatomy, one per lesion group, then ignore (``1 + anatomy + groups``).
    """
    n_anat = 1 + len(scheme.anatomy)
    out = np.asarray(label).astype(np.int64)
    lesion = (out >= n_anat) & (out < scheme.ignore)
    out[lesion] = n_anat + (out[lesion] - n_anat) // 3
    out[np.asarray(label) == scheme.ignore] = n_anat + len(scheme.groups)
    return out


def _read_cases(stage_dir: Path) -> pd.DataFrame:
    path = Path(stage_dir) / "cases.csv"
    try:
        return pd.read_csv(path) if path.is_file() else pd.DataFrame()
    except pd.errors.EmptyDataError:
        return pd.DataFrame()


def _series_counts(
    stage_dir: Path, group: pd.DataFrame, masks: tuple, scheme: ClassScheme, severities: pd.Series
) -> np.ndarray | None:
    """Pooled counts of one series' pseudo-masks against truth, severity dropped (None: no slice)."""
    n = 1 + len(scheme.anatomy) + len(scheme.groups)
    counts = None
    for case in group.itertuples(index=False):
        where = np.flatnonzero(masks[0] == case.instance_number)
        if not len(where):
            continue
        _, label = load_case(stage_dir, case.case_id)
        true = truth_classes(masks[1][where[0]], masks[2][where[0]], scheme, severities, label.shape[0])
        c = dice_counts(collapse_severity(true, scheme), collapse_severity(label, scheme), n, ignore=n)
        counts = c if counts is None else counts + c
    return counts


def pseudo_mask_truth_dice(stage_dir: Path, truth_dir: Path) -> pd.DataFrame:
    """Per series: the Dice of its pseudo-masks against the phantom's true zones.

    Columns ``study_id, series_id, series_type, dice``. Each class's Dice is pooled over the
    series' labelled slices; lesion classes are compared per condition with the severity
    dropped (QC judges where a region lies, not the annotated grade), and pixels the
    pseudo-mask marks ``ignore`` are left out. A series' ``dice`` is the mean over its
    foreground classes present in the mask or the truth. Empty without a truth folder.
    """
    columns = ["study_id", "series_id", "series_type", "dice"]
    stage_dir, truth_dir = Path(stage_dir), Path(truth_dir)
    cases = _read_cases(stage_dir)
    if not (truth_dir / "train.csv").is_file() or cases.empty:
        return pd.DataFrame(columns=columns)
    truth = read_labels(truth_dir / "train.csv")
    schemes = load_schemes(stage_dir / "schemes.json")
    rows = []
    for (study, series, desc), group in cases.groupby(["study_id", "series_id", "series_type"]):
        scheme, masks = schemes.get(desc), read_truth_masks(truth_dir, int(study), int(series))
        if scheme is None or masks is None or int(study) not in truth.index:
            continue
        severities = truth.loc[int(study), list(LABEL_COLUMNS)]
        counts = _series_counts(stage_dir, group, masks, scheme, severities)
        if counts is not None:
            dice = mean_dice(dice_from_counts(counts))
            rows.append({"study_id": int(study), "series_id": int(series), "series_type": desc, "dice": dice})
    return pd.DataFrame(rows, columns=columns)


def pseudo_mask_truth_by_type(stage_dir: Path, truth_dir: Path) -> pd.DataFrame:
    """The pseudo-masks' Dice against the phantom's true zones, pooled per series type and class.

    Columns ``series_type, class, tp, fp, fn, dice`` (fp: painted outside the true zone, fn: true
    zone left unpainted); counts as in :func:`pseudo_mask_truth_dice`
    (severity dropped, ``ignore`` pixels left out), pooled over every labelled slice of the
    type. Empty without a truth folder (real data).
    """
    columns = ["series_type", "class", "tp", "fp", "fn", "dice"]
    stage_dir, truth_dir = Path(stage_dir), Path(truth_dir)
    cases = _read_cases(stage_dir)
    if not (truth_dir / "train.csv").is_file() or cases.empty:
        return pd.DataFrame(columns=columns)
    truth, schemes = read_labels(truth_dir / "train.csv"), load_schemes(stage_dir / "schemes.json")
    pooled: dict[str, np.ndarray] = {}
    for (study, series, desc), group in cases.groupby(["study_id", "series_id", "series_type"]):
        scheme, masks = schemes.get(desc), read_truth_masks(truth_dir, int(study), int(series))
        if scheme is None or masks is None or int(study) not in truth.index:
            continue
        counts = _series_counts(stage_dir, group, masks, scheme, truth.loc[int(study), list(LABEL_COLUMNS)])
        if counts is not None:
            pooled[desc] = pooled.get(desc, 0) + counts
    rows = []
    for desc, counts in sorted(pooled.items()):
        names = [*schemes[desc].anatomy, *schemes[desc].groups]
        for name, c, d in zip(names, counts[1:], dice_from_counts(counts)[1:], strict=True):
            # counts were taken with the truth as "prediction": a painted pixel outside truth is its fn
            rows.append({"series_type": desc, "class": name, "tp": c[0], "fp": c[2], "fn": c[1], "dice": d})
    return pd.DataFrame(rows, columns=columns)


def pseudo_mask_truth_metrics(table: pd.DataFrame) -> dict[str, float]:
    """Metrics of a :func:`pseudo_mask_truth_by_type` table: the pseudo-masks' truth Dice.

    ``pseudo_masks/truth_dice`` is the mean over every series type's classes; per series type,
    ``pseudo_masks/truth_dice/<series>`` is its classes' mean and ``.../<series>/<class>`` each
    class's. ``table`` is :func:`pseudo_mask_truth_by_type`'s; a class absent from both masks and truth
    (NaN) is left out. Empty for an empty table.
    """
    out: dict[str, float] = {}
    finite = table[np.isfinite(table["dice"].astype(float))] if len(table) else table
    for desc, group in finite.groupby("series_type"):
        out[f"pseudo_masks/truth_dice/{slug(desc)}"] = float(group["dice"].mean())
        for name, dice in zip(group["class"], group["dice"], strict=True):
            out[f"pseudo_masks/truth_dice/{slug(desc)}/{name}"] = float(dice)
    if len(finite):
        out["pseudo_masks/truth_dice"] = float(finite["dice"].mean())
    return out


@dataclass
class LabelAudit:
    """Training labels before and after self-refinement: truth Dice of each, and how much changed.

    ``before`` is a pseudo-mask and ``after`` the merged label stage 2 trains on; pixels
    either marks ``ignore`` carry no label and are left out.
    """

    schemes: dict[str, ClassScheme]
    before: dict[str, np.ndarray] = field(default_factory=dict)
    after: dict[str, np.ndarray] = field(default_factory=dict)
    changed: int = 0
    labelled: int = 0

    def add(self, desc: str, before: np.ndarray, after: np.ndarray, truth: np.ndarray | None) -> None:
        """Add one slice's labels (and its true class map, when known)."""
        scheme = self.schemes[desc]
        labelled = (before != scheme.ignore) & (after != scheme.ignore)
        self.labelled += int(labelled.sum())
        self.changed += int((labelled & (before != after)).sum())
        if truth is None:
            return
        n = len(scheme.names)
        for book, label in ((self.before, before), (self.after, after)):
            kept = np.where(labelled, label, scheme.ignore)
            book[desc] = book.get(desc, 0) + dice_counts(truth, kept, n, ignore=scheme.ignore)

    def metrics(self) -> dict[str, float]:
        """``refine/labels_changed_fraction`` and ``refine/labels_truth_dice_{before,after}`` (with truth)."""
        out = {"refine/labels_changed_fraction": self.changed / max(self.labelled, 1)}
        for name, book in (("before", self.before), ("after", self.after)):
            values = [d for counts in book.values() for d in dice_from_counts(counts)[1:]]
            mean = mean_dice(np.array([np.nan, *values]))
            if np.isfinite(mean):
                out[f"refine/labels_truth_dice_{name}"] = mean
        return out
