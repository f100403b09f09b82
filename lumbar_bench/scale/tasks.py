"""What a sweep runs: its request, the tasks (approach x fold x seed) and which are done already.

A task whose (approach, config hash, split digest, data digest, fold, seed, subset) already has a
FINISHED run in the store is skipped (:func:`plan`), so a sweep killed half-way finishes when run
again. Nothing here starts a job: :mod:`lumbar_bench.scale.sweep` does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from lumbar_bench.approaches.registry import get_spec
from lumbar_bench.config import SUBSETS
from lumbar_bench.core.errors import ConfigError, LumbarBenchError
from lumbar_bench.core.paths import default_cache_dir
from lumbar_bench.data import defaults
from lumbar_bench.run.plan import RunRequest, resolve_config
from lumbar_bench.tracking.names import DEFAULT_EXPERIMENT, DEFAULT_TRACKING_URI
from lumbar_bench.tracking.search import find_runs

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
