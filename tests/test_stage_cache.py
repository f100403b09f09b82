import json
import multiprocessing
import time

from lumbar_bench.stage_cache import cached_stage, stage_key


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


def test_key_is_stable_and_order_free():
    assert stage_key({"a": 1, "b": [1, 2]}) == stage_key({"b": [1, 2], "a": 1})


def _slow_build(out):
    with open(out.parents[1] / "builds.log", "a") as f:  # one line per build, from any process
        f.write(f"{out.name}\n")
    time.sleep(0.5)
    (out / "x.json").write_text("{}")


def _build_in_process(cache_dir, results):
    result = cached_stage(cache_dir, "shared", {"a": 1}, _slow_build)
    results.put((str(result.path), result.hit))


def test_parallel_processes_build_a_stage_once(tmp_path):
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    procs = [ctx.Process(target=_build_in_process, args=(tmp_path, results)) for _ in range(4)]
    for p in procs:
        p.start()
    got = [results.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert all(p.exitcode == 0 for p in procs)
    assert len((tmp_path / "builds.log").read_text().splitlines()) == 1
    assert len({path for path, _ in got}) == 1
    assert sorted(hit for _, hit in got) == [False, True, True, True]
