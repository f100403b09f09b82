"""End-to-end ``--subset ci`` runs of the three nnU-Net approaches, sharing one cache."""

from __future__ import annotations

import logging

import pytest

from lumbar_bench import tracking
from lumbar_bench.runner import RunRequest, run

pytestmark = [pytest.mark.slow, pytest.mark.nnunet]


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One cache and one MLflow store for the module, so stages can be reused across approaches."""
    root = tmp_path_factory.mktemp("nnunet-e2e")
    return {"cache": root / "cache", "uri": f"sqlite:///{root / 'mlflow.db'}"}


def _run(name, phantom, shared):
    return run(
        RunRequest(
            approach=name,
            data_dir=phantom,
            subset="ci",
            device="cpu",
            tracking_uri=shared["uri"],
            experiment="nnunet",
            cache_dir=shared["cache"],
            progress=False,
        )
    )


def test_raw_then_qc_reuses_the_cached_stages(tiny_phantom, shared, caplog):
    raw = _run("nnunet-raw", tiny_phantom, shared).as_dict()
    assert 0 < raw["rsna_score"] < 5
    assert raw["cache/vertebrae_hit"] == 0.0 and raw["cache/pseudo_masks_hit"] == 0.0
    for key in (
        "dice_mean",
        "truth_dice_mean",
        "runtime/vertebrae_s",
        "runtime/pseudo_masks_s",
        "runtime/nnunet_train_s",
        "runtime/nnunet_predict_s",
        "qc/n_series",
    ):
        assert key in raw, key
    assert 0 <= raw["dice_mean"] <= 1 and 0 <= raw["truth_dice_mean"] <= 1
    assert any(k.startswith("dice/sagittal_t2_stir/") for k in raw)

    with caplog.at_level(logging.INFO):
        qc = _run("nnunet-qc", tiny_phantom, shared).as_dict()
    assert qc["cache/vertebrae_hit"] == 1.0 and qc["cache/pseudo_masks_hit"] == 1.0
    assert "stage vertebrae: cache hit" in caplog.text and "stage pseudo_masks: cache hit" in caplog.text
    assert "vertebrae: validation Dice" not in caplog.text  # the U-Net was not trained again
    assert "pseudo-masks:" not in caplog.text  # nor the masks rebuilt
    assert qc["qc/n_dropped"] >= 0 and 0 < qc["rsna_score"] < 5

    info = tracking.get_run(shared["uri"], _run_id(shared, "nnunet-qc"))
    assert "dice_mean" in info.data.metrics and "qc/n_series" in info.data.metrics


def _run_id(shared, approach):
    runs = tracking.search_runs(shared["uri"], "nnunet")
    return next(r.info.run_id for r in runs if r.data.tags.get("approach") == approach)


def test_refined_logs_both_stages_as_nested_runs(tiny_phantom, shared):
    out = _run("nnunet-refined", tiny_phantom, shared).as_dict()
    assert 0 < out["rsna_score"] < 5
    assert "stage1/dice_mean" in out and "dice_mean" in out
    runs = tracking.search_runs(shared["uri"], "nnunet")
    names = {r.data.tags.get("mlflow.runName") for r in runs}
    assert {"stage1", "stage2"} <= names
