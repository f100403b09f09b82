"""The official score of a 2,000-study submission takes under a second (a speed target).

``score`` validates the Kaggle-form submission (50,000 rows) and computes the four
weighted log losses; the bootstrap path (``score_arrays`` on arrays, and the
leaderboard's 1,000-resample interval) is measured too.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lumbar_bench.constants import LABEL_COLUMNS, PROB_COLUMNS, row_id
from lumbar_bench.metrics.bootstrap import Evidence, bootstrap_ci, study_parts
from lumbar_bench.metrics.score import score, score_arrays

STUDIES = 2000
TARGET_S = 1.0


@pytest.fixture(scope="module")
def pair() -> tuple[pd.DataFrame, pd.DataFrame]:
    """2,000 studies of labels (with blanks) and a Kaggle-form submission for them."""
    rng = np.random.default_rng(0)
    ids = np.arange(10_000, 10_000 + STUDIES)
    codes = rng.choice([0, 1, 2], p=[0.77, 0.17, 0.06], size=(STUDIES, len(LABEL_COLUMNS)))
    codes[rng.random(codes.shape) < 0.012] = -1
    labels = pd.DataFrame(
        codes.astype(np.int8), index=pd.Index(ids, name="study_id"), columns=list(LABEL_COLUMNS)
    )
    probs = rng.dirichlet([3, 1, 0.5], size=STUDIES * len(LABEL_COLUMNS))
    rows = [row_id(s, lab) for s in ids for lab in LABEL_COLUMNS]
    sub = pd.DataFrame({"row_id": rows, **{c: probs[:, i] for i, c in enumerate(PROB_COLUMNS)}})
    return labels, sub.sample(frac=1.0, random_state=0)  # shuffled rows, as a real submission may be


def test_score_2000_studies_under_one_second(benchmark, pair) -> None:
    labels, sub = pair
    result = benchmark.pedantic(score, args=(labels, sub), rounds=5, iterations=1, warmup_rounds=1)
    assert np.isfinite(result.score)
    mean = benchmark.stats.stats.mean
    benchmark.extra_info.update(
        studies=STUDIES, rows=len(sub), target_s=TARGET_S, studies_per_s=STUDIES / mean
    )
    assert mean < TARGET_S, f"scoring {STUDIES} studies took {mean:.3f} s (target < {TARGET_S} s)"


def test_score_arrays_2000_studies(benchmark, pair) -> None:
    labels, sub = pair
    codes = labels.to_numpy(dtype=np.int64)
    probs = sub.set_index("row_id").loc[[row_id(s, c) for s in labels.index for c in LABEL_COLUMNS]]
    probs = probs.to_numpy().reshape(STUDIES, len(LABEL_COLUMNS), 3)
    benchmark(score_arrays, codes, probs)
    benchmark.extra_info.update(studies=STUDIES, studies_per_s=STUDIES / benchmark.stats.stats.mean)


def test_bootstrap_interval_2000_studies_1000_resamples(benchmark, pair) -> None:
    labels, sub = pair
    codes = labels.to_numpy(dtype=np.int64)
    probs = sub.set_index("row_id").loc[[row_id(s, c) for s in labels.index for c in LABEL_COLUMNS]]
    probs = probs.to_numpy().reshape(STUDIES, len(LABEL_COLUMNS), 3)

    def interval() -> tuple[float, float]:
        num, den = study_parts(codes, probs)
        return bootstrap_ci(Evidence(labels.index.to_numpy(), np.arange(STUDIES) % 5, num, den), 1000, 0)

    low, high = benchmark.pedantic(interval, rounds=3, iterations=1)
    assert low < high
    benchmark.extra_info.update(studies=STUDIES, resamples=1000, folds=5)
