"""The plan of every study before any pixel is drawn: ids, layouts, hard-case kinds and labels.

Everything comes from numpy Generators seeded by the config's seed, so the same
:class:`~.config.PhantomConfig` always plans the same studies.
"""

from __future__ import annotations

import numpy as np

from lumbar_bench.data.phantom import cohort, reference
from lumbar_bench.data.phantom.config import PhantomConfig
from lumbar_bench.data.phantom.study import HARD_KINDS, PART_CODES, StudyPlan

#: Study and series ids are drawn from this range (7-10 digits, like the real ids).
ID_RANGE = (1_000_000, 4_300_000_000)
#: Series ids reserved per study (two sagittal T1, one T2/STIR, up to four axial).
SERIES_PER_STUDY = 7


def _draw_ids(rng: np.random.Generator, n: int, taken: set[int]) -> list[int]:
    """``n`` distinct ids in ``ID_RANGE`` not in ``taken`` (which is updated)."""
    out: list[int] = []
    while len(out) < n:
        value = int(rng.integers(*ID_RANGE))
        if value not in taken:
            taken.add(value)
            out.append(value)
    return out


def plan_studies(config: PhantomConfig) -> list[StudyPlan]:
    """Ids, layouts, hard-case kinds and labels of every study (train first, then test)."""
    rng = np.random.default_rng([config.seed, 7919])
    taken: set[int] = set()
    total = config.studies + config.n_test
    study_ids = _draw_ids(rng, total, taken)
    series_ids = _draw_ids(rng, total * SERIES_PER_STUDY, taken)
    hard = _assign(rng, config.studies, config.hard_case_rate, HARD_KINDS, force=config.studies >= 50)
    plans = []
    for part, n in (("train", config.studies), ("test", config.n_test)):
        layouts, blanks = _layouts(config, part, n)
        draws = config.cohort_draws if part == "train" else 1
        labels, draw = cohort.draw_cohort(
            config.seed, PART_CODES[part], blanks, reader_noise=config.reader_noise, draws=draws
        )
        for j in range(n):
            i = j if part == "train" else config.studies + j
            plans.append(
                StudyPlan(
                    part=part,
                    index=j,
                    study_id=study_ids[i],
                    series_ids=tuple(series_ids[i * SERIES_PER_STUDY : (i + 1) * SERIES_PER_STUDY]),
                    labels=labels[j],
                    layout=layouts[j],
                    hard=hard[j] if part == "train" else "",
                    cohort_draw=draw,
                )
            )
    return plans


def _layouts(config: PhantomConfig, part: str, n: int) -> tuple[list[str], list[bool]]:
    """Layout kind and blank-label flag per study of one part, by quota of the real rates."""
    rng = cohort.cohort_rng(config.seed, PART_CODES[part])
    shares = {k: v * config.irregularity for k, v in cohort.LAYOUT_SHARES.items()}
    force = part == "train" and n >= 20 and config.irregularity > 0
    layouts = cohort.quota(rng, n, shares, force=force)
    if part != "train":
        return layouts, [False] * n
    blank_share = {"blank": reference.BLANK_STUDY_RATE * config.irregularity}
    return layouts, [k == "blank" for k in cohort.quota(rng, n, blank_share, force=force)]


def _assign(rng: np.random.Generator, n: int, rate: float, kinds: tuple[str, ...], force: bool) -> list[str]:
    """Draw a kind (or ``""``) per study at ``rate``; with ``force`` every kind appears once."""
    out = [str(rng.choice(kinds)) if rng.random() < rate else "" for _ in range(n)]
    if force:
        free = [i for i in rng.permutation(n).tolist() if not out[i]]
        for kind in kinds:
            if kind not in out and free:
                out[free.pop()] = kind
    return out


__all__ = ["ID_RANGE", "SERIES_PER_STUDY", "plan_studies"]
