"""The three nnU-Net approaches' ``--subset ci`` runs, read from the session's gate (one training each).

The gate (tests/conftest.py ``gate``) runs them one after another with one stage cache,
as a user's runs on one machine share ``~/.cache/lumbar-bench``.
"""

from __future__ import annotations

import pytest

from lumbar_bench.tracking.search import get_run, search_runs

pytestmark = [pytest.mark.slow, pytest.mark.nnunet]
VARIANTS = ("nnunet-raw", "nnunet-qc", "nnunet-refined")


def _runs(gate):
    runs = [get_run(gate.request.tracking_uri, gate.run_id(n)) for n in VARIANTS]
    return sorted(runs, key=lambda r: r.start_time)


def test_each_run_logs_its_stages_and_dice(gate):
    for run in _runs(gate):
        m = run.metrics
        for key in (
            "dice_mean",
            "truth_dice_mean",
            "runtime/vertebrae_s",
            "runtime/pseudo_masks_s",
            "runtime/nnunet_train_s",
            "runtime/nnunet_predict_s",
            "qc/n_series",
            "grading/prior_fallback_fraction",
        ):
            assert key in m, (run.tags["approach"], key)
        assert 0 <= m["dice_mean"] <= 1 and 0 <= m["truth_dice_mean"] <= 1
        assert any(k.startswith("dice/sagittal_t2_stir/") for k in m)
        assert 0 < m["rsna_score"] < 5


def test_later_runs_reuse_the_cached_vertebra_and_mask_stages(gate):
    first, *later = _runs(gate)
    assert first.metrics["cache/vertebrae_hit"] == 0.0
    assert first.metrics["cache/pseudo_masks_hit"] == 0.0
    assert first.metrics["runtime/reused_s"] == 0.0
    built = first.metrics["runtime/vertebrae_s"] + first.metrics["runtime/pseudo_masks_s"]
    for run in later:
        assert run.metrics["cache/vertebrae_hit"] == 1.0, run.tags["approach"]
        assert run.metrics["cache/pseudo_masks_hit"] == 1.0, run.tags["approach"]
        # charged the reused builds (against its budget too), so it trains as long as from an empty cache
        assert run.metrics["runtime/reused_s"] >= 0.9 * built, run.tags["approach"]
    qc = get_run(gate.request.tracking_uri, gate.run_id("nnunet-qc")).metrics
    assert qc["qc/n_dropped"] >= 0


def test_refined_logs_both_stages_as_nested_runs(gate):
    refined = gate.run_id("nnunet-refined")
    metrics = get_run(gate.request.tracking_uri, refined).metrics
    assert "stage1/dice_mean" in metrics and "dice_mean" in metrics
    children = search_runs(
        gate.request.tracking_uri, gate.request.experiment, f"tags.mlflow.parentRunId = '{refined}'"
    )
    assert {r.tags.get("mlflow.runName") for r in children} >= {"stage1", "stage2"}
