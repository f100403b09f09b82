import dataclasses
import json

import pytest

from lumbar_bench import check, tracking
from lumbar_bench.check import Baseline, Expected, Observed
from lumbar_bench.cli import main
from lumbar_bench.errors import ConfigError
from tests.test_leaderboard import SPLIT, log_run

EXP = "lb-test"  # log_run writes here
DATA = "d" * 64


def _ci_runs(uri, tmp_path):
    """Fold-0 ci runs of prior and of a segmentation approach with a dice_mean, made directly."""
    _, pm = log_run(uri, tmp_path, "prior", 0, 0.0)
    _, sm = log_run(uri, tmp_path, "nnunet-raw", 0, 0.5, extra={"dice_mean": 0.6})
    return {"prior": pm["rsna_score"], "nnunet-raw": sm["rsna_score"]}


def _baseline(scores, path, tol=0.05, shift=0.0, dice=0.6, budget=3.0):
    entries = {
        name: Expected(
            rsna_score=s + shift,
            rsna_score_tolerance=tol,
            budget_minutes=budget,
            dice_mean=dice if name == "nnunet-raw" else None,
            dice_mean_tolerance=0.05 if name == "nnunet-raw" else None,
        )
        for name, s in scores.items()
    }
    Baseline(SPLIT, DATA, entries).save(path)
    return path


def _gate(uri, path, *more):
    return main(
        [
            "--no-progress",
            "check",
            str(path),
            "--tracking-uri",
            uri,
            "--experiment",
            EXP,
            "--from-runs",
            *more,
        ]
    )


def test_gate_passes_with_the_true_baseline(tracking_uri, tmp_path, capsys):
    path = _baseline(_ci_runs(tracking_uri, tmp_path), tmp_path / "ci.json")
    assert _gate(tracking_uri, path) == 0
    out = capsys.readouterr().out
    assert "gate passed (2 approaches)" in out and out.count("PASS") == 2


def test_gate_fails_when_the_baseline_is_tightened_beyond_what_the_code_reaches(
    tracking_uri, tmp_path, capsys
):
    path = _baseline(_ci_runs(tracking_uri, tmp_path), tmp_path / "ci.json", tol=0.01, shift=-0.1)
    assert _gate(tracking_uri, path) == 1
    out = capsys.readouterr().out
    assert "gate FAILED: prior, nnunet-raw" in out and "rsna_score" in out and "> " in out


def test_gate_fails_on_missing_approach_failed_run_budget_dice_and_foreign_split(
    tracking_uri, tmp_path, capsys
):
    scores = _ci_runs(tracking_uri, tmp_path)
    log_run(tracking_uri, tmp_path, "resnet18", 0, 0.3, status="FAILED")
    missing = Expected(rsna_score=0.5, rsna_score_tolerance=0.05, budget_minutes=3.0)
    path = tmp_path / "ci.json"
    Baseline(
        SPLIT,
        DATA,
        {
            "prior": Expected(scores["prior"], 0.05, budget_minutes=0.1),
            "nnunet-raw": Expected(scores["nnunet-raw"], 0.05, 3.0, dice_mean=0.9, dice_mean_tolerance=0.05),
            "resnet18": missing,
            "nnunet-qc": missing,
        },
    ).save(path)
    assert _gate(tracking_uri, path, "--json") == 1
    verdicts = {v["approach"]: v for v in json.loads(capsys.readouterr().out)}
    assert "over budget" in verdicts["prior"]["problems"][0]  # runtime 12 s > 6 s
    assert "dice_mean 0.6000 < 0.9000" in verdicts["nnunet-raw"]["problems"][0]
    assert verdicts["resnet18"]["problems"][0].startswith("run FAILED")
    assert verdicts["nnunet-qc"]["observed"]["status"] == "MISSING"
    assert not any(v["ok"] for v in verdicts.values())


