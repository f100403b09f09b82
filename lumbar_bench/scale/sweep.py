"""``lumbar-bench sweep``: approaches x folds x seeds, one ``run`` per task, fanned out through submitit.

The sweep is a parent MLflow run and each task's run is nested under it (tagged ``sweep_run_id``).
A task whose (approach, config hash, split digest, data digest, fold, seed, subset) already has a
FINISHED run in the store is skipped, so a sweep killed half-way finishes when run again. The
store is opened (created and migrated) once, here, before any worker writes to it: parallel first
writers on a fresh sqlite file all fail in MLflow's migration race. A task that fails, or whose job
dies, is recorded as a FAILED run with its reason and job id; it does not stop the others.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import submitit

from lumbar_bench.board import leaderboard as lb
from lumbar_bench.core.errors import LumbarBenchError
from lumbar_bench.core.parallel import worker_count
from lumbar_bench.core.paths import default_cache_dir
from lumbar_bench.core.signals import terminate_as_interrupt
from lumbar_bench.run import runner
from lumbar_bench.run.plan import RunRequest
from lumbar_bench.scale import slurm_state
from lumbar_bench.scale.slurm_state import TimeLimitReached, time_limit_as_budget
from lumbar_bench.scale.tasks import (
    JOB_TAG,
    POLL_S,
    Outcome,
    SweepRequest,
    SweepResult,
    Task,
    plan,
    run_request,
    time_limit_min,
)
from lumbar_bench.tracking.client import TrackedRun, set_tags, tracked_run
from lumbar_bench.tracking.names import SWEEP_TAG, absolute_uri
from lumbar_bench.tracking.search import find_runs

log = logging.getLogger(__name__)


def run_task(request: RunRequest) -> Outcome:
    """Run one task in a worker; an error becomes a FAILED outcome (the runner has failed its run)."""
    task = Task(request.approach, request.fold, request.seed, request.subset)
    t0 = time.monotonic()
    try:
        with time_limit_as_budget():
            result = runner.run(request)
    except (Exception, TimeLimitReached) as exc:  # noqa: BLE001 - a failed task must not stop the sweep
        log.exception("%s failed", task.label)
        reason = getattr(exc, "reason", None) or type(exc).__name__
        return Outcome(task, "FAILED", reason=reason, message=str(exc)[:500], seconds=time.monotonic() - t0)
    return Outcome(task, "FINISHED", run_id=result.run_id, seconds=time.monotonic() - t0)


def parallelism(request: SweepRequest, n_tasks: int) -> tuple[int, int]:
    """(tasks at once, torch threads per task) for the executor, from the cores where it is ``local``."""
    if request.executor == "debug":
        return 1, request.cpus_per_task
    if request.executor == "slurm":
        return request.max_parallel or max(1, n_tasks), request.cpus_per_task
    cores = worker_count(0)
    at_once = request.max_parallel or max(1, cores // max(1, request.cpus_per_task))
    return at_once, request.cpus_per_task or max(1, cores // min(at_once, max(1, n_tasks)))


def make_executor(request: SweepRequest, folder: Path, threads: int) -> Any:
    """A submitit executor for ``request.executor`` with the sweep's resources (time is set per task)."""
    executor = submitit.AutoExecutor(folder=folder, cluster=request.executor)
    params: dict[str, Any] = {"name": "lumbar-bench", "gpus_per_node": request.gpus_per_task}
    if threads:
        params["cpus_per_task"] = threads
    if request.mem_gb:
        params["mem_gb"] = request.mem_gb
    if request.partition:
        params["slurm_partition"] = request.partition
    executor.update_parameters(**params)
    return executor


@dataclass
class _Tally:
    """Running counts of a sweep, for its progress lines."""

    total: int
    parallel: int
    finished: int = 0
    skipped: int = 0
    failed: int = 0
    task_seconds: float = 0.0

    def add(self, outcome: Outcome, running: int) -> str:
        """Count ``outcome`` and return the progress line: counts so far and the ETA."""
        self.finished += outcome.status == "FINISHED"
        self.failed += outcome.status == "FAILED"
        ran = self.finished + self.failed
        self.task_seconds += outcome.seconds
        left = self.total - ran - self.skipped
        eta = "?" if not ran else _duration(self.task_seconds / ran * left / max(1, min(self.parallel, left)))
        what = f"{outcome.status.lower()} in {outcome.seconds:.0f}s"
        if outcome.status == "FAILED":
            what += f" ({outcome.reason}: {outcome.message})"
        return (
            f"[{ran + self.skipped}/{self.total}] {outcome.task.label} {what} | done {self.finished}, "
            f"skipped {self.skipped}, failed {self.failed}, running {running}, ETA {eta}"
        )


def _duration(seconds: float) -> str:
    """``1h02m``, ``3m05s`` or ``12s``."""
    s = round(seconds)
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def sweep(request: SweepRequest, on_progress: Callable[[str], None] = log.info) -> SweepResult:
    """Run every task of ``request`` not yet FINISHED, nested under a sweep run; rank what it covers.

    ``on_progress`` receives one line per finished task (and one for the skipped ones at the start).
    """
    request = replace(request, tracking_uri=absolute_uri(request.tracking_uri))
    tasks = plan(request)
    name = f"sweep-{'+'.join(request.approaches)}-{request.subset}"
    tags = {"kind": "sweep", "subset": request.subset, "executor": request.executor}
    # creating the parent run creates and migrates the store once, before any worker writes to it
    with tracked_run(request.tracking_uri, request.experiment, name, tags) as parent:
        parent.log_params(
            {
                "approaches": ",".join(request.approaches),
                "folds": ",".join(map(str, request.folds)),
                "seeds": ",".join(map(str, request.seeds)),
                "overrides": " ".join(request.overrides),
                "tasks": len(tasks),
            }
        )
        outcomes = _fan_out(request, tasks, parent.run_id, on_progress)
        counts = {s: sum(o.status == s for o in outcomes) for s in ("FINISHED", "SKIPPED", "FAILED")}
        parent.set_tags({f"sweep.{s.lower()}": n for s, n in counts.items()})
    return SweepResult(parent.run_id, tuple(outcomes), _board(request, tasks, outcomes))


