"""``lumbar-bench sweep --executor slurm`` on a real one-node SLURM cluster (the ``slurm_cluster`` fixture).

Each task is a SLURM job (sbatch through submitit); the tests read back what landed in MLflow
and what SLURM says of the jobs. The module's sweeps share one store, the session's
tracking server, each in its own experiment. The time-limit sweep waits a minute or more for
SLURM's clock, so it runs in the background beside the 2x2 sweep.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lumbar_bench.scale import sweep, tasks
from lumbar_bench.tracking.search import find_runs, get_run, search_runs

pytestmark = [pytest.mark.slurm, pytest.mark.tracking_server, pytest.mark.slow]

CLI = [sys.executable, "-m", "lumbar_bench.cli", "--no-progress", "sweep"]


@pytest.fixture(scope="module")
def sweep_tracking_uri(mlflow_server: str) -> str:
    """The store the module's sweeps share: the session's tracking server (PostgreSQL + mlflow server).

    A team's SLURM sweeps write to such a server from every node; the sqlite store's
    parallel writers are covered by ``tests/tracking/test_concurrency.py``.
    """
    search_runs(mlflow_server, "none")
    return mlflow_server


def sweep_args(request: tasks.SweepRequest) -> list[str]:
    """The ``lumbar-bench sweep`` command line of ``request`` (one seed)."""
    args = [*CLI, "--subset", request.subset, "--executor", request.executor]
    args += [a for name in request.approaches for a in ("--approach", name)]
    args += ["--folds", ",".join(map(str, request.folds)), "--seeds", ",".join(map(str, request.seeds))]
    args += [a for o in request.overrides for a in ("--set", o)]
    args += ["--data", str(request.data_dir), "--cache-dir", str(request.cache_dir)]
    args += ["--tracking-uri", request.tracking_uri, "--experiment", request.experiment]
    args += ["--partition", str(request.partition), "--cpus-per-task", str(request.cpus_per_task)]
    args += ["--max-parallel", str(request.max_parallel), "--time-limit-min", str(request.time_limit_min)]
    return [*args, "--bootstrap", str(request.n_boot)]


def base_request(cluster: Any, data: Path, root: Path, uri: str, experiment: str) -> tasks.SweepRequest:
    """A ``prior`` sweep over folds 0-1 on ``ci`` through ``cluster``, one CPU per task.

    Its job files go to ``<cache>/sweeps``, the default, as they do from the command line.
    """
    return tasks.SweepRequest(
        approaches=("prior",),
        folds=(0, 1),
        subset="ci",
        data_dir=data,
        cache_dir=root / "cache",
        tracking_uri=uri,
        experiment=experiment,
        executor="slurm",
        partition=cluster.partition,
        cpus_per_task=1,
        n_boot=20,
    )


def interrupt(proc: subprocess.Popen) -> int:
    """SIGTERM ``proc`` (it cancels its jobs, as on Ctrl-C) and return its exit code; kill it if it hangs.

    SIGTERM and SIGINT take one path (``signals.terminate_as_interrupt``); SIGTERM is what
    ``kill`` or a scheduler sends, and without that path it left the sweep's jobs running.
    """
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def wait_for(what: Callable[[], Any], timeout: float, every: float = 0.5) -> Any:
    """``what()`` once it is truthy; fails the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not (found := what()):
        if time.monotonic() > deadline:
            pytest.fail(f"nothing after {timeout:.0f} s")
        time.sleep(every)
    return found


def ended_states(cluster: Any, job_ids: list[str], timeout: float = 30.0) -> dict[str, str]:
    """How SLURM says ``job_ids`` ended (``COMPLETED``, ``TIMEOUT``...), once none is running.

    A job leaves its result a moment before SLURM ends it, so this waits up to ``timeout``.
    """

    def ended() -> dict[str, str]:
        args = ["--noheader", "--states=all", "--format=%i %T", f"--jobs={','.join(job_ids)}"]
        states = dict(line.split() for line in cluster.command("squeue", *args).splitlines())
        return {} if {"PENDING", "RUNNING", "COMPLETING"} & set(states.values()) else states

    return wait_for(ended, timeout)