def test_judge_rules():
    base = Baseline(SPLIT, DATA, {})
    exp = Expected(0.80, 0.05, 1.0)
    ok = Observed("prior", "FINISHED", "r", 0.84, None, 10.0, False, SPLIT, DATA)
    assert check.judge("prior", exp, ok, base).ok
    assert not check.judge("prior", exp, dataclasses.replace(ok, rsna_score=0.86), base).ok
    better = check.judge("prior", exp, dataclasses.replace(ok, rsna_score=0.70), base)
    assert better.ok and "consider" in better.notes[0]
    assert (
        "not comparable"
        in check.judge("prior", exp, dataclasses.replace(ok, split_digest="x" * 64), base).problems[0]
    )
    assert (
        "over budget"
        in check.judge("prior", exp, dataclasses.replace(ok, budget_exceeded=True), base).problems[0]
    )
    assert not check.judge("prior", None, ok, base).ok


def test_tolerance_rule():
    runs = [
        Observed("a", "FINISHED", rsna_score=0.50, dice_mean=0.7, runtime_s=3.0),
        Observed("a", "FINISHED", rsna_score=0.54, dice_mean=0.69),
    ]
    exp = check.expected_from_runs(runs, 1.5)
    assert exp.rsna_score == 0.50 and exp.rsna_score_tolerance == pytest.approx(0.12)  # 3 x 0.04
    assert exp.dice_mean == 0.7 and exp.dice_mean_tolerance == 0.05  # floor beats 3 x 0.01
    assert exp.runtime_s == 3.0 and exp.budget_minutes == 1.5
    assert check.expected_from_runs(runs[:1], 1.0).rsna_score_tolerance == 0.05


def test_baseline_file_round_trip_and_errors(tmp_path):
    path = tmp_path / "b.json"
    base = Baseline(SPLIT, DATA, {"prior": Expected(0.8, 0.05, 1.0)}, generated={"seeds": 2})
    base.save(path)
    doc = json.loads(path.read_text())
    assert "--update" in doc["about"] and doc["tolerance_rule"] == check.TOLERANCE_RULE
    assert Baseline.load(path) == base
    with pytest.raises(ConfigError, match="--update"):
        Baseline.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ConfigError, match="not a lumbar-bench baseline"):
        Baseline.load(tmp_path / "bad.json")


@pytest.mark.slow
def test_update_then_gate_end_to_end_on_a_tiny_phantom(tiny_phantom, tmp_path, capsys):
    """`check --update` runs prior for real; the gate passes, then fails once the file is tightened."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracking.experiment_id(uri, "lumbar-bench-ci")
    path = tmp_path / "ci.json"
    args = [
        "--no-progress",
        "check",
        str(path),
        "--tracking-uri",
        uri,
        "--data",
        str(tiny_phantom),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--approach",
        "prior",
    ]
    assert main([*args, "--update"]) == 0
    base = Baseline.load(path)
    assert list(base.approaches) == ["prior"] and base.generated["seeds"] == 2
    prior = base.approaches["prior"]
    assert prior.spread["rsna_score"] == 0.0 and prior.rsna_score_tolerance == check.MIN_TOLERANCE
    assert main(args) == 0
    assert "gate passed" in capsys.readouterr().out
    tight = dataclasses.replace(prior, rsna_score=prior.rsna_score - 0.2, rsna_score_tolerance=0.01)
    dataclasses.replace(base, approaches={"prior": tight}).save(path)
    assert main(args) == 1
    assert main([*args, "--from-runs"]) == 1
    assert "gate FAILED: prior" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["check", "leaderboard"])
def test_help_shows_examples(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "examples:" in capsys.readouterr().out


def test_missing_baseline_is_a_one_line_error(tmp_path, capsys):
    assert main(["check", str(tmp_path / "nope.json"), "--tracking-uri", f"sqlite:///{tmp_path}/m.db"]) == 2
    assert "--update" in capsys.readouterr().err
