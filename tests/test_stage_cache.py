import json

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
    assert not [p for p in (tmp_path / "stages").iterdir()]


def test_key_is_stable_and_order_free():
    assert stage_key({"a": 1, "b": [1, 2]}) == stage_key({"b": [1, 2], "a": 1})