@pytest.fixture
def slurm_request(slurm_cluster, tiny_phantom, tmp_path, sweep_tracking_uri, request) -> tasks.SweepRequest:
    """The base sweep for one test, in an experiment named after the test."""
    name = request.node.originalname.removeprefix("test_")[:40]
    return base_request(slurm_cluster, tiny_phantom, tmp_path, sweep_tracking_uri, name)


@dataclass
class Background:
    """A ``lumbar-bench sweep`` running in a subprocess, what it was asked and its stderr file."""

    request: tasks.SweepRequest
    proc: subprocess.Popen
    log: Path
    started: float

    def wait(self, timeout: float) -> tuple[str, float]:
        """Its stdout once it ends, and its wall time in seconds."""
        out, _ = self.proc.communicate(timeout=timeout)
        return out, time.monotonic() - self.started


@pytest.fixture(scope="module")
def time_limit_sweep(
    slurm_cluster, tiny_phantom, tmp_path_factory, sweep_tracking_uri
) -> Iterator[Background]:
    """A sweep whose one task (``resnet18`` for 1000 epochs) outlives its 3-minute SLURM ``--time``.

    SLURM sends submitit's warning (``--signal=USR2@90``) up to 30 s early, from a check every
    30 s: with a 1- or 2-minute limit it can come before the job has set up submitit's handler,
    and kill it; with 3 it comes 60-90 s in. To spend that wait on something, the sweep starts
    in the background, beside the 2x2 sweep, on one of the node's two CPUs.
    """
    root = tmp_path_factory.mktemp("time-limit")
    request = dataclasses.replace(
        base_request(slurm_cluster, tiny_phantom, root, sweep_tracking_uri, "time_limit"),
        approaches=("resnet18",),
        folds=(0,),
        overrides=("epochs=1000", "patience=1000"),  # minutes of training, more than the limit allows
        time_limit_min=3,
    )
    log = root / "sweep.err"
    with log.open("w") as err:
        proc = subprocess.Popen(sweep_args(request), stdout=subprocess.PIPE, stderr=err, text=True)
        yield Background(request, proc, log, time.monotonic())
        if proc.poll() is None:
            interrupt(proc)


def test_a_2x2_sweep_through_slurm_lands_every_run_in_mlflow(slurm_cluster, slurm_request, time_limit_sweep):
    request = dataclasses.replace(slurm_request, approaches=("prior", "resnet18"))  # beside time_limit_sweep
    t0 = time.monotonic()
    result = sweep.sweep(request, on_progress=print)
    print(f"2x2 sweep through SLURM: {time.monotonic() - t0:.1f} s")
    assert result.count("FINISHED") == 4, [(o.task.label, o.reason, o.message) for o in result.outcomes]
    runs = find_runs(request.tracking_uri, request.experiment, parent_id=result.sweep_run_id)
    assert sorted((r.tag("approach"), r.tag("fold")) for r in runs) == [
        ("prior", "0"),
        ("prior", "1"),
        ("resnet18", "0"),
        ("resnet18", "1"),
    ]
    assert {r.status for r in runs} == {"FINISHED"}
    job_ids = {r.run_id: r.tag(tasks.JOB_TAG) for r in runs}
    assert job_ids == {o.run_id: o.job_id for o in result.outcomes}
    assert all(j.isdigit() for j in job_ids.values()) and len(set(job_ids.values())) == 4
    assert set(ended_states(slurm_cluster, list(job_ids.values())).values()) == {"COMPLETED"}
    parent = get_run(request.tracking_uri, result.sweep_run_id)
    assert parent.status == "FINISHED" and parent.tag("executor") == "slurm"
    assert sorted(row.approach for row in result.board.rows) == ["prior", "resnet18"]


