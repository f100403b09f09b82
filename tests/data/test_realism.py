"""Phantom realism v3: the joint label structure and layout irregularities against the real data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lumbar_bench.constants import LABEL_COLUMNS
from lumbar_bench.data.phantom import cohort, disease, realism, reference
from lumbar_bench.data.phantom.synth import PhantomConfig, plan_studies

#: The issues' floors (realism v2 and v3).
MAX_TV, MAX_CORRELATION_DELTA, SEVERAL_AXIAL, MIN_BLANK_STUDIES = 0.06, 0.10, (0.12, 0.22), 0.06
MAX_LEVEL_CORRELATION_DELTA, MIN_TRUE_MODERATE = 0.10, 0.25
AXIAL_COUNT = {"two_axial_ranges": 2, "two_axial_repeat": 2, "per_disc": 3}


def _train_plans(seed: int, studies: int = 200) -> list:
    return [p for p in plan_studies(PhantomConfig(studies=studies, seed=seed)) if p.part == "train"]


def assert_floors(rep: dict) -> None:
    """Every realism floor of the issue on one report."""
    assert rep["marginal_tv"] <= MAX_TV
    assert rep["correlation_mean_abs_delta"] <= MAX_CORRELATION_DELTA
    assert rep["level_correlation_mean_abs_delta"] <= MAX_LEVEL_CORRELATION_DELTA
    lo, hi = SEVERAL_AXIAL
    assert lo <= rep["layout"]["several_axial"]["phantom"] <= hi
    assert rep["blanks"]["studies_with_blank"]["phantom"] >= MIN_BLANK_STUDIES


@pytest.mark.parametrize("seed", [0, 1, 2, 7, 123])
def test_label_and_layout_floors_on_200_studies_any_seed(seed: int) -> None:
    plans = _train_plans(seed)
    observed = np.array([p.labels.observed for p in plans])
    rows = [
        (p.study_id, "Axial T2") for p in plans for _ in range(AXIAL_COUNT.get(p.layout, 1))
    ]  # the axial stacks each layout writes (missing_series may drop one; it is 0.2%)
    rep = realism.report(observed, pd.DataFrame(rows, columns=["study_id", "series_description"]))
    assert_floors(rep)
    blanks = rep["blanks"]
    assert blanks["subarticular_stenosis_l1_l2"]["phantom"] > blanks["subarticular_stenosis_l2_l3"]["phantom"]
    assert blanks["label_fraction"]["phantom"] == pytest.approx(reference.BLANK_LABEL_FRACTION, abs=0.006)
    truth = np.array([p.labels.true_codes for p in plans])
    assert cohort.true_moderate_ratio(truth, observed) >= MIN_TRUE_MODERATE


def test_every_label_keeps_true_moderate_and_severe() -> None:
    """The model gives every label a true Moderate and Severe frequency of its real one (the
    reader keeps the marginals), so no observed grade is reader error alone."""
    model = disease.joint_model(0.175)
    rng = np.random.default_rng(0)
    codes = np.array([model.sample(rng).codes for _ in range(20_000)])
    freq = np.stack([(codes == k).mean(axis=0) for k in range(3)], axis=1)
    assert freq == pytest.approx(disease.reference_prior(), abs=0.012)  # 3.5 standard errors
    assert (freq[:, 1] > 0.02).all() and (freq[:, 2] > 0.002).all()


def test_cohort_selection_rejects_a_draw_of_reader_error_alone() -> None:
    true = np.zeros((20, 25), np.int64)
    observed = true.copy()
    observed[:4, 0] = 1  # four observed Moderate, one true
    true[0, 0] = 1
    assert cohort.true_moderate_ratio(true, observed) == pytest.approx(0.25)
    observed[5, 0] = -1  # a blank label counts on neither side
    true[5, 0] = 1
    assert cohort.true_moderate_ratio(true, observed) == pytest.approx(0.25)
    assert np.isnan(cohort.true_moderate_ratio(true, np.zeros_like(true)))


def test_cohort_selection_keeps_the_closest_draw() -> None:
    plain = [p for p in plan_studies(PhantomConfig(studies=200, seed=4, cohort_draws=1)) if p.part == "train"]
    best = _train_plans(4)
    distance = [realism.label_distance(np.array([p.labels.observed for p in ps])) for ps in (plain, best)]
    assert distance[1] <= distance[0] and best[0].cohort_draw in range(8) and plain[0].cohort_draw == 0


def test_layout_quotas_are_the_real_rates() -> None:
    layouts = [p.layout for p in _train_plans(0, studies=1000)]
    assert layouts.count("two_axial_ranges") + layouts.count("two_axial_repeat") == 154
    assert layouts.count("per_disc") == 14 and layouts.count("two_sagittal_t1") == 4
    assert layouts.count("missing_series") == 2


def test_report_reads_any_kaggle_layout(tmp_path: Path) -> None:
    labels = pd.DataFrame({"study_id": [1, 2, 3, 4]})
    for column in LABEL_COLUMNS:
        labels[column] = ["Normal/Mild", "Moderate", "Severe", ""]
    labels.to_csv(tmp_path / "train.csv", index=False)
    series = [(1, 10, "Sagittal T1"), (1, 11, "Sagittal T2/STIR"), (1, 12, "Axial T2"), (1, 13, "Axial T2")]
    series.append((2, 20, "Axial T2"))
    pd.DataFrame(series, columns=["study_id", "series_id", "series_description"]).to_csv(
        tmp_path / "train_series_descriptions.csv", index=False
    )
    rep = realism.report_from_files(tmp_path)
    assert rep["blanks"]["studies_with_blank"]["phantom"] == 0.25
    assert rep["layout"]["two_axial"]["phantom"] == 0.5 and rep["layout"]["missing_series"]["phantom"] == 0.5
    assert rep["correlations"]["left~right foraminal"]["phantom"] == pytest.approx([1.0] * 5)
    assert rep["level_correlations"]["spinal_canal_stenosis"]["phantom"] == pytest.approx([1.0] * 4)
    text = realism.describe(rep)
    assert "correlation mean |Δ|" in text and "between neighbouring levels" in text and "L4/L5~L5/S1" in text


def test_synth_reports_its_realism(tiny_phantom: Path) -> None:
    meta = json.loads((tiny_phantom / "phantom.json").read_text())
    assert meta["realism"] == json.loads(json.dumps(realism.report_from_files(tiny_phantom)))
    assert meta["realism"]["studies"] == 30 and "cohort_draw" in meta


@pytest.mark.slow
def test_default_phantom_meets_every_floor(default_phantom: Path) -> None:
    rep = json.loads((default_phantom / "phantom.json").read_text())["realism"]
    assert rep["studies"] == 200
    assert_floors(rep)
    coords = pd.read_csv(default_phantom / "train_label_coordinates.csv")
    series = pd.read_csv(default_phantom / "train_series_descriptions.csv")
    axial = series[series.series_description == "Axial T2"]
    several = axial.groupby("study_id").size().loc[lambda s: s > 1].index
    on_axial = coords[coords.study_id.isin(several) & coords.condition.str.contains("Subarticular")]
    assert on_axial.series_id.isin(axial.series_id).all()
    used = on_axial.groupby("study_id").series_id.nunique()
    assert (used > 1).mean() > 0.3  # annotators use the stack that covers each level
