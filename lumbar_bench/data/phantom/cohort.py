"""The phantom's patients as a cohort: labels and series layouts drawn before any image.

Labels come from the joint disease model (``disease``), the label noise and the blank-label
model; layouts from the real rates of layout irregularities (``reference.LAYOUT_RATES``).
Both are drawn per study from their own random streams, so they never depend on how the
images were rendered.

A 200-study cohort is a small sample: the correlation of two rare labels (L1/L2 foraminal
stenosis is 96% Normal/Mild) swings by ±0.15 from one draw to the next. So the labels of
the training part are drawn ``draws`` times and the draw closest to the reference
statistics is kept (``realism.label_distance``); every study of that draw is still an
independent patient of the model. ``phantom.json`` records which draw was kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lumbar_bench.constants import LABEL_COLUMNS
from lumbar_bench.data.phantom import disease, reference
from lumbar_bench.data.phantom.pathology import observe
from lumbar_bench.data.phantom.realism import label_distance

#: Layout kinds: the second axial stack covers other levels (with overlap) or repeats the
#: whole stack with another tilt; ``per_disc`` is three or four stacks, each over its discs.
LAYOUT_KINDS: tuple[str, ...] = (
    "two_axial_ranges",
    "two_axial_repeat",
    "per_disc",
    "two_sagittal_t1",
    "missing_series",
)
#: Each kind's share of studies (the two two-axial kinds split the real two-axial rate).
LAYOUT_SHARES: dict[str, float] = {
    "two_axial_ranges": reference.LAYOUT_RATES["two_axial"] / 2,
    "two_axial_repeat": reference.LAYOUT_RATES["two_axial"] / 2,
    "per_disc": reference.LAYOUT_RATES["three_or_four_axial"],
    "two_sagittal_t1": reference.LAYOUT_RATES["two_sagittal_t1"],
    "missing_series": reference.LAYOUT_RATES["missing_series"],
}
#: Stream tags of the per-study random generators (the images use ``(seed, part, index)``).
_LABEL_STREAM, _COHORT_STREAM = 11, 13


@dataclass(frozen=True)
class StudyLabels:
    """One patient's labels: true codes, drawn narrowing, degeneration and observed codes (-1 blank)."""

    true_codes: np.ndarray
    amounts: np.ndarray
    degeneration: float
    observed: np.ndarray


def quota(rng: np.random.Generator, n: int, shares: dict[str, float], force: bool) -> list[str]:
    """A kind (or ``""``) per study: ``round(share * n)`` studies of each kind, in random places.

    Quotas, not coin flips, so that a 200-study phantom has the real rates whatever the seed.
    With ``force`` every kind appears at least once (when there is room).
    """
    out = [""] * n
    free = rng.permutation(n).tolist()
    for kind, share in shares.items():
        count = int(round(share * n))
        if force and count == 0:
            count = 1
        for _ in range(min(count, len(free))):
            out[free.pop()] = kind
    return out


def blank_labels(rng: np.random.Generator) -> np.ndarray:
    """Label indices left blank in a study with blanks, where the real blanks concentrate.

    Subarticular L1/L2 (both sides) in 8/9.4 of such studies, L2/L3 in 4/9.4, and a random
    label where neither or, sometimes, on top.
    """
    picks: list[int] = []
    for label, rate in reference.BLANK_LABEL_RATES.items():
        if rng.random() < rate / reference.BLANK_STUDY_RATE:
            picks += [LABEL_COLUMNS.index(f"{side}_{label}") for side in ("left", "right")]
    if not picks or rng.random() < 0.25:
        picks.append(int(rng.integers(len(LABEL_COLUMNS))))
    return np.unique(picks)


def draw_labels(
    seed: int, part_code: int, index: int, *, draw: int, label_noise: float, blank: bool
) -> StudyLabels:
    """One study's labels, from its own stream ``(seed, part, index, draw)``."""
    rng = np.random.default_rng([seed, part_code, index, draw, _LABEL_STREAM])
    codes, amounts, degeneration = disease.joint_model(label_noise).sample(rng)
    observed = observe(rng, codes, label_noise)
    if blank:
        observed[blank_labels(rng)] = -1
    return StudyLabels(codes, amounts, degeneration, observed)


def draw_cohort(
    seed: int, part_code: int, blanks: list[bool], *, label_noise: float, draws: int
) -> tuple[list[StudyLabels], int]:
    """Labels of one part's studies: the best of ``draws`` draws, and its draw index."""
    best: tuple[float, int, list[StudyLabels]] | None = None
    for draw in range(max(1, draws)):
        labels = [
            draw_labels(seed, part_code, i, draw=draw, label_noise=label_noise, blank=b)
            for i, b in enumerate(blanks)
        ]
        distance = label_distance(np.array([lab.observed for lab in labels])) if draws > 1 else 0.0
        if best is None or distance < best[0]:
            best = (distance, draw, labels)
    assert best is not None
    return best[2], best[1]


def cohort_rng(seed: int, part_code: int) -> np.random.Generator:
    """The generator that places layouts and blank-label studies within a part."""
    return np.random.default_rng([seed, part_code, _COHORT_STREAM])
