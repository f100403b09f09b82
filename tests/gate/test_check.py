import dataclasses
import json

import pytest

from lumbar_bench.cli import main
from lumbar_bench.core.errors import ConfigError
from lumbar_bench.gate import check
from lumbar_bench.gate.baseline import MIN_TOLERANCE, Baseline, Expected, expected_entry
from lumbar_bench.gate.check import Observed
from tests.board.test_leaderboard import SPLIT, log_run

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
    assert "budget" in verdicts["prior"]["problems"][0]  # runtime 12 s > 6 s
    assert "dice_mean 0.6000 < floor 0.8500" in verdicts["nnunet-raw"]["problems"][0]
    assert verdicts["resnet18"]["problems"][0].startswith("run FAILED")
    assert verdicts["nnunet-qc"]["observed"]["status"] == "MISSING"
    assert not any(v["ok"] for v in verdicts.values())


PRIOR = Expected(1.04, 0.01, 1.0)


def _ok(name="resnet18", score=0.84, **kw):
    fields = {"run_id": "r", "runtime_s": 10.0, "split_digest": SPLIT, "data_digest": DATA, **kw}
    return Observed(name, "FINISHED", rsna_score=score, **fields)


def test_judge_rules():
    exp = Expected(0.80, 0.05, 1.0)
    base = Baseline(SPLIT, DATA, {"prior": PRIOR, "resnet18": exp})
    ok = _ok()
    assert check.judge("resnet18", exp, ok, base).ok
    assert not check.judge("resnet18", exp, dataclasses.replace(ok, rsna_score=0.86), base).ok
    better = check.judge("resnet18", exp, dataclasses.replace(ok, rsna_score=0.70), base)
    assert better.ok and "consider" in better.notes[0]
    foreign = check.judge("resnet18", exp, dataclasses.replace(ok, split_digest="x" * 64), base)
    assert "not comparable" in foreign.problems[0]
    over = check.judge("resnet18", exp, dataclasses.replace(ok, budget_exceeded=True), base)
    assert over.problems[0].startswith("budget:")
    assert not check.judge("resnet18", None, ok, base).ok


def test_a_collapse_to_the_prior_fails_even_within_tolerance():
    exp = Expected(0.80, 0.05, 1.0)
    base = Baseline(SPLIT, DATA, {"prior": PRIOR, "resnet18": exp})
    verdict = check.judge("resnet18", exp, _ok(score=0.80, collapsed=True), base)
    assert not verdict.ok and "collapsed to the prior" in verdict.problems[0]
    # the prior itself is the reference, never "collapsed"
    assert check.judge("prior", PRIOR, _ok("prior", 1.04, collapsed=True), base).ok


def test_invariant_a_learned_approach_must_sit_below_the_prior():
    lax = Expected(0.95, 0.10, 3.0)  # 0.95 + 0.10 >= 1.04: a run at the prior's score would pass
    base = Baseline(SPLIT, DATA, {"prior": PRIOR, "nnunet-raw": lax})
    verdict = check.judge("nnunet-raw", lax, _ok("nnunet-raw", 0.95), base)
    assert not verdict.ok and "is not below the prior's 1.0400" in verdict.problems[0]
    weak = dataclasses.replace(lax, known_weak=True, known_weak_reason="ci schedule too short")
    base = Baseline(SPLIT, DATA, {"prior": PRIOR, "nnunet-raw": weak})
    verdict = check.judge("nnunet-raw", weak, _ok("nnunet-raw", 0.95), base)
    assert verdict.ok and verdict.notes == ("known weak: ci schedule too short",)
    # printed on every run, pass or fail
    failed = check.judge("nnunet-raw", weak, _ok("nnunet-raw", 1.2), base)
    assert not failed.ok and "known weak" in check.render([failed])
    assert "    note known weak: ci schedule too short" in check.render([verdict]).splitlines()


def test_invariant_dice_floor_never_below_zero():
    exp = Expected(0.8, 0.05, 3.0, dice_mean=0.04, dice_mean_tolerance=0.2)
    base = Baseline(SPLIT, DATA, {"prior": PRIOR, "nnunet-raw": exp})
    verdict = check.judge("nnunet-raw", exp, _ok("nnunet-raw", 0.8, dice_mean=0.04), base)
    assert "dice_mean tolerance reaches below zero" in verdict.problems[0]


def _obs(score, dice=None, runtime=3.0):
    return Observed("a", "FINISHED", rsna_score=score, dice_mean=dice, runtime_s=runtime)


def test_tolerance_rule_from_threads_and_fresh_repeat():
    runs = {"reference": _obs(0.50, 0.7), "threads_1": _obs(0.504, 0.69), "fresh_repeat": _obs(0.50, 0.7)}
    exp = expected_entry("resnet18", runs, 1.5, reference_score=1.04)
    assert exp.rsna_score == 0.50 and exp.rsna_score_tolerance == pytest.approx(0.012)  # 3 x 0.004
    assert exp.dice_mean == 0.7 and exp.dice_mean_tolerance == pytest.approx(0.03)  # 3 x 0.01
    assert exp.measured["rsna_score"] == {"reference": 0.5, "threads_1": 0.504, "fresh_repeat": 0.5}
    assert exp.runtime_s == 3.0 and exp.budget_minutes == 1.5 and not exp.known_weak
    same = {k: _obs(0.5) for k in ("reference", "threads_1", "fresh_repeat")}
    assert expected_entry("resnet18", same, 1.0, 1.04).rsna_score_tolerance == MIN_TOLERANCE


def test_update_marks_an_approach_that_cannot_beat_the_prior_known_weak():
    runs = {k: _obs(1.05, dice=0.02) for k in ("reference", "threads_1")} | {"fresh_repeat": _obs(1.2, 0.5)}
    exp = expected_entry("nnunet-raw", runs, 3.0, reference_score=1.04)
    assert exp.known_weak and "not below the prior's 1.0400" in exp.known_weak_reason
    assert exp.dice_mean_tolerance == 0.02  # capped: the floor stays at zero
    assert not expected_entry("prior", runs, 1.0, reference_score=1.04).known_weak


def test_baseline_file_round_trip_and_errors(tmp_path):
    path = tmp_path / "b.json"
    entry = Expected(0.8, 0.05, 1.0, measured={"rsna_score": {"reference": 0.8}}, known_weak=True)
    base = Baseline(SPLIT, DATA, {"prior": entry}, generated={"variants": {"reference": 2}})
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
    """`check --update` measures prior for real in fresh processes; the gate passes, then fails tightened."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    path = tmp_path / "ci.json"
    args = ["--no-progress", "check", str(path), "--tracking-uri", uri, "--data", str(tiny_phantom)]
    args += ["--cache-dir", str(tmp_path / "cache"), "--approach", "prior"]
    assert main([*args, "--update"]) == 0
    base = Baseline.load(path)
    assert list(base.approaches) == ["prior"] and base.generated["variants"] == check.VARIANTS
    prior = base.approaches["prior"]
    assert set(prior.measured["rsna_score"]) == set(check.VARIANTS)
    assert len(set(prior.measured["rsna_score"].values())) == 1  # the prior is exact: no variation
    assert prior.rsna_score_tolerance == MIN_TOLERANCE
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
