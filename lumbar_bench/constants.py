"""Task constants of the RSNA 2024 Lumbar Spine Degenerative Classification challenge.

Every other module takes its condition, level and severity names from here, so the
25-label layout is defined exactly once.
"""

from __future__ import annotations

CONDITIONS: tuple[str, ...] = (
    "spinal_canal_stenosis",
    "left_neural_foraminal_narrowing",
    "right_neural_foraminal_narrowing",
    "left_subarticular_stenosis",
    "right_subarticular_stenosis",
)
LEVELS: tuple[str, ...] = ("l1_l2", "l2_l3", "l3_l4", "l4_l5", "l5_s1")
SEVERITIES: tuple[str, ...] = ("Normal/Mild", "Moderate", "Severe")
#: Submission column names, in severity order.
PROB_COLUMNS: tuple[str, ...] = ("normal_mild", "moderate", "severe")
#: Sample weight of each severity in the official score.
SEVERITY_WEIGHTS: tuple[float, ...] = (1.0, 2.0, 4.0)

#: The 25 label columns of ``train.csv``, condition-major as in the Kaggle file.
LABEL_COLUMNS: tuple[str, ...] = tuple(f"{c}_{lv}" for c in CONDITIONS for lv in LEVELS)

#: Title-case names used in ``train_label_coordinates.csv``.
CONDITION_TITLES: dict[str, str] = {c: c.replace("_", " ").title() for c in CONDITIONS}
TITLE_TO_CONDITION: dict[str, str] = {v: k for k, v in CONDITION_TITLES.items()}
#: ``"L1/L2"`` style names used in ``train_label_coordinates.csv``.
LEVEL_TITLES: dict[str, str] = {lv: lv.upper().replace("_", "/") for lv in LEVELS}
TITLE_TO_LEVEL: dict[str, str] = {v: k for k, v in LEVEL_TITLES.items()}

SERIES_TYPES: tuple[str, ...] = ("Sagittal T1", "Sagittal T2/STIR", "Axial T2")
#: Where radiologists annotate each score group (the original study's per-series accuracy).
GROUP_SERIES: dict[str, str] = {
    "spinal": "Sagittal T2/STIR",
    "foraminal": "Sagittal T1",
    "subarticular": "Axial T2",
}

#: The official score's condition groups: group name -> conditions pooled in it.
SCORE_GROUPS: dict[str, tuple[str, ...]] = {
    "spinal": ("spinal_canal_stenosis",),
    "foraminal": ("left_neural_foraminal_narrowing", "right_neural_foraminal_narrowing"),
    "subarticular": ("left_subarticular_stenosis", "right_subarticular_stenosis"),
}


def row_id(study_id: int | str, label: str) -> str:
    """Kaggle submission ``row_id`` for one study and one ``<condition>_<level>`` label."""
    return f"{study_id}_{label}"


def split_label(label: str) -> tuple[str, str]:
    """Split ``"<condition>_<level>"`` into its condition and level."""
    return label[:-6], label[-5:]


def condition_side(condition: str) -> str:
    """``"left"`` or ``"right"`` for a sided condition (``left_subarticular_stenosis``), else ``""``."""
    return next((side for side in ("left", "right") if condition.startswith(f"{side}_")), "")


def side_free(condition: str) -> str:
    """``condition`` without its ``left_``/``right_`` prefix (unchanged when it has none)."""
    side = condition_side(condition)
    return condition[len(side) + 1 :] if side else condition


def slug(text: str) -> str:
    """Metric-name form of a series description: ``"Sagittal T2/STIR"`` -> ``"sagittal_t2_stir"``."""
    return "".join(ch if ch.isalnum() else "_" for ch in text.lower()).strip("_")


#: The class-frequency approach: the reference every learned approach must beat, never "collapsed".
PRIOR_APPROACH = "prior"
