"""``lumbar-bench sweep``: task expansion, skipping finished tasks, nesting, contained failures."""

from __future__ import annotations

import dataclasses
import os

import pytest

from lumbar_bench.cli import main
from lumbar_bench.core.errors import ConfigError
from lumbar_bench.run import runner
from lumbar_bench.scale import sweep, tasks
from lumbar_bench.tracking.client import tracked_run
from lumbar_bench.tracking.names import SWEEP_TAG
from lumbar_bench.tracking.search import find_runs, get_run, search_runs


@pytest.fixture
def request_(tiny_phantom, tmp_path, tracking_uri):
    """A sweep of ``prior`` over folds 0-1, seed 0, on ``ci``, in process (the debug executor)."""
    return tasks.SweepRequest(
        approaches=("prior",),
        folds=(0, 1),
        seeds=(0,),
        subset="ci",
        data_dir=tiny_phantom,
        cache_dir=tmp_path / "cache",
        tracking_uri=tracking_uri,
        experiment="sweep-test",
        executor="debug",
        n_boot=20,
    )


def _cli_args(request: tasks.SweepRequest, seeds: str = "0,1") -> list[str]:
    return [
        "--no-progress",
        "sweep",
        "--approach",
        "prior",
        "--folds",
        "0-1",
        "--seeds",
        seeds,
        "--subset",
        "ci",
        "--data",
        str(request.data_dir),
        "--cache-dir",
        str(request.cache_dir),
        "--tracking-uri",
        request.tracking_uri,
        "--experiment",
        request.experiment,
        "--executor",
        "debug",
        "--bootstrap",
        "20",
    ]


def test_parse_ints_takes_ranges_and_lists():
    assert tasks.parse_ints("0-4", "--folds") == (0, 1, 2, 3, 4)
    assert tasks.parse_ints("2,0,1,2", "--seeds") == (0, 1, 2)
    assert tasks.parse_ints("0-1,5", "--folds") == (0, 1, 5)
    with pytest.raises(ConfigError, match="--seeds 'a,b'"):
        tasks.parse_ints("a,b", "--seeds")
    with pytest.raises(ConfigError, match="--folds ''"):
        tasks.parse_ints("", "--folds")


