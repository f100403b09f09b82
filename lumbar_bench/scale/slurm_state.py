"""SLURM jobs of a sweep: their states (with or without accounting) and their time limits.

submitit learns that a job ended without leaving a result (killed at its time limit, cancelled,
its node lost) from ``sacct`` alone, checked at most every 10 minutes. Many clusters run no
accounting database (``sacct``: "Slurm accounting storage is disabled"); there submitit never
sees such a job end, and a sweep waiting on it would wait forever. :class:`JobStateWatcher`
asks ``sacct`` where it answers and ``squeue --states=all`` otherwise (slurmctld keeps an ended
job for ``MinJobAge``, 300 s by default, which a sweep polling every few seconds never misses),
and looks more often.

A job nearing its time limit gets submitit's warning signal (``USR2``, 90 s before the limit);
submitit's handler then raises ``UncompletedJobError`` inside the task, which the run would
record as a crash, or an ``except Exception`` in a data loader would swallow.
:func:`time_limit_as_budget` raises :class:`TimeLimitReached` (a ``BaseException``, reason
``budget``) instead. A job killed at its limit before it could react ends ``TIMEOUT``, which
the sweep records with reason ``budget`` too.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from submitit import JobEnvironment
from submitit.core.utils import UncompletedJobError
from submitit.slurm.slurm import SlurmInfoWatcher

log = logging.getLogger(__name__)

#: Most seconds between two looks at the jobs that have not left a result yet.
STATE_POLL_S = 10
_HEADER = "JobID|State|NodeList"


def has_accounting(timeout: float = 30.0) -> bool:
    """Whether ``sacct`` answers here (an accounting database is configured and reachable)."""
    try:
        done = subprocess.run(
            ["sacct", "--noheader", "--allocations", "--starttime=now", "--format=JobID"],
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


class JobStateWatcher(SlurmInfoWatcher):
    """submitit's ``sacct`` watcher, reading ``squeue`` instead where the cluster has no accounting."""

    def __init__(self, accounting: bool, delay_s: int = STATE_POLL_S) -> None:
        super().__init__(delay_s=delay_s)
        self.accounting = accounting
        if not accounting:
            log.info("sacct does not answer (no SLURM accounting); job states come from squeue")

    def _make_command(self) -> list[str] | None:
        """``sacct`` (submitit's command) or ``squeue`` in the same ``JobID|State|NodeList`` columns."""
        if self.accounting:
            return super()._make_command()
        ids = sorted({x.split("_")[0] for x in self._registered - self._finished})
        if not ids:
            return None
        return ["squeue", "--noheader", "--states=all", "--format=%i|%T|%N", f"--jobs={','.join(ids)}"]

    def read_info(self, string: bytes | str) -> dict[str, dict[str, str]]:
        """Parse ``sacct --parsable2`` output, or ``squeue``'s with the header it lacks."""
        if self.accounting:
            return super().read_info(string)
        text = string.decode() if isinstance(string, bytes) else string
        return super().read_info(f"{_HEADER}\n{text}")

    def adopt(self, job: Any) -> None:
        """Have ``job`` (a submitit SLURM job) learn its state from this watcher."""
        job.watcher = self
        self.register_job(str(job.job_id))


class TimeLimitReached(BaseException):
    """The job's time limit came (submitit's time-out signal): the task ran over its budget.

    A ``BaseException``, as ``KeyboardInterrupt``: raised by a signal handler wherever the task
    is, it must not be taken for a local error (an unreadable file) by an ``except Exception``.
    """

    reason = "budget"


@contextmanager
def time_limit_as_budget() -> Iterator[None]:
    """In a submitit job, raise :class:`TimeLimitReached` where submitit's time-out handler raises.

    Outside a job (submitit installed no handler), or off the main thread, it changes nothing.
    Preemption is left to submitit (it requeues the job and exits).
    """
    usr_sig = JobEnvironment._usr_sig()
    previous = signal.getsignal(usr_sig)
    if not callable(previous) or threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_time_out(signum: int, frame: FrameType | None) -> None:
        try:
            previous(signum, frame)
        except UncompletedJobError as exc:
            raise TimeLimitReached(f"the job reached its time limit ({exc})") from exc

    signal.signal(usr_sig, on_time_out)
    try:
        yield
    finally:
        signal.signal(usr_sig, previous)
