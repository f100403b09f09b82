"""``lumbar_bench.scale.slurm_state`` without a cluster: squeue parsing, the time-out signal as a budget."""

from __future__ import annotations

import os
import signal

import pytest
from submitit import JobEnvironment
from submitit.core.utils import UncompletedJobError

from lumbar_bench.scale import slurm_state


def test_without_accounting_the_watcher_asks_squeue_and_reads_its_lines():
    watcher = slurm_state.JobStateWatcher(accounting=False)
    assert watcher._make_command() is None  # no job yet: no call
    watcher.register_job("12")
    watcher.register_job("13_2")
    command = watcher._make_command()
    assert command[0] == "squeue" and "--states=all" in command and command[-1] == "--jobs=12,13"
    info = watcher.read_info(b"12|TIMEOUT|localhost\n13_2|RUNNING|localhost\n")
    assert info["12"]["State"] == "TIMEOUT" and info["13_2"]["State"] == "RUNNING"
    assert slurm_state.JobStateWatcher(accounting=True)._make_command() is None


@pytest.fixture
def submitit_time_out_handler():
    """submitit's handler as a job installs it, reduced to what it does on a time-out: raise."""
    usr_sig = JobEnvironment._usr_sig()

    def handler(signum, frame):
        raise UncompletedJobError("Job not requeued because: timed-out and not checkpointable.")

    previous = signal.signal(usr_sig, handler)
    yield usr_sig, handler
    signal.signal(usr_sig, previous)


def test_the_time_out_signal_becomes_a_budget_failure_no_except_exception_swallows(submitit_time_out_handler):
    usr_sig, handler = submitit_time_out_handler
    swallowed = False
    with pytest.raises(slurm_state.TimeLimitReached, match="reached its time limit") as caught:
        with slurm_state.time_limit_as_budget():
            try:  # a loader's "skip the unreadable file"
                os.kill(os.getpid(), usr_sig)
            except Exception:  # noqa: BLE001
                swallowed = True
    assert not swallowed and caught.value.reason == "budget"
    assert signal.getsignal(usr_sig) is handler  # submitit's handler is back


def test_outside_a_job_the_time_limit_context_changes_nothing():
    usr_sig = JobEnvironment._usr_sig()
    before = signal.getsignal(usr_sig)
    with slurm_state.time_limit_as_budget():
        assert signal.getsignal(usr_sig) is before
