"""The attempts of one run key: an owner lock and a compute ledger in the run's work directory.

``runner.run`` keys a work directory by approach, config, split, fold, subset and seed, so the
checkpoints written there outlive the process: a killed run resumes, a finished model is reused.
What the checkpoints cannot tell, this module keeps beside them:

``owner.lock``
    Held with ``fcntl.flock`` by the live attempt (the kernel frees it however the process ends)
    and naming it: pid, host, boot id and process start time. A second run of the same key
    refuses to start while the owner lives.
``ledger.json``
    One entry per attempt (one MLflow run): its owner, the seconds it spent fitting (``spent_s``),
    the seconds whose work a checkpoint kept (``train_s``), whether it resumed from the attempts
    before it and whether its fit finished. Rewritten atomically (temp file + ``os.replace``) at
    every checkpoint, every heartbeat and at the end of the fit.

Accounting rule: a run's ``runtime/train_s`` is the seconds whose work its model carries: this
attempt's seconds plus the ``train_s`` of the earlier attempts it resumed from, back through every
attempt that itself resumed. Seconds a killed attempt spent after its last checkpoint were redone,
not carried; they are reported apart as ``runtime/lost_s``. An uninterrupted run and a killed and
resumed one of the same schedule so log about the same ``train_s`` (the resumed one also pays for
its second start, such as building its inputs again).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from lumbar_bench.core.errors import LumbarBenchError
from lumbar_bench.core.files import write_text_atomic
from lumbar_bench.tracking.client import mark_killed
from lumbar_bench.tracking.names import absolute_uri
from lumbar_bench.tracking.search import run_status

log = logging.getLogger(__name__)

LEDGER = "ledger.json"
LOCK = "owner.lock"
#: Seconds between ledger updates while a run is going (what a kill -9 can hide from ``lost_s``).
HEARTBEAT_S = 2.0
#: An attempt on another host whose heartbeat is older than this is taken for dead.
STALE_AFTER_S = 60.0


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, start time in clock ticks after boot) of ``pid`` from ``/proc``; None if unreadable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], int(fields[19])


@dataclass(frozen=True)
class Owner:
    """A process: pid, host, boot and start time (together they survive pid reuse)."""

    pid: int
    host: str
    boot_id: str = ""
    start_ticks: int | None = None

    @classmethod
    def of(cls, pid: int) -> Owner:
        """The process ``pid`` of this host as it is now."""
        stat = _proc_stat(pid)
        return cls(pid, socket.gethostname(), _boot_id(), stat[1] if stat else None)

    def alive(self, heartbeat_at: float | None = None) -> bool:
        """Whether the process still runs; on another host, whether its heartbeat is recent."""
        if self.host != socket.gethostname():
            return heartbeat_at is not None and time.time() - heartbeat_at < STALE_AFTER_S
        if self.boot_id and self.boot_id != _boot_id():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        stat = _proc_stat(self.pid)
        if stat is None:
            return True  # no /proc: the pid exists, which is all we can tell
        return stat[0] != "Z" and (self.start_ticks is None or stat[1] == self.start_ticks)

    def describe(self) -> str:
        """``pid 123 on host``."""
        return f"pid {self.pid} on {self.host}"


@dataclass(frozen=True)
class Attempt:
    """One attempt (one MLflow run) at a run key, as the ledger keeps it."""

    run_id: str
    uri: str
    owner: Owner
    device: str = "cpu"
    started_at: float = 0.0
    heartbeat_at: float = 0.0
    #: Seconds spent in the approach's fit so far.
    spent_s: float = 0.0
    #: Seconds of the fit whose work a checkpoint (or the finished fit) kept.
    train_s: float = 0.0
    #: The approach continued from the checkpoint of the attempt before.
    resumed: bool = False
    #: The fit returned.
    done: bool = False
    #: The fit found training finished by an earlier attempt and trained nothing.
    reused: bool = False
    #: running, finished, failed, killed (its run was marked KILLED) or gone (died, run already ended).
    end: str = "running"
    stages: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Attempt:
        """Inverse of ``dataclasses.asdict``."""
        return cls(**{**d, "owner": Owner(**d["owner"])})


@dataclass(frozen=True)
class Cost:
    """The compute of the model a run ends with, over the attempts that trained it."""

    train_s: float
    #: Of ``train_s``, the seconds of attempts on CUDA.
    gpu_train_s: float
    #: Attempts whose training the model carries (this one included unless it reused a model).
    attempts: int
    #: Seconds those attempts spent after their last checkpoint (redone, not carried).
    lost_s: float
    #: Seconds this attempt spent in fit.
    this_fit_s: float
    #: Run whose finished model this attempt reused (``""``: unknown); None when it trained.
    reused_from: str | None = None
    #: On reuse, the original attempt's stage seconds; else empty.
    stage_seconds: dict[str, float] = field(default_factory=dict)

    def metrics(
        self, predict_s: float, this_attempt_s: float, stage_seconds: dict[str, float]
    ) -> dict[str, float]:
        """``runtime/*``: training over all attempts (``train_s``), ``total_s = train_s + predict_s``.

        ``this_attempt_s`` is what this process spent fitting, predicting and scoring; ``lost_s`` what
        earlier attempts spent after their last checkpoint. On reuse the stage seconds are the original's.
        """
        return {
            "runtime/train_s": self.train_s,
            "runtime/total_s": self.train_s + predict_s,
            "runtime/predict_s": predict_s,
            "runtime/attempts": float(self.attempts),
            "runtime/this_attempt_s": this_attempt_s,
            "runtime/lost_s": self.lost_s,
            **{f"runtime/{k}_s": v for k, v in (self.stage_seconds or stage_seconds).items()},
        }

    def tags(self) -> dict[str, str]:
        """``reused_checkpoint`` (true/false) and, on reuse, ``reused_from_run`` (the run that trained it)."""
        if self.reused_from is None:
            return {"reused_checkpoint": "false"}
        return {"reused_checkpoint": "true", "reused_from_run": self.reused_from or "unknown"}


def read_ledger(workdir: Path) -> list[Attempt]:
    """The attempts recorded in ``workdir``; empty when there is no ledger."""
    path = workdir / LEDGER
    if not path.exists():
        return []
    return [Attempt.from_dict(a) for a in json.loads(path.read_text())["attempts"]]


def write_ledger(workdir: Path, attempts: list[Attempt]) -> None:
    """Write the ledger atomically."""
    ledger = {"version": 1, "attempts": [asdict(a) for a in attempts]}
    write_text_atomic(workdir / LEDGER, json.dumps(ledger, indent=1))


def carried(attempts: list[Attempt]) -> list[Attempt]:
    """The last attempt and those before it that it resumed from, through every one that resumed."""
    chain: list[Attempt] = []
    for attempt in reversed(attempts):
        chain.append(attempt)
        if not attempt.resumed:
            break
    return chain


def reap(attempt: Attempt, by_run: str) -> Attempt:
    """Close an attempt whose owner died: its MLflow run, if still RUNNING, becomes KILLED with a reason."""
    reason = (
        f"owner process {attempt.owner.describe()} ended without closing the run; "
        f"found by run {by_run} of the same work directory"
    )
    status = run_status(attempt.uri, attempt.run_id)
    if status != "RUNNING":
        return replace(attempt, end="gone")
    mark_killed(attempt.uri, attempt.run_id, reason, by_run)
    log.warning("marked run %s KILLED: %s", attempt.run_id, reason)
    return replace(attempt, end="killed")


class Claim:
    """The hold of this process on a work directory, and its own entry in the ledger."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self._attempts = read_ledger(workdir)
        for a in self._attempts:  # the lock says nobody here holds it; another host's heartbeat may differ
            if a.end == "running" and a.owner.alive(a.heartbeat_at):
                raise LumbarBenchError(
                    f"{workdir} is in use by {a.owner.describe()} (run {a.run_id}); "
                    "wait for it to end or stop it"
                )
        self._mutex = threading.Lock()
        self._index: int | None = None
        self._fit_t0: float | None = None
        self._checkpoints = 0
        self._resumes: list[bool] = []
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    @property
    def attempt(self) -> Attempt:
        """The attempt of this process (after :meth:`begin`)."""
        assert self._index is not None, "Claim.begin was not called"
        return self._attempts[self._index]

    def _update(self, **changes: Any) -> None:
        with self._mutex:
            changes.setdefault("heartbeat_at", time.time())
            if self._fit_t0 is not None and not self.attempt.done:
                changes.setdefault("spent_s", time.monotonic() - self._fit_t0)
            self._attempts[self._index] = replace(self.attempt, **changes)
            write_ledger(self.workdir, self._attempts)

    def begin(self, run_id: str, uri: str, device: str) -> None:
        """Record this attempt (MLflow run ``run_id``); earlier attempts whose owner died are closed."""
        self._attempts = [reap(a, run_id) if a.end == "running" else a for a in self._attempts]
        owner = Owner.of(os.getpid())
        now = time.time()
        self._attempts.append(Attempt(run_id, absolute_uri(uri), owner, device, now, now))
        self._index = len(self._attempts) - 1
        write_ledger(self.workdir, self._attempts)
        self._beat = threading.Thread(target=self._heartbeat, name="ledger-heartbeat", daemon=True)
        self._beat.start()

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                self._update()
            except OSError as exc:  # a full disk must not end the run; the next beat retries
                log.warning("ledger heartbeat: %s", exc)

    def start_fit(self) -> None:
        """The approach's fit starts now."""
        self._fit_t0 = time.monotonic()
        self._update(spent_s=0.0)

    def checkpointed(self) -> None:
        """A checkpoint was written: the seconds so far now survive a kill."""
        self._checkpoints += 1
        self._update(train_s=time.monotonic() - self._fit_t0 if self._fit_t0 is not None else 0.0)

    def resumed(self, done: bool) -> float:
        """The approach continues from an earlier attempt's checkpoint (``done``: training had finished).

        Returns, on the first call, the training seconds of the attempts it carries (else 0).
        """
        first = not self._resumes
        self._resumes.append(done)
        self._update(resumed=True)
        return sum(a.train_s for a in carried(self._attempts[: self._index])) if first else 0.0

    def fit_done(self, stage_seconds: dict[str, float]) -> Cost:
        """The fit returned: record its seconds and return the model's compute over all attempts."""
        fit_s = time.monotonic() - self._fit_t0 if self._fit_t0 is not None else 0.0
        reused = bool(self._resumes) and all(self._resumes) and self._checkpoints == 0
        earlier = carried(self._attempts[: self._index]) if self._resumes else []
        self._update(
            spent_s=fit_s, train_s=0.0 if reused else fit_s, done=True, reused=reused, stages=stage_seconds
        )
        return _cost(self.attempt, earlier, fit_s)

    def end(self, status: str) -> None:
        """Stop the heartbeat and close this attempt as ``finished`` or ``failed``."""
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
        if self._index is not None:
            self._update(end=status)


def _cost(this: Attempt, earlier: list[Attempt], fit_s: float) -> Cost:
    """The compute of ``this`` attempt's model, given the earlier attempts it carries (latest first)."""
    chain = [this, *earlier]
    lost = sum(max(a.spent_s - a.train_s, 0.0) for a in earlier if not a.done)
    cost = Cost(
        train_s=sum(a.train_s for a in chain),
        gpu_train_s=sum(a.train_s for a in chain if a.device == "cuda"),
        attempts=sum(1 for a in chain if not a.reused),
        lost_s=lost,
        this_fit_s=fit_s,
    )
    if not this.reused:
        return cost
    original = next((a for a in earlier if a.done and not a.reused), None)
    if original is None:  # a finished checkpoint from before the ledger: its compute is unknown
        log.warning("reused a finished model whose training time is unknown; logging this run's seconds")
        return replace(cost, train_s=fit_s, attempts=1, reused_from="")
    return replace(cost, reused_from=original.run_id, stage_seconds=original.stages)


def _holder(path: Path) -> str:
    try:
        return Owner(**json.loads(path.read_text())).describe()
    except (OSError, ValueError, TypeError):
        return "another process"


@contextlib.contextmanager
def claim(workdir: Path) -> Iterator[Claim]:
    """Hold ``workdir`` for this process; refuses with a one-line error while a live process holds it.

    The attempt ends ``finished``, or ``failed`` if the block raises.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LumbarBenchError(
                f"{workdir} is in use by {_holder(path)}, a run of the same approach, config, split, fold, "
                "subset and seed; wait for it to end or stop it"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(asdict(Owner.of(os.getpid()))).encode(), 0)
        held = Claim(workdir)
        try:
            yield held
        except BaseException:
            held.end("failed")
            raise
        held.end("finished")
    finally:
        os.close(fd)  # releases the lock
