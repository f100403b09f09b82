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
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from lumbar_bench.approaches.registry import get_spec
from lumbar_bench.config import SUBSETS
from lumbar_bench.core.errors import ConfigError, LumbarBenchError
from lumbar_bench.core.parallel import worker_count
from lumbar_bench.core.paths import default_cache_dir
from lumbar_bench.core.signals import terminate_as_interrupt
from lumbar_bench.data import defaults
from lumbar_bench.run.plan import RunRequest, resolve_config
from lumbar_bench.tracking.client import TrackedRun, set_tags, tracked_run
from lumbar_bench.tracking.names import DEFAULT_EXPERIMENT, DEFAULT_TRACKING_URI, SWEEP_TAG, absolute_uri
from lumbar_bench.tracking.search import find_runs

log = logging.getLogger(__name__)

EXECUTORS = ("local", "slurm", "debug")
#: Minutes a job gets beyond the approach's hard budget: loading data, scoring, logging the model.
JOB_MARGIN_MIN = 10
#: Seconds between looks at the running jobs.
POLL_S = 0.5
#: The tag a task run carries naming the job that ran it (a SLURM job id on a cluster).
JOB_TAG = "sweep_job_id"


@dataclass(frozen=True)
class SweepRequest:
    """Everything ``lumbar-bench sweep`` was asked to do."""

    approaches: tuple[str, ...]
    folds: tuple[int, ...] = (0,)
    seeds: tuple[int, ...] = (0,)
    subset: str = "ci"
    overrides: tuple[str, ...] = ()
    data_dir: Path | None = None
    split_path: Path | None = None
    cache_dir: Path | None = None
    device: str = "auto"
    tracking_uri: str = DEFAULT_TRACKING_URI
    experiment: str = DEFAULT_EXPERIMENT
    executor: str = "local"
    #: Tasks running at once; 0: as many as fit the cores (``local``), one (``debug``), all (``slurm``).
    max_parallel: int = 0
    partition: str | None = None
    gpus_per_task: int = 0
    #: CPU cores (and torch threads) per task; 0: the cores shared out over ``max_parallel`` tasks.
    cpus_per_task: int = 0
    mem_gb: float | None = None
    #: Every task's job time limit in minutes (SLURM ``--time``); 0: its hard budget plus
    #: :data:`JOB_MARGIN_MIN`. A job past its limit ends FAILED with reason ``budget``.
    time_limit_min: int = 0
    #: Where submitit keeps its job files and logs (default: ``<cache>/sweeps``).
    folder: Path | None = None
    n_boot: int = 1000


@dataclass(frozen=True)
class Task:
    """One ``run`` of a sweep, with what makes it the same as an earlier run (its identity)."""

    approach: str
    fold: int
    seed: int
    subset: str
    config_hash: str = ""
    split_digest: str = ""
    data_digest: str = ""
    hard_minutes: float = 0.0
    #: Why the task cannot run (e.g. an ``--set`` key the approach lacks); empty when it can.
    error: str = ""
    #: The FINISHED run that already did this task; the sweep skips it.
    done_run_id: str = ""

    @property
    def label(self) -> str:
        """``approach fold F seed S``: how progress lines and errors name the task."""
        return f"{self.approach} fold {self.fold} seed {self.seed}"

    def tags(self) -> dict[str, Any]:
        """The identity tags every ``lumbar-bench run`` carries, for finding or recording this task."""
        return {
            "approach": self.approach,
            "config_hash": self.config_hash,
            "split_digest": self.split_digest,
            "data_digest": self.data_digest,
            "fold": self.fold,
            "seed": self.seed,
            "subset": self.subset,
        }


@dataclass(frozen=True)
class Outcome:
    """How a task ended: FINISHED, FAILED or SKIPPED, its run, and why it failed."""

    task: Task
    status: str
    run_id: str = ""
    reason: str = ""
    message: str = ""
    job_id: str = ""
    seconds: float = 0.0


@dataclass(frozen=True)
class SweepResult:
    """A finished sweep: its parent run, each task's outcome and the board of its finished runs."""

    sweep_run_id: str
    outcomes: tuple[Outcome, ...]
    board: Any = None

    def count(self, status: str) -> int:
        """Tasks that ended with ``status``."""
        return sum(o.status == status for o in self.outcomes)


def parse_ints(text: str, flag: str) -> tuple[int, ...]:
    """``0-4`` or ``0,1,2`` (or ``0-2,5``) as sorted distinct integers; a bad one names ``flag``."""
    values: set[int] = set()
    try:
        for part in filter(None, (p.strip() for p in text.split(","))):
            low, sep, high = part.partition("-")
            values.update(range(int(low), int(high) + 1) if sep else [int(low)])
    except ValueError:
        raise ConfigError(f"{flag} {text!r}: expected numbers like 0-4 or 0,1,2") from None
    if not values or min(values) < 0:
        raise ConfigError(f"{flag} {text!r}: expected non-negative numbers like 0-4 or 0,1,2")
    return tuple(sorted(values))


