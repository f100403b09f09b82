"""The phantom's patients as a cohort: labels and series layouts drawn before any image.

Labels come from the joint disease model (``disease``), the reader (``pathology.observe``) and
the blank-label model; layouts from the real rates of layout irregularities (``reference.LAYOUT_RATES``).
Both are drawn per study from their own random streams, so they never depend on how the
images were rendered.

A 200-study cohort is a small sample: the correlation of two rare labels (L1/L2 foraminal
stenosis is 96% Normal/Mild) swings by ±0.15 from one draw to the next. So the labels of
the training part are drawn ``draws`` times and the draw closest to the reference
statistics is kept (``realism.label_distance``), among the draws where every label's true
Moderate frequency is at least ``MIN_TRUE_MODERATE`` of its observed one (so that an observed
Moderate is mostly a true one, never all reader error; a rare grade can miss its true cases
in a small draw). Every study of the kept draw is still an independent patient of the model.
``phantom.json`` records which draw was kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lumbar_bench.constants import LABEL_COLUMNS
from lumbar_bench.data.phantom import disease, reference
from lumbar_bench.data.phantom.pathology import observation_probs, observe
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
#: Smallest true/observed Moderate frequency a kept draw may have on any label.
MIN_TRUE_MODERATE = 0.25
#: Stream tags of the per-study random generators (the images use ``(seed, part, index)``).
_LABEL_STREAM, _COHORT_STREAM = 11, 13


@dataclass(frozen=True)
class StudyLabels:
    """One patient's labels, as the cohort and the images use them.

    True codes, drawn narrowing, degeneration, observed codes (-1 blank) and the reader's
    ``P(observed | latent)`` ``(25, 3)``, which the oracle and the floor use.
    """

    true_codes: np.ndarray
    amounts: np.ndarray
    degeneration: float
    observed: np.ndarray
    observation_probs: np.ndarray


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
    seed: int, part_code: int, index: int, *, draw: int, reader_noise: float, blank: bool
) -> StudyLabels:
    """One study's labels, from its own stream ``(seed, part, index, draw)``."""
    rng = np.random.default_rng([seed, part_code, index, draw, _LABEL_STREAM])
    model = disease.joint_model(reader_noise)
    patient = model.sample(rng)
    observed = observe(rng, patient.latent, model.cuts, reader_noise)
    if blank:
        observed[blank_labels(rng)] = -1
    probs = observation_probs(patient.latent, model.cuts, reader_noise)
    return StudyLabels(patient.codes, patient.amounts, patient.degeneration, observed, probs)


def true_moderate_ratio(true_codes: np.ndarray, observed: np.ndarray) -> float:
    """Lowest true/observed Moderate count over the labels with an observed Moderate (NaN: none).

    Both are ``(studies, 25)`` codes; blank observed labels (-1) are left out of both counts.
    """
    seen = (observed == 1).sum(axis=0)
    true = ((true_codes == 1) & (observed >= 0)).sum(axis=0)
    ratios = true[seen > 0] / seen[seen > 0]
    return float(ratios.min()) if ratios.size else float("nan")


def draw_cohort(
    seed: int, part_code: int, blanks: list[bool], *, reader_noise: float, draws: int
) -> tuple[list[StudyLabels], int]:
    """Labels of one part's studies: the best admissible of ``draws`` draws, and its draw index."""
    best: tuple[bool, float, int, list[StudyLabels]] | None = None
    for draw in range(max(1, draws)):
        labels = [
            draw_labels(seed, part_code, i, draw=draw, reader_noise=reader_noise, blank=b)
            for i, b in enumerate(blanks)
        ]
        observed = np.array([lab.observed for lab in labels]).reshape(len(labels), -1)
        ratio = true_moderate_ratio(
            np.array([lab.true_codes for lab in labels]).reshape(observed.shape), observed
        )
        rejected = bool(ratio < MIN_TRUE_MODERATE)  # NaN (no Moderate at all) is admissible
        distance = label_distance(observed) if draws > 1 else 0.0
        if best is None or (rejected, distance) < (best[0], best[1]):
            best = (rejected, distance, draw, labels)
    assert best is not None
    return best[3], best[2]


def cohort_rng(seed: int, part_code: int) -> np.random.Generator:
    """The generator that places layouts and blank-label studies within a part."""
    return np.random.default_rng([seed, part_code, _COHORT_STREAM])
