"""``--tracking-uri http://…``: every command against a real ``mlflow server`` on PostgreSQL.

The slow tests share the session's server (``tests/fixtures/tracking_server.py``), one experiment
each; the fast ones check the pieces that need no server.
"""

from __future__ import annotations

import io
import json
import shutil
from contextlib import redirect_stdout
from pathlib import Path

import pandas as pd
import pytest

from lumbar_bench.cli import main
from lumbar_bench.gate.baseline import Baseline, Expected
from lumbar_bench.scale import tasks
from lumbar_bench.tracking import server as tracking_server
from lumbar_bench.tracking.names import ui_link
from lumbar_bench.tracking.search import find_runs, get_run, local_artifact


def _data_args(tiny_phantom: Path, cache: Path) -> list[str]:
    return ["--data", str(tiny_phantom), "--cache-dir", str(cache)]


@pytest.fixture(scope="module")
def served_run(mlflow_server, tiny_phantom, tmp_path_factory) -> dict:
    """``lumbar-bench run --approach prior --subset ci --json`` against the server; its stdout lines."""
    cache = tmp_path_factory.mktemp("served-cache")
    out = io.StringIO()
    with redirect_stdout(out):
        code = main(
            ["--no-progress", "run", "--approach", "prior", "--subset", "ci", "--json"]
            + _data_args(tiny_phantom, cache)
            + ["--tracking-uri", mlflow_server, "--experiment", "served"]
        )
    assert code == 0
    lines = out.getvalue().strip().splitlines()
    return {"lines": lines, "result": json.loads(lines[-1]), "cache": cache}


@pytest.mark.parametrize(
    ("uri", "link"),
    [
        ("http://127.0.0.1:5077/", "http://127.0.0.1:5077/#/x"),
        ("sqlite:///m.db", "in `mlflow ui --backend-store-uri sqlite:///m.db`: http://127.0.0.1:5000/#/x"),
    ],
)
def test_ui_link_points_at_the_server_itself_or_at_mlflow_ui(uri, link):
    assert ui_link(uri, "/#/x") == link


def test_missing_postgresql_is_a_one_line_reason(monkeypatch):
    monkeypatch.setattr(tracking_server, "pg_bin_dir", lambda: None)
    reason = tracking_server.missing()
    assert reason is not None and "PostgreSQL is not installed" in reason and "\n" not in reason
    with pytest.raises(RuntimeError, match="PostgreSQL is not installed"):
        tracking_server.TrackingServer(tracking_server.ServerConfig(port=1, pg_port=1)).start()


@pytest.mark.slow
@pytest.mark.tracking_server
def test_run_logs_to_the_server_and_prints_only_its_json(served_run, mlflow_server):
    # MLflow prints a run's link on stdout for an http store; the CLI keeps stdout to its JSON
    assert len(served_run["lines"]) == 1
    result = served_run["result"]
    run = get_run(mlflow_server, result["run_id"])
    assert run.status == "FINISHED" and run.tag("approach") == "prior" and run.tag("subset") == "ci"
    assert run.metric("rsna_score") == pytest.approx(result["rsna_score"])
    assert run.artifact_uri.startswith("mlflow-artifacts:/")  # uploaded through the server


@pytest.mark.slow
@pytest.mark.tracking_server
def test_leaderboard_reads_the_runs_artifacts_back_and_publishes_the_board(
    served_run, mlflow_server, tmp_path, capsys
):
    args = ["--no-progress", "leaderboard", "--subset", "ci", "--tracking-uri", mlflow_server]
    args += ["--experiment", "served", "--bootstrap", "50", "--results-dir", str(tmp_path), "--format", "csv"]
    assert main(args) == 0
    captured = capsys.readouterr()
    board = pd.read_csv(io.StringIO(captured.out))
    (row,) = board.itertuples()
    assert row.approach == "prior" and row.run_ids == served_run["result"]["run_id"]
    # the interval needs the run's labels.csv and predictions.csv, downloaded from the server
    assert row.ci_low < row.rsna_score < row.ci_high
    assert f"{mlflow_server}/#/experiments/" in captured.err  # the board's view, on the server's own UI
    (published,) = find_runs(mlflow_server, "served", tags={"kind": "leaderboard"})
    table = local_artifact(mlflow_server, published.run_id, "leaderboard.csv", tmp_path / "dl")
    assert pd.read_csv(table)["run_ids"].tolist() == [row.run_ids]


