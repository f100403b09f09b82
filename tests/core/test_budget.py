import functools
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from lumbar_bench.approaches import registry
from lumbar_bench.approaches.base import Approach
from lumbar_bench.core.budget import BUDGET_EXIT_CODE, Budget, Watchdog
from lumbar_bench.run import runner
from lumbar_bench.tracking.names import MODEL_TAG
from lumbar_bench.tracking.search import get_run, search_runs

EXP = "budget-test"
SOFT_S = 24.0  # soft budget of the soft-limit test, in seconds


def test_hard_limit_follows_amlb():
    assert Budget(1.0).soft_seconds == 60 and Budget(1.0).hard_seconds == 120  # 2 x budget
    assert Budget(120.0).hard_seconds == 7200 + 3600  # budget + 60 min
    assert Budget(540.0, "gpu").label() == "540 min gpu"


def test_watchdog_fires_calls_back_and_exits_with_the_budget_code():
    called, codes = threading.Event(), []
    dog = Watchdog(0.05, called.set, exit_fn=codes.append)
    with dog:
        assert dog.fired.wait(5)
    assert called.is_set() and codes == [BUDGET_EXIT_CODE]


def test_watchdog_is_cancelled_when_the_block_ends_in_time():
    codes = []
    with Watchdog(0.3, lambda: None, exit_fn=codes.append) as dog:
        pass
    time.sleep(0.5)
    assert not dog.fired.is_set() and codes == []


# --- the hard limit through runner.run: an approach that ignores its soft budget -----------------

RELEASE = threading.Event()


@dataclass(frozen=True)
class SleepyConfig:
    """Sleeps instead of training; ignores the deadline on purpose."""

    seconds: float = 30.0

    @classmethod
    def for_subset(cls, subset: str) -> "SleepyConfig":
        return cls()


class SleepyApproach(Approach):
    name = "sleepy"
    Config = SleepyConfig

    def fit(self, data, study_ids, ctx):
        RELEASE.wait(self.config.seconds)
        raise SystemExit(BUDGET_EXIT_CODE)  # where os._exit would already have ended the process

    def predict(self, data, study_ids, ctx):
        raise AssertionError("never reached")

    def save(self, directory: Path) -> None:
        pass

    @classmethod
    def load(cls, directory, config):
        return cls(config)


@pytest.fixture
def sleepy(monkeypatch):
    spec = registry.ApproachSpec(
        "sleepy", "tests.core.test_budget:SleepyApproach", "test", {"ci": (0.01, "cpu")}
    )
    monkeypatch.setitem(registry._REGISTRY, "sleepy", spec)
    RELEASE.clear()
    return spec