def plan(request: SweepRequest) -> list[Task]:
    """Expand the request into tasks (approach, fold, seed), marking those already FINISHED in the store."""
    if request.executor not in EXECUTORS:
        raise ConfigError(f"--executor {request.executor!r}: choose one of {', '.join(EXECUTORS)}")
    if request.subset not in SUBSETS:
        raise ConfigError(f"--subset {request.subset!r}: choose one of {', '.join(SUBSETS)}")
    cache_dir = request.cache_dir or default_cache_dir()
    data = defaults.load_data(request.data_dir, cache_dir, progress=False)
    split, _ = defaults.resolve_split(data, request.split_path, cache_dir)
    bad_folds = [f for f in request.folds if f >= split.folds]
    if bad_folds:
        raise ConfigError(f"--folds: fold {bad_folds[0]} does not exist; the split has {split.folds} folds")
    identity = {"subset": request.subset, "split_digest": split.digest, "data_digest": data.data_digest()}
    tasks = []
    for approach in request.approaches:
        hard_minutes = get_spec(approach).budget(request.subset).hard_seconds / 60
        base = Task(approach, 0, 0, hard_minutes=hard_minutes, **identity)
        try:
            base = replace(base, config_hash=resolve_config(approach, request.subset, request.overrides)[1])
        except LumbarBenchError as exc:
            base = replace(base, error=str(exc))
        done = {} if base.error else _finished(request, base)
        tasks += [
            replace(base, fold=f, seed=s, done_run_id=done.get((f, s), ""))
            for f in request.folds
            for s in request.seeds
        ]
    return tasks


def _finished(request: SweepRequest, base: Task) -> dict[tuple[int, int], str]:
    """(fold, seed) -> id of the latest FINISHED run with ``base``'s approach, config, split, data, subset."""
    wanted = {k: v for k, v in base.tags().items() if k not in ("fold", "seed")}
    runs = find_runs(request.tracking_uri, request.experiment, status="FINISHED", tags=wanted)
    done: dict[tuple[int, int], str] = {}
    for run in sorted(runs, key=lambda r: r.start_time):
        done[(int(run.tag("fold", "0")), int(run.tag("seed", "0")))] = run.run_id
    return done


def describe(tasks: list[Task]) -> str:
    """One line per task: what it is and whether it would run, be skipped or fail (``--dry-run``)."""
    lines = []
    for t in tasks:
        if t.error:
            what = f"fail    {t.error}"
        elif t.done_run_id:
            what = f"skip    finished run {t.done_run_id}"
        else:
            what = "run"
        lines.append(
            f"{t.approach:<16} fold {t.fold}  seed {t.seed}  {t.subset:<5} {t.config_hash:<12}  {what}"
        )
    todo = sum(not t.error and not t.done_run_id for t in tasks)
    skipped = sum(bool(t.done_run_id) for t in tasks)
    invalid = len(tasks) - todo - skipped
    lines.append(f"{len(tasks)} tasks: {todo} to run, {skipped} skipped (finished), {invalid} invalid")
    return "\n".join(lines)


def run_task(request: RunRequest) -> Outcome:
    """Run one task in a worker; an error becomes a FAILED outcome (the runner has failed its run)."""
    from lumbar_bench.run.runner import run
    from lumbar_bench.scale.slurm_state import TimeLimitReached, time_limit_as_budget

    task = Task(request.approach, request.fold, request.seed, request.subset)
    t0 = time.monotonic()
    try:
        with time_limit_as_budget():
            result = run(request)
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
    import submitit

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


def time_limit_min(task: Task, override: int = 0) -> int:
    """A task's job time limit in minutes (SLURM ``--time``): ``override``, else hard budget plus margin."""
    return override or math.ceil(task.hard_minutes) + JOB_MARGIN_MIN


def run_request(request: SweepRequest, task: Task, sweep_run_id: str, threads: int) -> RunRequest:
    """The ``RunRequest`` of one task, nested under the sweep's run."""
    return RunRequest(
        approach=task.approach,
        data_dir=request.data_dir,
        split_path=request.split_path,
        fold=task.fold,
        subset=task.subset,
        device=request.device,
        seed=task.seed,
        tracking_uri=request.tracking_uri,
        experiment=request.experiment,
        overrides=request.overrides,
        cache_dir=request.cache_dir,
        threads=threads,
        progress=False,
        sweep_run_id=sweep_run_id,
    )


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
    from lumbar_bench.scale import slurm_state

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
    from lumbar_bench.board import leaderboard as lb

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