def _fan_out(
    request: SweepRequest, tasks: list[Task], sweep_id: str, on_progress: Callable[[str], None]
) -> list[Outcome]:
    """Submit the tasks to run, at most ``parallelism`` at once, and collect each as it ends."""
    todo = [t for t in tasks if not t.error and not t.done_run_id]
    outcomes = [Outcome(t, "SKIPPED", run_id=t.done_run_id) for t in tasks if t.done_run_id]
    at_once, threads = parallelism(request, len(todo))
    tally = _Tally(len(tasks), at_once, skipped=len(outcomes))
    if outcomes:
        on_progress(f"[{len(outcomes)}/{len(tasks)}] skipped {len(outcomes)} tasks with a FINISHED run")
    for task in (t for t in tasks if t.error):
        outcomes.append(
            _settle(request, sweep_id, Outcome(task, "FAILED", reason="config", message=task.error))
        )
        on_progress(tally.add(outcomes[-1], 0))
    if not todo:
        return outcomes
    cache_dir = request.cache_dir or default_cache_dir()
    executor = make_executor(request, request.folder or cache_dir / "sweeps", threads)
    watcher = _state_watcher(request)
    pending, running = list(todo), {}
    try:
        with terminate_as_interrupt():  # SIGTERM too: a killed sweep cancels its jobs
            while pending or running:
                while pending and len(running) < at_once:
                    task = pending.pop(0)
                    executor.update_parameters(timeout_min=time_limit_min(task, request.time_limit_min))
                    job = executor.submit(run_task, run_request(request, task, sweep_id, threads))
                    running[job] = task
                    if watcher is not None:
                        watcher.adopt(job)
                ended = [job for job in running if job.done()]
                for job in ended:
                    outcomes.append(_collect(request, sweep_id, job, running.pop(job)))
                    on_progress(tally.add(outcomes[-1], len(running)))
                if not ended:
                    time.sleep(POLL_S)
    except BaseException:  # interrupted: leave no job behind; the next sweep redoes the unfinished tasks
        for job in running:
            job.cancel(check=False)
        raise
    return outcomes


def _state_watcher(request: SweepRequest) -> Any:
    """For ``slurm``, a job-state watcher that works without SLURM accounting; None otherwise."""
    if request.executor != "slurm":
        return None
    return slurm_state.JobStateWatcher(slurm_state.has_accounting())


def _collect(request: SweepRequest, sweep_id: str, job: Any, task: Task) -> Outcome:
    """The outcome of a job that ended; a job that died (killed, timed out) becomes a FAILED task."""
    job_id = str(job.job_id)
    try:
        outcome = replace(job.result(), task=task, job_id=job_id)
    except Exception as exc:  # noqa: BLE001 - submitit's UncompletedJobError or FailedJobError
        text = str(exc).strip()
        reason = "budget" if "TIMEOUT" in text or "timed-out" in text else "job_died"
        outcome = Outcome(task, "FAILED", reason=reason, message=text.splitlines()[-1][:500], job_id=job_id)
    if outcome.status == "FAILED":
        return _settle(request, sweep_id, outcome)
    set_tags(request.tracking_uri, outcome.run_id, {JOB_TAG: job_id})
    return outcome


def _settle(request: SweepRequest, sweep_id: str, outcome: Outcome) -> Outcome:
    """Leave a failed task one FAILED run under the sweep, with its reason and job id; returns it."""
    uri, task = request.tracking_uri, outcome.task
    tags = {k: v for k, v in task.tags().items() if v != ""}
    runs = find_runs(uri, request.experiment, parent_id=sweep_id, tags=tags)
    for run in runs:
        if run.status == "RUNNING":  # the job died before the runner could end its run
            TrackedRun(uri, run.run_id).fail(outcome.reason, LumbarBenchError(outcome.message))
        if outcome.job_id:
            set_tags(uri, run.run_id, {JOB_TAG: outcome.job_id})
    if runs:
        return replace(outcome, run_id=runs[-1].run_id)
    child = TrackedRun(uri, sweep_id).child(
        f"{task.approach}-f{task.fold}-{task.subset}", {**tags, SWEEP_TAG: sweep_id}
    )
    if outcome.job_id:
        child.set_tags({JOB_TAG: outcome.job_id})
    child.fail(outcome.reason, LumbarBenchError(outcome.message))
    return replace(outcome, run_id=child.run_id)


def _board(request: SweepRequest, tasks: list[Task], outcomes: list[Outcome]) -> Any:
    """The leaderboard (seeds pooled) of the sweep's FINISHED and skipped runs; None without any."""
    ids = tuple(o.run_id for o in outcomes if o.status in ("FINISHED", "SKIPPED"))
    if not ids:
        return None
    board_request = lb.BoardRequest(
        tracking_uri=request.tracking_uri,
        experiment=request.experiment,
        split=tasks[0].split_digest,
        subset=request.subset,
        n_boot=request.n_boot,
        run_ids=ids,
    )
    return lb.build(board_request)
