"""Eight tasks at once, through the sweep's local executor, against a fresh store lose nothing.

MLflow's first writers on a fresh sqlite file all fail in its schema-migration race; the sweep's
parent run creates and migrates the store before it fans out. The same sweep against the shared
server (PostgreSQL) is the team's case. Each store gets prior on ``--subset ci``, folds 0-1 x seeds
0-3, eight processes at once: every task must land as a FINISHED run with its metrics and
artifacts, nested under the sweep's run, and the same sweep run again must skip all eight.
"""

from __future__ import annotations

import logging
import time

import pandas as pd
import pytest

from lumbar_bench.scale import sweep, tasks
from lumbar_bench.tracking.models import run_model_id
from lumbar_bench.tracking.search import find_runs, get_run, local_artifact

log = logging.getLogger(__name__)

TASKS = 8
#: What a lost write looks like in a task's log: sqlite's lock, the migration race, a refused request.
LOST = ("database is locked", "_alembic_tmp", "Max retries exceeded", "ConnectionError")


@pytest.fixture(params=["sqlite", pytest.param("server", marks=pytest.mark.tracking_server)])
def store(request, tmp_path) -> str:
    """A store nobody has opened: a sqlite path that does not exist yet, or a fresh server experiment."""
    if request.param == "server":
        return request.getfixturevalue("mlflow_server")
    path = tmp_path / "fresh" / "mlflow.db"
    path.parent.mkdir()
    return f"sqlite:///{path}"


@pytest.mark.slow
def test_eight_parallel_tasks_on_a_fresh_store_lose_nothing(store, tiny_phantom, tmp_path, record_property):
    experiment = f"concurrency-{tmp_path.name}"
    request = tasks.SweepRequest(
        approaches=("prior",),
        folds=(0, 1),
        seeds=(0, 1, 2, 3),
        subset="ci",
        data_dir=tiny_phantom,
        cache_dir=tmp_path / "cache",
        tracking_uri=store,
        experiment=experiment,
        executor="local",
        max_parallel=TASKS,
        folder=tmp_path / "jobs",
        n_boot=20,
    )
    t0 = time.monotonic()
    first = sweep.sweep(request)
    wall = time.monotonic() - t0
    assert (first.count("FINISHED"), first.count("FAILED")) == (TASKS, 0)

    parent = get_run(store, first.sweep_run_id)
    assert parent.status == "FINISHED" and parent.tag("sweep.finished") == str(TASKS)
    runs = find_runs(store, experiment, parent_id=first.sweep_run_id)
    assert len(runs) == TASKS and {r.status for r in runs} == {"FINISHED"}
    assert {(r.tag("fold"), r.tag("seed")) for r in runs} == {(f, s) for f in "01" for s in "0123"}
    for run in runs:
        assert run.metric("rsna_score") > 0 and run.metric("runtime/total_s") is not None
        preds = local_artifact(store, run.run_id, "predictions.csv", tmp_path / "dl" / run.run_id)
        assert len(pd.read_csv(preds)) > 0
        assert run_model_id(store, run.run_id)

    logs = "".join(p.read_text(errors="replace") for p in (tmp_path / "jobs").glob("*_log.*"))
    assert not [word for word in LOST if word in logs]
    retries = logs.count("Retrying") + logs.count("retry")

    t0 = time.monotonic()
    again = sweep.sweep(request)
    rerun = time.monotonic() - t0
    assert (again.count("SKIPPED"), again.count("FINISHED")) == (TASKS, 0)
    assert find_runs(store, experiment, parent_id=again.sweep_run_id) == []
    for key, value in {"wall_s": round(wall, 1), "rerun_s": round(rerun, 1), "retries": retries}.items():
        record_property(key, value)
    log.info(
        "%s: %d runs landed in %.1f s (%d retries); rerun skipped all in %.1f s",
        store,
        TASKS,
        wall,
        retries,
        rerun,
    )
