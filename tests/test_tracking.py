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


def test_run_status_and_mark_killed(tracking_uri, tmp_path):
    assert tracking.run_status(f"sqlite:///{tmp_path / 'absent.db'}", "x") is None
    assert not (tmp_path / "absent.db").exists()  # asking did not create a store
    client = tracking._client(tracking_uri)
    run_id = client.create_run(tracking.experiment_id(tracking_uri, "exp")).info.run_id
    assert tracking.run_status(tracking_uri, run_id) == "RUNNING"
    tracking.mark_killed(tracking_uri, run_id, "owner died", "later-run")
    info = tracking.get_run(tracking_uri, run_id)
    assert info.info.status == "KILLED" and info.data.tags["killed_by_run"] == "later-run"
    assert info.data.tags["failure_message"] == "owner died"


def test_absolute_uri_pins_a_relative_sqlite_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert tracking.absolute_uri("sqlite:///mlflow.db") == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    assert tracking.absolute_uri("sqlite:////abs/x.db") == "sqlite:////abs/x.db"
    assert tracking.absolute_uri("http://host:5000") == "http://host:5000"