def test_dry_run_lists_every_task_and_runs_nothing(request_, capsys):
    assert main([*_cli_args(request_), "--dry-run"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[:5] for line in lines[:-1]] == [
        ["prior", "fold", str(f), "seed", str(s)] for f in (0, 1) for s in (0, 1)
    ]
    assert all(line.split()[-1] == "run" for line in lines[:-1])
    assert lines[-1] == "4 tasks: 4 to run, 0 skipped (finished), 0 invalid"
    assert search_runs(request_.tracking_uri, request_.experiment) == []


def test_plan_refuses_a_fold_the_split_lacks(request_):
    with pytest.raises(ConfigError, match="fold 9 does not exist"):
        tasks.plan(dataclasses.replace(request_, folds=(0, 9)))


def test_an_invalid_set_fails_its_tasks_as_runs_under_the_sweep(request_, capsys):
    assert main([*_cli_args(request_), "--set", "no_such_key=1"]) == 1
    out = capsys.readouterr().out
    assert out.count("FAILED prior fold") == 4 and "config: --set no_such_key: unknown key" in out
    runs = search_runs(request_.tracking_uri, request_.experiment)
    parent = next(r for r in runs if r.tag("kind") == "sweep")
    children = [r for r in runs if r.parent_id == parent.run_id]
    assert len(children) == 4 and {r.status for r in children} == {"FAILED"}
    assert {r.tag("failure_reason") for r in children} == {"config"}
    assert parent.status == "FINISHED" and parent.tag("sweep.failed") == "4"


@pytest.mark.slow
def test_sweep_nests_finished_runs_then_skips_them_and_redoes_a_deleted_one(request_):
    lines: list[str] = []
    first = sweep.sweep(request_, on_progress=lines.append)
    assert first.count("FINISHED") == 2 and first.count("FAILED") == 0
    assert "done 2, skipped 0, failed 0, running 0, ETA 0s" in lines[-1]
    children = find_runs(request_.tracking_uri, request_.experiment, parent_id=first.sweep_run_id)
    assert sorted(r.tag("fold") for r in children) == ["0", "1"]
    assert {r.status for r in children} == {"FINISHED"} and all(r.tag(tasks.JOB_TAG) for r in children)
    assert first.board is not None and first.board.rows[0].folds == (0, 1)
    assert set(first.board.run_ids) == {r.run_id for r in children}

    again = sweep.sweep(request_)
    assert again.count("SKIPPED") == 2 and again.count("FINISHED") == 0
    assert find_runs(request_.tracking_uri, request_.experiment, parent_id=again.sweep_run_id) == []
    assert set(again.board.run_ids) == {r.run_id for r in children}

    from mlflow import MlflowClient

    gone = next(r for r in children if r.tag("fold") == "1")
    MlflowClient(request_.tracking_uri).delete_run(gone.run_id)
    third = sweep.sweep(request_)
    redone = [o for o in third.outcomes if o.status == "FINISHED"]
    assert [(o.task.fold, o.task.seed) for o in redone] == [(1, 0)] and third.count("SKIPPED") == 1


@pytest.mark.slow
def test_a_failing_task_does_not_stop_the_others(request_, monkeypatch):
    fit_and_evaluate = runner._fit_and_evaluate

    def broken_on_fold_1(plan, *rest):
        if plan.request.fold == 1:
            raise RuntimeError("boom on fold 1")
        return fit_and_evaluate(plan, *rest)

    monkeypatch.setattr(runner, "_fit_and_evaluate", broken_on_fold_1)
    lines: list[str] = []
    result = sweep.sweep(request_, on_progress=lines.append)
    by_fold = {o.task.fold: o for o in result.outcomes}
    assert by_fold[0].status == "FINISHED" and by_fold[1].status == "FAILED"
    assert by_fold[1].reason == "RuntimeError" and by_fold[1].message == "boom on fold 1"
    assert "failed 1" in lines[-1] and "boom on fold 1" in "\n".join(lines)
    failed = get_run(request_.tracking_uri, by_fold[1].run_id)
    assert failed.status == "FAILED" and failed.parent_id == result.sweep_run_id
    assert failed.tag("failure_reason") == "RuntimeError" and failed.tag(tasks.JOB_TAG) == by_fold[1].job_id
    assert result.board.run_ids == [by_fold[0].run_id]


def test_slurm_executor_gets_the_resources_and_the_hard_budget_as_time(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"  # submitit looks for srun on PATH before it makes a SLURM executor
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    request = tasks.SweepRequest(
        ("prior",), executor="slurm", partition="gpu", gpus_per_task=1, cpus_per_task=8, mem_gb=32
    )
    assert sweep.parallelism(request, 6) == (6, 8)
    executor = sweep.make_executor(request, tmp_path / "jobs", threads=8)
    task = tasks.Task("prior", 0, 0, "ci", hard_minutes=2.0)
    executor.update_parameters(timeout_min=tasks.time_limit_min(task))
    params = executor._executor.parameters
    assert params["partition"] == "gpu" and params["gpus_per_node"] == 1 and params["cpus_per_task"] == 8
    assert params["mem"] == "32GB" and params["time"] == 2 + tasks.JOB_MARGIN_MIN


def test_local_parallelism_shares_the_cores(monkeypatch):
    monkeypatch.setattr(sweep, "worker_count", lambda workers: 8)
    local = tasks.SweepRequest(("prior",), executor="local")
    assert sweep.parallelism(local, 20) == (8, 1)
    assert sweep.parallelism(local, 2) == (8, 4)
    assert sweep.parallelism(dataclasses.replace(local, cpus_per_task=4), 20) == (2, 4)
    assert sweep.parallelism(dataclasses.replace(local, executor="debug"), 20) == (1, 0)


class _DeadJob:
    """A submitit job that died (as ``job.result()`` reports a killed or timed-out one)."""

    job_id = "4242"

    def result(self) -> None:
        from submitit.core.utils import UncompletedJobError

        raise UncompletedJobError("Job 4242 (task: 0) has not produced any output (state: TIMEOUT)")


def test_a_dead_job_ends_its_running_run_failed_with_the_job_id(request_):
    task = dataclasses.replace(tasks.plan(request_)[0], config_hash="abc")
    with tracked_run(request_.tracking_uri, request_.experiment, "sweep") as parent:
        left = parent.child("prior-f0-ci", {**task.tags(), SWEEP_TAG: parent.run_id})
        outcome = sweep._collect(request_, parent.run_id, _DeadJob(), task)
    assert outcome.status == "FAILED" and outcome.reason == "budget" and outcome.run_id == left.run_id
    run = get_run(request_.tracking_uri, left.run_id)
    assert run.status == "FAILED" and run.tag(tasks.JOB_TAG) == "4242"
    assert "TIMEOUT" in run.tag("failure_message")


@pytest.mark.slow
def test_local_executor_runs_tasks_in_processes_and_prints_the_board(request_, capsys):
    args = _cli_args(request_, seeds="0")
    assert main([*args[: args.index("--executor")], "--executor", "local", "--max-parallel", "2"]) == 0
    out = capsys.readouterr()
    assert "2 finished, 0 skipped, 0 failed" in out.out and "lumbar-bench leaderboard" in out.out
    assert "[2/2] prior fold" in out.err and "running 0, ETA 0s" in out.err
    (parent,) = find_runs(request_.tracking_uri, request_.experiment, tags={"kind": "sweep"})
    runs = find_runs(request_.tracking_uri, request_.experiment, parent_id=parent.run_id)
    assert len(runs) == 2 and {r.status for r in runs} == {"FINISHED"}
    assert all(r.tag(tasks.JOB_TAG).isdigit() for r in runs)  # a local job's id is its process id