def test_a_sweep_killed_half_way_finishes_when_run_again_without_redoing(
    slurm_cluster, slurm_request, tmp_path
):
    request = dataclasses.replace(slurm_request, max_parallel=1)
    uri, experiment = request.tracking_uri, request.experiment

    def finished() -> dict[str, str]:
        runs = find_runs(uri, experiment, status="FINISHED", tags={"approach": "prior"})
        return {r.run_id: r.tag("fold") for r in runs}

    progress = tmp_path / "sweep.err"
    with progress.open("w") as err:
        first = subprocess.Popen(sweep_args(request), stdout=subprocess.DEVNULL, stderr=err)
        wait_for(lambda: "[1/2] prior fold" in progress.read_text(), timeout=120)  # one task collected
        assert interrupt(first) == 130
    done_before = finished()
    assert len(done_before) == 1, progress.read_text()[-2000:]
    jobs = sorted(p.name.split("_")[0] for p in (request.cache_dir / "sweeps").glob("*_submitted.pkl"))
    states = ended_states(slurm_cluster, jobs)  # the interrupted sweep left no job behind
    assert states[jobs[0]] == "COMPLETED" and set(states.values()) <= {"COMPLETED", "CANCELLED"}

    again = sweep.sweep(request)
    assert {o.run_id for o in again.outcomes if o.status == "SKIPPED"} == set(done_before)
    assert again.count("FINISHED") == 1 and again.count("FAILED") == 0
    after = finished()
    assert sorted(after.values()) == ["0", "1"] and set(done_before) <= set(after)
    runs = find_runs(uri, experiment, tags={"approach": "prior"})
    assert "RUNNING" not in {r.status for r in runs}  # a cancelled job's run, if any, was closed


def test_a_task_over_its_slurm_time_limit_ends_failed_with_reason_budget(slurm_cluster, time_limit_sweep):
    out, wall = time_limit_sweep.wait(timeout=300)
    print(f"time-limit sweep (1 task, --time-limit-min 3): {wall:.1f} s")
    request = time_limit_sweep.request
    assert time_limit_sweep.proc.returncode == 1, time_limit_sweep.log.read_text()[-2000:]
    assert "0 finished, 0 skipped, 1 failed" in out
    assert "FAILED resnet18 fold 0 seed 0: budget: the job reached its time limit" in out
    (parent,) = find_runs(request.tracking_uri, request.experiment, tags={"kind": "sweep"})
    (run,) = find_runs(request.tracking_uri, request.experiment, parent_id=parent.run_id)
    assert run.status == "FAILED" and run.tag("failure_reason") == "budget"
    assert parent.tag("sweep.failed") == "1"
    job_id = run.tag(tasks.JOB_TAG)
    sbatch = (request.cache_dir / "sweeps" / f"{job_id}_submission.sh").read_text()
    assert "#SBATCH --time=3\n" in sbatch and "#SBATCH --signal=USR2@90\n" in sbatch
    # the job stopped on SLURM's time-limit signal and ended by itself, before SLURM had to kill it
    assert ended_states(slurm_cluster, [job_id]) == {job_id: "COMPLETED"}


def test_job_states_come_from_squeue_where_the_cluster_has_no_accounting(slurm_cluster, tmp_path):
    import submitit

    from lumbar_bench.scale import slurm_state

    assert not slurm_state.has_accounting()  # sacct: "Slurm accounting storage is disabled"
    executor = submitit.AutoExecutor(folder=tmp_path / "jobs", cluster="slurm")
    executor.update_parameters(timeout_min=5, slurm_partition=slurm_cluster.partition, cpus_per_task=1)
    job = executor.submit(time.sleep, 300)
    watcher = slurm_state.JobStateWatcher(accounting=False, delay_s=1)
    watcher.adopt(job)
    wait_for(lambda: watcher.get_state(job.job_id, mode="force") == "RUNNING", timeout=30)
    slurm_cluster.command("scancel", job.job_id)
    wait_for(job.done, timeout=15)  # a job that left no result: only its state says it ended
    assert job.state == "CANCELLED"
    assert type(job).watcher.get_state(job.job_id, mode="force") == "UNKNOWN"  # submitit's own, via sacct


def test_the_fixture_points_slurm_clients_at_the_cluster(slurm_cluster):
    assert os.environ["SLURM_CONF"] == str(slurm_cluster.conf)
    assert slurm_cluster.command("sinfo", "--noheader", "--format=%R %D").split() == ["debug", "1"]
    assert slurm_cluster.start_seconds < 30
