import json
import multiprocessing
import time

import pytest

from lumbar_bench.approaches.base import ReportBuilder
from lumbar_bench.approaches.context import RunContext
from lumbar_bench.core.stage_cache import (
    DONE,
    StageResult,
    build_seconds,
    cached_stage,
    charge_reuse,
    stage_key,
)


def test_stage_is_built_once_and_reused(tmp_path):
    calls = []

    def build(out):
        calls.append(out)
        (out / "x.json").write_text(json.dumps({"v": 1}))

    first = cached_stage(tmp_path, "demo", {"a": 1}, build)
    second = cached_stage(tmp_path, "demo", {"a": 1}, build)
    assert len(calls) == 1 and not first.hit and second.hit
    assert first.path == second.path and (second.path / "x.json").exists()
    other = cached_stage(tmp_path, "demo", {"a": 2}, build)
    assert len(calls) == 2 and other.path != first.path


def test_failed_build_leaves_nothing(tmp_path):
    def boom(out):
        (out / "partial").write_text("x")
        raise RuntimeError("interrupted")

    try:
        cached_stage(tmp_path, "demo", {}, boom)
    except RuntimeError:
        pass
    assert not [p for p in (tmp_path / "stages").iterdir() if p.is_dir()]  # the lock file may stay


def _hang(out):
    (out / "partial").write_text("x")
    time.sleep(60)


def test_a_build_killed_outright_leaves_a_folder_the_next_build_removes(tmp_path):
    ctx = multiprocessing.get_context("fork")
    proc = ctx.Process(target=cached_stage, args=(tmp_path, "demo", {}, _hang))
    proc.start()
    stages = tmp_path / "stages"
    deadline = time.monotonic() + 30
    while not list(stages.glob(".demo-*/partial")) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.kill()  # SIGKILL: no finally clause runs
    proc.join()
    (stale,) = [p for p in stages.glob(".demo-*") if p.is_dir()]
    name = f"demo-{stage_key({'stage': 'demo', 'payload': {}})}"
    other = stages / f".{name}-v2-abcdefgh"  # the build of another target, whose name starts alike
    other.mkdir()
    result = cached_stage(tmp_path, "demo", {}, lambda out: (out / "x.json").write_text("{}"))
    assert not stale.exists() and other.exists()
    assert result.path.name == name
    assert sorted(p.name for p in stages.iterdir() if p.is_dir()) == [other.name, name]


def test_key_is_stable_and_order_free():
    assert stage_key({"a": 1, "b": [1, 2]}) == stage_key({"b": [1, 2], "a": 1})


def _slow_build(out):
    with open(out.parents[1] / "builds.log", "a") as f:  # one line per build, from any process
        f.write(f"{out.name}\n")
    time.sleep(0.5)
    (out / "x.json").write_text("{}")


def _build_in_process(cache_dir, results):
    result = cached_stage(cache_dir, "shared", {"a": 1}, _slow_build)
    results.put((str(result.path), result.hit, result.seconds, result.reused_seconds))


def _build_in_processes(cache_dir, n):
    """``(path, hit, seconds, reused_seconds)`` of ``n`` processes asking for one stage at once."""
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    procs = [ctx.Process(target=_build_in_process, args=(cache_dir, results)) for _ in range(n)]
    for p in procs:
        p.start()
    got = [results.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert all(p.exitcode == 0 for p in procs)
    return got


def test_parallel_processes_build_a_stage_once(tmp_path):
    got = _build_in_processes(tmp_path, 4)
    assert len((tmp_path / "builds.log").read_text().splitlines()) == 1
    assert len({path for path, *_ in got}) == 1
    assert sorted(hit for _, hit, *_ in got) == [False, True, True, True]


def test_a_hit_is_charged_the_recorded_build_seconds(tmp_path):
    def build(out):
        time.sleep(0.3)
        (out / "x.json").write_text("{}")

    first = cached_stage(tmp_path, "demo", {"a": 1}, build)
    second = cached_stage(tmp_path, "demo", {"a": 1}, build)
    assert first.reused_seconds == 0.0 and first.seconds >= 0.3
    assert second.seconds == 0.0
    assert second.reused_seconds == pytest.approx(build_seconds(second.path), abs=0.05)  # less the read
    assert build_seconds(second.path) >= 0.3


def test_an_output_without_recorded_seconds_is_charged_nothing(tmp_path):
    target = tmp_path / "stages" / f"demo-{stage_key({'stage': 'demo', 'payload': {}})}"
    target.mkdir(parents=True)
    (target / DONE).write_text(json.dumps({"stage": "demo"}))  # written before build seconds were recorded
    result = cached_stage(tmp_path, "demo", {}, lambda out: pytest.fail("must not rebuild"))
    assert result.hit and result.reused_seconds == 0.0


def test_a_waiter_is_charged_the_build_less_its_wait(tmp_path):
    (_, _, built_s, _), (_, hit, _, reused) = sorted(_build_in_processes(tmp_path, 2), key=lambda r: r[1])
    assert hit and 0.0 <= reused < built_s  # it waited for most of the build, already spent here


def test_charge_reuse_moves_the_deadline_and_reports_the_seconds(tmp_path):
    ctx = RunContext(workdir=tmp_path, cache_dir=tmp_path, deadline=time.monotonic() + 100.0)
    report = ReportBuilder()
    before = ctx.budget_left()
    charge_reuse(StageResult(tmp_path, "k", True, 0.0, 30.0), ctx, report)
    assert before - ctx.budget_left() == pytest.approx(30.0, abs=0.5)
    assert report.build().stage_seconds["reused"] == 30.0
    unlimited = RunContext(workdir=tmp_path, cache_dir=tmp_path)
    charge_reuse(StageResult(tmp_path, "k", True, 0.0, 30.0), unlimited, ReportBuilder())
    assert unlimited.deadline is None


def test_a_stage_an_earlier_attempt_of_the_run_built_is_not_charged_again(tmp_path):
    def build(out):
        time.sleep(0.2)
        (out / "x.json").write_text("{}")

    def charged(workdir, stage):
        ctx = RunContext(workdir=workdir, cache_dir=tmp_path, deadline=time.monotonic() + 100.0)
        report = ReportBuilder()
        charge_reuse(stage, ctx, report)
        return report.build().stage_seconds["reused"]

    run = tmp_path / "runs" / "nnunet-raw"
    assert charged(run, cached_stage(tmp_path, "demo", {}, build)) == 0.0  # built by this run
    hit = cached_stage(tmp_path, "demo", {}, build)
    assert charged(run, hit) == 0.0  # its resumed attempt: the first attempt's seconds are carried already
    assert charged(tmp_path / "runs" / "nnunet-qc", hit) >= 0.2  # another run reusing it pays for it