@pytest.mark.slow
@pytest.mark.tracking_server
def test_predict_loads_the_runs_model_from_the_server(served_run, mlflow_server, tiny_phantom, tmp_path):
    out = tmp_path / "submission.csv"
    args = ["--no-progress", "predict", "--run", served_run["result"]["run_id"], "--out", str(out)]
    assert main(args + _data_args(tiny_phantom, served_run["cache"]) + ["--tracking-uri", mlflow_server]) == 0
    sub = pd.read_csv(out)
    assert list(sub.columns) == ["row_id", "normal_mild", "moderate", "severe"]
    assert len(sub) > 0 and len(sub) % 25 == 0
    assert sub[["normal_mild", "moderate", "severe"]].sum(axis=1).round(6).eq(1).all()


@pytest.mark.slow
@pytest.mark.tracking_server
def test_check_runs_the_gate_against_the_server(served_run, mlflow_server, tiny_phantom, tmp_path, capsys):
    got = served_run["result"]
    run = get_run(mlflow_server, got["run_id"])
    expected = Expected(rsna_score=got["rsna_score"], rsna_score_tolerance=0.05, budget_minutes=3.0)
    baseline = tmp_path / "ci.json"
    Baseline(run.tag("split_digest"), run.tag("data_digest"), {"prior": expected}).save(baseline)
    args = ["--no-progress", "check", str(baseline), "--tracking-uri", mlflow_server, "--experiment", "gated"]
    assert main(args + _data_args(tiny_phantom, served_run["cache"])) == 0
    assert "gate passed (1 approaches)" in capsys.readouterr().out
    (gated,) = find_runs(mlflow_server, "gated", approach="prior", status="FINISHED")
    assert gated.metric("rsna_score") == pytest.approx(got["rsna_score"])
    assert main([*args, "--from-runs"]) == 0  # and judged again from the server's runs alone


@pytest.mark.slow
@pytest.mark.tracking_server
def test_sweep_lands_nested_runs_on_the_server_then_skips_them(mlflow_server, tiny_phantom, tmp_path, capsys):
    args = ["--no-progress", "sweep", "--approach", "prior", "--folds", "0-1", "--subset", "ci"]
    args += _data_args(tiny_phantom, tmp_path / "cache") + ["--tracking-uri", mlflow_server]
    args += ["--experiment", "swept", "--executor", "local", "--max-parallel", "2", "--bootstrap", "20"]
    assert main(args) == 0
    assert "2 finished, 0 skipped, 0 failed" in capsys.readouterr().out
    (parent,) = find_runs(mlflow_server, "swept", tags={"kind": "sweep"})
    runs = find_runs(mlflow_server, "swept", parent_id=parent.run_id)
    assert sorted(r.tag("fold") for r in runs) == ["0", "1"] and {r.status for r in runs} == {"FINISHED"}
    assert all(r.tag(tasks.JOB_TAG) and r.metric("rsna_score") for r in runs)
    for r in runs:
        preds = local_artifact(mlflow_server, r.run_id, "predictions.csv", tmp_path / r.run_id)
        assert len(pd.read_csv(preds)) > 0
    shutil.rmtree(tmp_path / "cache" / "sweeps", ignore_errors=True)
    assert main(args) == 0
    assert "0 finished, 2 skipped, 0 failed" in capsys.readouterr().out
