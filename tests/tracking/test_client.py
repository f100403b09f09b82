import pytest

from lumbar_bench.tracking import search
from lumbar_bench.tracking.client import experiment_id, mark_killed, mlflow_client, tracked_run
from lumbar_bench.tracking.names import absolute_uri
from lumbar_bench.tracking.search import download_artifacts, find_runs, get_run, run_status, search_runs


def test_finished_run_has_params_metrics_and_artifacts(tracking_uri, tmp_path):
    with tracked_run(tracking_uri, "exp", "ok", tags={"approach": "prior"}) as run:
        run.log_params({"a": 1, "long": "x" * 1000})
        run.log_metrics({"m": 0.5, "skipped": float("nan")}, step=2)
        run.log_json({"k": [1, 2]}, "config.json")
    info = get_run(tracking_uri, run.run_id)
    assert info.status == "FINISHED"
    assert info.tags["approach"] == "prior"
    assert info.params["a"] == "1" and len(info.params["long"]) == 500
    assert info.metrics == {"m": 0.5} and info.metric("m") == 0.5 and info.metric("absent") is None
    assert info.tag("approach") == "prior" and info.tag("absent", "-") == "-"
    assert info.name == "ok" and info.start_time <= info.end_time
    with pytest.raises(TypeError):
        info.tags["approach"] = "other"  # a record is read-only
    path = download_artifacts(tracking_uri, run.run_id, "config.json", tmp_path)
    assert '"k"' in path.read_text()


def test_exception_marks_run_failed_with_reason(tracking_uri):
    with pytest.raises(ValueError), tracked_run(tracking_uri, "exp", "bad") as run:
        raise ValueError("broken input")
    info = get_run(tracking_uri, run.run_id)
    assert info.status == "FAILED"
    assert info.tags["failure_reason"] == "ValueError"
    assert "broken input" in info.tags["failure_message"]


def test_nested_runs_carry_parent_id(tracking_uri):
    with (
        tracked_run(tracking_uri, "exp", "parent") as parent,
        tracked_run(tracking_uri, "exp", "child", parent=parent) as child,
    ):
        child.log_metric("x", 1.0)
    info = get_run(tracking_uri, child.run_id)
    assert info.parent_id == parent.run_id and info.is_child
    assert not get_run(tracking_uri, parent.run_id).is_child
    runs = find_runs(tracking_uri, "exp", parent_id=parent.run_id)
    assert [r.run_id for r in runs] == [child.run_id]
    assert [r.run_id for r in find_runs(tracking_uri, "exp", top_level=True)] == [parent.run_id]


def test_search_unknown_experiment_is_empty(tracking_uri):
    assert search_runs(tracking_uri, "nope") == []


def test_run_status_and_mark_killed(tracking_uri, tmp_path):
    assert run_status(f"sqlite:///{tmp_path / 'absent.db'}", "x") is None
    assert not (tmp_path / "absent.db").exists()  # asking did not create a store
    client = mlflow_client(tracking_uri)
    run_id = client.create_run(experiment_id(tracking_uri, "exp")).info.run_id
    assert run_status(tracking_uri, run_id) == "RUNNING"
    mark_killed(tracking_uri, run_id, "owner died", "later-run")
    info = get_run(tracking_uri, run_id)
    assert info.status == "KILLED" and info.tags["killed_by_run"] == "later-run"
    assert info.tags["failure_message"] == "owner died"


def test_absolute_uri_pins_a_relative_sqlite_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert absolute_uri("sqlite:///mlflow.db") == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    assert absolute_uri("sqlite:////abs/x.db") == "sqlite:////abs/x.db"
    assert absolute_uri("http://host:5000") == "http://host:5000"


def _tagged_runs(uri: str) -> None:
    for approach, subset, fold, status in [
        ("prior", "ci", 0, "FINISHED"),
        ("prior", "ci", 1, "FINISHED"),
        ("prior", "small", 0, "FINISHED"),
        ("resnet18", "ci", 0, "FAILED"),
    ]:
        tags = {"approach": approach, "subset": subset, "fold": fold, "split_digest": f"ab{fold}cd"}
        with tracked_run(uri, "exp", f"{approach}-{subset}-{fold}", tags) as run:
            pass
        if status != "FINISHED":
            run.finish(status)


def test_find_runs_filters_by_tags_and_status_in_the_store(tracking_uri):
    _tagged_runs(tracking_uri)

    def names(**criteria):
        return sorted(r.name for r in find_runs(tracking_uri, "exp", **criteria))

    assert names(approach="prior", subset="ci") == ["prior-ci-0", "prior-ci-1"]
    assert names(fold=0, status="FINISHED") == ["prior-ci-0", "prior-small-0"]
    assert names(status="FAILED") == ["resnet18-ci-0"]
    assert names(split_prefix="ab1") == ["prior-ci-1"]
    assert names(tags={"mlflow.runName": "prior-small-0"}) == ["prior-small-0"]
    assert names(approach="o'brien") == []  # a quote in a value is quoted, not injected
    with pytest.raises(ValueError, match="wildcards"):
        find_runs(tracking_uri, "exp", split_prefix="ab%")


def test_search_follows_every_page(tracking_uri, monkeypatch):
    _tagged_runs(tracking_uri)
    monkeypatch.setattr(search, "_PAGE", 3)  # MLflow's limit is 1000 rows a page
    assert len(find_runs(tracking_uri, "exp")) == 4
