"""Figures of the real RSNA 2024 training set that the phantom is built to match.

They travel with the package, so nobody needs the real CSV to generate the phantom or to
judge its realism (``realism.report``). Sources: the public ``train.csv``,
``train_label_coordinates.csv`` and ``train_series_descriptions.csv`` (1,975 studies), as
summarised in the project's task reference.
"""

from __future__ import annotations

#: % Normal/Mild, Moderate, Severe of labelled rows, per score group, rows in ``LEVELS`` order.
PRIOR: dict[str, tuple[tuple[float, float, float], ...]] = {
    "spinal": ((95.5, 3.4, 1.1), (89.7, 7.6, 2.7), (82.2, 11.7, 6.2), (75.1, 12.0, 12.9), (96.5, 2.6, 1.0)),
    "foraminal": (
        (96.4, 3.2, 0.4),
        (91.0, 8.6, 0.4),
        (77.0, 20.9, 2.1),
        (61.2, 31.9, 6.9),
        (64.2, 25.8, 10.1),
    ),
    "subarticular": (
        (93.0, 5.6, 1.4),
        (82.7, 13.2, 4.1),
        (67.1, 23.0, 9.9),
        (45.1, 31.6, 23.3),
        (71.4, 20.5, 8.1),
    ),
}

#: Pearson correlation on codes 0/1/2 per level (``LEVELS`` order) for three label pairs.
CORRELATIONS: dict[str, tuple[float, ...]] = {
    "left~right foraminal": (0.19, 0.28, 0.32, 0.38, 0.41),
    "left~right subarticular": (0.39, 0.51, 0.61, 0.57, 0.37),
    "spinal~left subarticular": (0.50, 0.59, 0.62, 0.60, 0.26),
}
#: The condition pair behind each correlation row.
CORRELATION_PAIRS: dict[str, tuple[str, str]] = {
    "left~right foraminal": ("left_neural_foraminal_narrowing", "right_neural_foraminal_narrowing"),
    "left~right subarticular": ("left_subarticular_stenosis", "right_subarticular_stenosis"),
    "spinal~left subarticular": ("spinal_canal_stenosis", "left_subarticular_stenosis"),
}

#: Pearson correlation on codes 0/1/2 of one condition between neighbouring levels: L1/L2~L2/L3,
#: L2/L3~L3/L4, L3/L4~L4/L5 and L4/L5~L5/S1 (``CONDITIONS`` order).
LEVEL_CORRELATIONS: dict[str, tuple[float, ...]] = {
    "spinal_canal_stenosis": (0.37, 0.46, 0.39, 0.19),
    "left_neural_foraminal_narrowing": (0.31, 0.44, 0.46, 0.38),
    "right_neural_foraminal_narrowing": (0.32, 0.39, 0.45, 0.33),
    "left_subarticular_stenosis": (0.45, 0.55, 0.47, 0.33),
    "right_subarticular_stenosis": (0.39, 0.47, 0.47, 0.36),
}

#: Fraction of studies per series layout (the rest, 82.6%, has one series of each type).
LAYOUT_RATES: dict[str, float] = {
    "two_axial": 0.154,
    "three_or_four_axial": 0.014,
    "two_sagittal_t1": 0.004,
    "missing_series": 0.002,
}
#: Fraction of studies with at least one blank label.
BLANK_STUDY_RATE = 0.094
#: Fraction of studies where a label is blank (both sides), for the labels where blanks concentrate.
BLANK_LABEL_RATES: dict[str, float] = {
    "subarticular_stenosis_l1_l2": 0.08,
    "subarticular_stenosis_l2_l3": 0.04,
}
#: Fraction of all labels that are blank.
BLANK_LABEL_FRACTION = 0.012
