"""What a run hands an approach besides its config and the data: folders, device, seed, budget, loggers.

The runner builds one :class:`RunContext` per run; approaches read it and call its
loggers and compute-ledger hooks, and never import the tracking backend. What an approach
measured comes back as a :class:`~lumbar_bench.approaches.base.FitReport`, not through here.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from lumbar_bench.core.distributed import DistInfo

log = logging.getLogger(__name__)

MetricLogger = Callable[[str, float, int | None], None]
ArtifactLogger = Callable[[Path, str | None], None]


def _no_metric(key: str, value: float, step: int | None = None) -> None:
    log.debug("metric %s=%s step=%s", key, value, step)


def _no_artifact(path: Path, artifact_path: str | None = None) -> None:
    log.debug("artifact %s -> %s", path, artifact_path)


class NullRun:
    """Stands in for a tracking run where nothing is tracked (tests, ``predict``)."""

    def log_metric(self, key: str, value: float, step: int | None = None) -> None:
        """Drop a metric."""
        _no_metric(key, value, step)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        """Drop metrics."""

    def log_params(self, params: dict[str, object]) -> None:
        """Drop params."""

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        """Drop an artifact."""
        _no_artifact(path, artifact_path)


def _no_checkpoint() -> None:
    log.debug("checkpoint written")


def _no_resume(done: bool) -> float:
    log.debug("resumed (training done: %s)", done)
    return 0.0


@contextlib.contextmanager
def _no_nested(name: str) -> Iterator[NullRun]:
    yield NullRun()


@dataclass
class RunContext:
    """Everything an approach may use besides its config and the data.

    ``workdir`` is private to this (approach, config, split, fold, subset, seed), so
    checkpoints written there let an interrupted run resume. ``cache_dir`` is shared
    between approaches for stage outputs keyed by their config hash.
    """

    workdir: Path
    cache_dir: Path
    device: str = "cpu"
    seed: int = 0
    subset: str = "ci"
    #: ``time.monotonic()`` value after which training should stop (soft budget); None = no limit.
    deadline: float | None = None
    progress: bool = False
    log_metric: MetricLogger = field(default=_no_metric)
    log_artifact: ArtifactLogger = field(default=_no_artifact)
    #: ``with ctx.nested_run("stage-1") as child:`` opens a nested tracking run; ``child`` has
    #: ``log_metric``, ``log_metrics``, ``log_params`` and ``log_artifact``.
    nested_run: Callable[[str], contextlib.AbstractContextManager] = field(default=_no_nested)
    #: The runner's compute ledger; approaches call :meth:`checkpointed` and :meth:`resumed`.
    on_checkpoint: Callable[[], None] = field(default=_no_checkpoint)
    on_resume: Callable[[bool], float] = field(default=_no_resume)
    #: This process's place in a torchrun job (one process by default); see
    #: :mod:`lumbar_bench.core.distributed`.
    dist: DistInfo = field(default_factory=DistInfo)

    def budget_left(self) -> float:
        """Seconds until the soft budget; ``inf`` when there is none."""
        return float("inf") if self.deadline is None else self.deadline - time.monotonic()

    def over_budget(self) -> bool:
        """True once the soft budget is spent: training loops stop and keep their best model."""
        return self.budget_left() <= 0

    def charge(self, seconds: float) -> None:
        """Count ``seconds`` of compute done elsewhere (a reused stage's build) against the soft budget."""
        if self.deadline is not None and seconds > 0:
            self.deadline -= seconds

    def checkpointed(self) -> None:
        """Say a checkpoint a later attempt can resume from was written: the seconds so far survive a kill."""
        self.on_checkpoint()

    def resumed(self, done: bool = False) -> None:
        """Say training continues from an earlier attempt's checkpoint (``done``: it had already finished).

        The earlier attempts' training seconds then count towards this run's compute and its soft
        budget (the deadline moves earlier by them). An approach that calls neither this nor
        :meth:`checkpointed` is charged only for the attempt at hand.
        """
        prior = self.on_resume(done)
        if self.deadline is not None:
            self.deadline -= prior
