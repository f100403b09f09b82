import pytest

from lumbar_bench import tracking


def test_finished_run_has_params_metrics_and_artifacts(tracking_uri, tmp_path):
    with tracking.tracked_run(tracking_uri, "exp", "ok", tags={"approach": "prior"}) as run:
        run.log_params({"a": 1, "long": "x" * 1000})
        run.log_metrics({"m": 0.5, "skipped": float("nan")}, step=2)
        run.log_json({"k": [1, 2]}, "config.json")
    info = tracking.get_run(tracking_uri, run.run_id)
    assert info.info.status == "FINISHED"
    assert info.data.tags["approach"] == "prior"
    assert info.data.params["a"] == "1" and len(info.data.params["long"]) == 500
    assert info.data.metrics == {"m": 0.5}
    path = tracking.download_artifacts(tracking_uri, run.run_id, "config.json", tmp_path)
    assert '"k"' in path.read_text()


def test_exception_marks_run_failed_with_reason(tracking_uri):
    with pytest.raises(ValueError), tracking.tracked_run(tracking_uri, "exp", "bad") as run:
        raise ValueError("broken input")
    info = tracking.get_run(tracking_uri, run.run_id)
    assert info.info.status == "FAILED"
    assert info.data.tags["failure_reason"] == "ValueError"
    assert "broken input" in info.data.tags["failure_message"]


def test_nested_runs_carry_parent_id(tracking_uri):
    with (
        tracking.tracked_run(tracking_uri, "exp", "parent") as parent,
        tracking.tracked_run(tracking_uri, "exp", "child", parent=parent) as child,
    ):
        child.log_metric("x", 1.0)
    info = tracking.get_run(tracking_uri, child.run_id)
    assert info.data.tags["mlflow.parentRunId"] == parent.run_id
    runs = tracking.search_runs(tracking_uri, "exp", f"tags.`mlflow.parentRunId` = '{parent.run_id}'")
    assert [r.info.run_id for r in runs] == [child.run_id]


def test_search_unknown_experiment_is_empty(tracking_uri):
    assert tracking.search_runs(tracking_uri, "nope") == []
