"""Compute that tells the truth over attempts: the owner lock, stale runs and the ledger's arithmetic.

The slow tests run resnet18 on the tiny phantom: a re-run that reuses a finished model, and a run
killed with SIGKILL mid-training, then resumed.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lumbar_bench.core.errors import LumbarBenchError
from lumbar_bench.run import attempts, runner
from lumbar_bench.run.attempts import Attempt, Owner
from lumbar_bench.tracking.client import experiment_id, mlflow_client
from lumbar_bench.tracking.search import get_run, run_status

EXP = "attempts"
#: One torch thread in every timed run: steadier timings on a shared machine.
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
log = logging.getLogger(__name__)


def _running_run(uri: str) -> str:
    """A run left RUNNING, as a process killed mid-run leaves it."""
    client = mlflow_client(uri)
    return client.create_run(experiment_id(uri, EXP), run_name="killed").info.run_id


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_owner_alive_tells_a_dead_or_reused_pid_from_a_live_one():
    me = Owner.of(os.getpid())
    assert me.alive()
    assert not Owner(_dead_pid(), me.host, me.boot_id, me.start_ticks).alive()
    assert not Owner(os.getpid(), me.host, me.boot_id, (me.start_ticks or 0) + 1).alive()  # pid reused
    assert not Owner(os.getpid(), me.host, "another-boot", me.start_ticks).alive()
    elsewhere = Owner(1, "not-" + socket.gethostname())
    assert elsewhere.alive(heartbeat_at=time.time()) and not elsewhere.alive(heartbeat_at=0.0)


def test_stale_running_run_of_a_dead_owner_is_marked_killed_with_a_reason(tracking_uri, tmp_path):
    old = _running_run(tracking_uri)
    dead = Owner(_dead_pid(), socket.gethostname(), attempts._boot_id(), 12345)
    attempts.write_ledger(tmp_path, [Attempt(old, tracking_uri, dead, train_s=5.0)])
    with attempts.claim(tmp_path) as claim:
        claim.begin("new-run", tracking_uri, "cpu")
    info = get_run(tracking_uri, old)
    assert info.status == "KILLED"
    assert info.tags["failure_reason"] == "process_died"
    assert f"pid {dead.pid}" in info.tags["failure_message"]
    assert info.tags["killed_by_run"] == "new-run"
    ledger = attempts.read_ledger(tmp_path)
    assert [a.end for a in ledger] == ["killed", "finished"]
    assert ledger[1].owner.pid == os.getpid()


def test_a_live_owner_is_left_alone_and_a_second_run_refuses(tracking_uri, tmp_path):
    live = _running_run(tracking_uri)
    with attempts.claim(tmp_path) as claim:
        claim.begin(live, tracking_uri, "cpu")
        with pytest.raises(LumbarBenchError) as refused, attempts.claim(tmp_path):
            pass
    assert str(tmp_path) in str(refused.value) and f"in use by pid {os.getpid()} on" in str(refused.value)
    assert run_status(tracking_uri, live) == "RUNNING"  # the refused claim touched nothing
    # a ledger naming a live owner refuses too, even without the lock (e.g. the lock file was removed)
    attempts.write_ledger(tmp_path, [Attempt(live, tracking_uri, Owner.of(os.getpid()))])
    with pytest.raises(LumbarBenchError, match="in use by pid"), attempts.claim(tmp_path):
        pass
    assert run_status(tracking_uri, live) == "RUNNING"


def _attempt(run_id: str, **kw: object) -> Attempt:
    return Attempt(run_id, "sqlite:///x.db", Owner(1, "h"), **kw)


def test_cost_carries_the_checkpointed_seconds_of_resumed_attempts():
    first = _attempt("a", spent_s=40.0, train_s=30.0, end="killed")
    second = _attempt("b", spent_s=20.0, train_s=20.0, resumed=True, done=True, device="cuda")
    cost = attempts._cost(second, attempts.carried([first]), 20.0)
    assert (cost.train_s, cost.gpu_train_s, cost.attempts, cost.lost_s) == (50.0, 20.0, 2, 10.0)
    assert cost.reused_from is None

    reuse = _attempt("c", spent_s=3.0, train_s=0.0, resumed=True, done=True, reused=True)
    cost = attempts._cost(reuse, attempts.carried([first, second]), 3.0)
    assert (cost.train_s, cost.attempts, cost.reused_from) == (50.0, 2, "b")

    fresh = _attempt("d", spent_s=7.0, train_s=7.0, done=True)  # did not resume: earlier work not carried
    assert attempts.carried([first, second, fresh]) == [fresh]


def test_ledger_is_rewritten_atomically_and_reads_back(tmp_path):
    attempts.write_ledger(tmp_path, [_attempt("a", stages={"x": 1.5})])
    assert json.loads((tmp_path / attempts.LEDGER).read_text())["version"] == 1
    assert attempts.read_ledger(tmp_path)[0].stages == {"x": 1.5}
    assert sorted(p.name for p in tmp_path.iterdir()) == [attempts.LEDGER]


# --- whole runs of resnet18 on the tiny phantom -----------------------------------------------------


def _request(phantom: Path, tmp_path: Path, overrides: tuple[str, ...]) -> runner.RunRequest:
    return runner.RunRequest(
        "resnet18",
        data_dir=phantom,
        cache_dir=tmp_path / "cache",
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        experiment=EXP,
        overrides=overrides,
        progress=False,
    )


@pytest.mark.slow
def test_rerun_reuses_the_finished_model_and_reports_the_original_compute(tiny_phantom, tmp_path):
    request = _request(tiny_phantom, tmp_path, ("epochs=1",))
    first = runner.run(request)
    second = runner.run(request)
    tags = get_run(request.tracking_uri, second.run_id).tags
    assert tags["reused_checkpoint"] == "true" and tags["reused_from_run"] == first.run_id
    assert get_run(request.tracking_uri, first.run_id).tags["reused_checkpoint"] == "false"
    assert second.metrics["runtime/train_s"] == first.metrics["runtime/train_s"]
    assert second.metrics["runtime/attempts"] == 1.0
    assert second.metrics["rsna_score"] == pytest.approx(first.metrics["rsna_score"], abs=1e-9)


def _warm_series_cache(phantom: Path, cache: Path) -> None:
    """Decode every series once, so neither timed run pays for DICOM decoding."""
    from lumbar_bench.approaches.resnet18 import ResNet18Config, study_tensor
    from lumbar_bench.data import defaults

    data = defaults.load_data(phantom, cache, progress=False)
    for study in data.study_ids:
        study_tensor(data, study, ResNet18Config.for_subset("ci"))


def _cli(request: runner.RunRequest) -> list[str]:
    """``lumbar-bench run`` for ``request``."""
    cmd = [sys.executable, "-m", "lumbar_bench.cli", "--no-progress", "run", "--approach", "resnet18"]
    cmd += ["--data", str(request.data_dir), "--cache-dir", str(request.cache_dir), "--subset", "ci"]
    cmd += ["--tracking-uri", request.tracking_uri, "--experiment", EXP]
    return cmd + [a for o in request.overrides for a in ("--set", o)]


def _kill_after_first_checkpoint(request: runner.RunRequest, timeout: float = 60.0) -> str:
    """Start ``lumbar-bench run`` in a subprocess, SIGKILL it mid-training; return its run id."""
    proc = subprocess.Popen(
        _cli(request), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ONE_THREAD
    )
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            ledgers = list((request.cache_dir / "runs").glob(f"resnet18-*/{attempts.LEDGER}"))
            ledger = attempts.read_ledger(ledgers[0].parent) if ledgers else []
            if ledger and ledger[-1].train_s > 0:  # one checkpoint written: kill during the next epochs
                time.sleep(1.5)
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                return ledger[-1].run_id
            time.sleep(0.1)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    pytest.fail(f"no checkpoint within {timeout:.0f} s (exit code {proc.returncode})")


@pytest.mark.slow
def test_run_killed_mid_training_resumes_to_the_same_score_and_counts_all_its_compute(tiny_phantom, tmp_path):
    request = _request(tiny_phantom, tmp_path, ("epochs=16", "patience=16"))
    _warm_series_cache(tiny_phantom, request.cache_dir)
    # uninterrupted, in a process of its own like the killed attempt (same cold start)
    out = subprocess.run(
        _cli(request) + ["--json"], capture_output=True, text=True, check=True, env=ONE_THREAD
    )
    whole = json.loads(out.stdout.strip().splitlines()[-1])
    for workdir in (request.cache_dir / "runs").glob("resnet18-*"):
        shutil.rmtree(workdir)

    killed = _kill_after_first_checkpoint(request)
    assert run_status(request.tracking_uri, killed) == "RUNNING"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        resumed = runner.run(request)
    finally:
        torch.set_num_threads(threads)

    old = get_run(request.tracking_uri, killed)
    assert old.status == "KILLED" and old.tags["failure_reason"] == "process_died"
    assert old.tags["killed_by_run"] == resumed.run_id
    m, w = resumed.metrics, whole
    log.info(
        "uninterrupted train_s %.1f score %.6f; killed+resumed train_s %.1f (this attempt %.1f, lost %.1f) "
        "attempts %d score %.6f; old run %s",
        w["runtime/train_s"],
        w["rsna_score"],
        m["runtime/train_s"],
        m["runtime/this_attempt_s"],
        m["runtime/lost_s"],
        m["runtime/attempts"],
        m["rsna_score"],
        old.status,
    )
    assert m["runtime/attempts"] == 2.0
    assert m["runtime/train_s"] == pytest.approx(w["runtime/train_s"], rel=0.2)
    assert m["runtime/total_s"] == pytest.approx(m["runtime/train_s"] + m["runtime/predict_s"])
    assert m["rsna_score"] == pytest.approx(w["rsna_score"], abs=0.01)
    tags = get_run(request.tracking_uri, resumed.run_id).tags
    assert tags["reused_checkpoint"] == "false"
