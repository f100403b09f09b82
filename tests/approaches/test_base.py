"""The approach contract's report: what fit and predict measured, handed to the runner."""

from __future__ import annotations

import pytest

from lumbar_bench.approaches.base import FitReport, ReportBuilder
from lumbar_bench.approaches.prior import PriorApproach, PriorConfig


def test_merge_keeps_the_later_metric_and_adds_up_seconds_and_times():
    first = FitReport({"a": 1.0, "b": 2.0}, {"train": 3.0}, time_to_best_s=1.5)
    second = FitReport({"b": 5.0}, {"train": 1.0, "predict": 0.5}, time_to_best_s=2.0)
    merged = first.merge(second)
    assert merged == FitReport({"a": 1.0, "b": 5.0}, {"train": 4.0, "predict": 0.5}, 3.5)
    assert first.merge(FitReport()).time_to_best_s == 1.5
    assert FitReport().merge(FitReport()).time_to_best_s is None


def test_a_report_is_read_only():
    report = FitReport({"a": 1.0})
    with pytest.raises(TypeError):
        report.metrics["a"] = 2.0


def test_builder_accumulates_stages():
    builder = ReportBuilder()
    builder.seconds("nnunet_train", 0.0)  # recorded even when nothing was trained
    assert builder.build() == FitReport(stage_seconds={"nnunet_train": 0.0})
    builder.seconds("nnunet_train", 2.0)
    builder.seconds("nnunet_train", 3.0)
    builder.metrics({"dice_mean": 0.5})
    builder.time_to_best(1.0)
    builder.time_to_best(0.5)
    assert builder.build() == FitReport({"dice_mean": 0.5}, {"nnunet_train": 5.0}, 1.5)


def test_an_approach_that_measures_nothing_at_prediction_reports_nothing():
    assert PriorApproach(PriorConfig()).last_predict_report() == FitReport()