@pytest.mark.slow
def test_watchdog_marks_the_run_failed_with_reason_budget(sleepy, tiny_phantom, tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    seen = {}

    def fake_exit(code: int) -> None:
        """What the store holds at the instant os._exit would end the process."""
        (run,) = search_runs(uri, EXP, "tags.approach = 'sleepy'")
        seen.update(code=code, status=run.status, tags=run.tags)
        RELEASE.set()

    monkeypatch.setattr(runner, "Watchdog", functools.partial(Watchdog, exit_fn=fake_exit))
    request = runner.RunRequest(
        "sleepy",
        data_dir=tiny_phantom,
        cache_dir=tmp_path / "cache",
        tracking_uri=uri,
        experiment=EXP,
        progress=False,
    )  # budget 0.01 min: hard limit 1.2 s
    with pytest.raises(SystemExit):
        runner.run(request)
    assert seen["code"] == BUDGET_EXIT_CODE and seen["status"] == "FAILED"
    assert seen["tags"]["failure_reason"] == "budget" and seen["tags"]["budget_exceeded"] == "true"
    assert "hard limit" in seen["tags"]["failure_message"]


# --- the soft limit: training stops at the budget and predicts with its best checkpoint ------------


@pytest.mark.slow
def test_soft_limit_stops_training_keeps_the_best_model_and_tags_the_run(tiny_phantom, tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cache = tmp_path / "cache"
    fired = []
    monkeypatch.setattr(runner, "Watchdog", functools.partial(Watchdog, exit_fn=fired.append))
    # warm the series cache so the budget is spent training, not decoding DICOM
    runner.run(
        runner.RunRequest(
            "resnet18",
            data_dir=tiny_phantom,
            cache_dir=cache,
            tracking_uri=uri,
            experiment=EXP,
            subset="small",  # a ci run is cut by its schedule only, never by the clock
            progress=False,
            overrides=("epochs=1",),
        )
    )
    result = runner.run(
        runner.RunRequest(
            "resnet18",
            data_dir=tiny_phantom,
            cache_dir=cache,
            tracking_uri=uri,
            experiment=EXP,
            subset="small",
            progress=False,
            budget_minutes=SOFT_S / 60,
            overrides=("epochs=500", "patience=500"),
        )
    )  # hard limit 2 x SOFT_S: room for one more epoch and predicting, even on a busy machine
    assert fired == []  # the soft limit did its job: the watchdog never fired
    run = get_run(uri, result.run_id)
    assert run.status == "FINISHED" and run.tags["budget_exceeded"] == "true"
    assert run.tags["budget"] == f"{SOFT_S / 60:g} min cpu"
    m = run.metrics
    assert 0 <= m["best_epoch"] < 499 and m["runtime/time_to_best_s"] <= m["runtime/train_s"]
    assert m["runtime/train_s"] < 1.6 * SOFT_S  # stopped at the soft limit, within about one epoch
    assert m["runtime/total_s"] > SOFT_S and "rsna_score" in m
    from mlflow import MlflowClient

    artifacts = {a.path for a in MlflowClient(uri).list_artifacts(result.run_id)}
    assert {"predictions.csv", "labels.csv"} <= artifacts and run.tags[MODEL_TAG]


def test_every_approach_declares_a_budget_per_subset():
    for spec in registry.list_approaches():
        assert {"ci", "small", "full"} <= set(spec.budgets), spec.name
        minutes, device = spec.budgets["ci"]
        assert minutes <= 3 and device == "cpu"
    assert registry.get_spec("resnet18").budgets["full"] == (540.0, "gpu")  # the Kaggle 9 h notebook limit


@pytest.mark.slow
def test_a_ci_run_trains_its_whole_schedule_past_the_budget_and_fails_the_gate(
    tiny_phantom, tmp_path, monkeypatch
):
    """On ``ci`` the budget guards, it never cuts: the same seed gives the same score on any machine load."""
    from mlflow import MlflowClient

    from lumbar_bench.gate import check
    from lumbar_bench.gate.baseline import Baseline, Expected

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setattr(runner, "Watchdog", functools.partial(Watchdog, exit_fn=lambda code: None))
    request = runner.RunRequest(
        "resnet18",
        data_dir=tiny_phantom,
        cache_dir=tmp_path / "cache",
        tracking_uri=uri,
        experiment=EXP,
        subset="ci",
        progress=False,
        budget_minutes=0.5 / 60,  # half a second
        overrides=("epochs=3", "patience=3"),
    )
    result = runner.run(request)
    run = get_run(uri, result.run_id)
    assert run.tags["budget_exceeded"] == "true"
    assert [m.step for m in MlflowClient(uri).get_metric_history(result.run_id, "train/loss")] == [0, 1, 2]
    got = check._observed_from_run("resnet18", run)
    expected = Expected(got.rsna_score, 0.01, budget_minutes=0.5 / 60)
    entries = {"prior": Expected(got.rsna_score + 1, 0.01, 1.0), "resnet18": expected}
    base = Baseline(run.tags["split_digest"], run.tags["data_digest"], entries)
    verdict = check.judge("resnet18", expected, got, base)
    assert [p.split(":")[0] for p in verdict.problems] == ["budget"]
