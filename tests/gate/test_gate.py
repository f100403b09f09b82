"""The CI regression gate on the default phantom: it passes, and it fails when an approach is broken.

The gate's runs come from the session's ``gate`` fixture (tests/conftest.py): each ``ci``
configuration of ``baselines/ci.json`` trains once per ``make test``.
"""

from __future__ import annotations

import dataclasses

import pytest

from lumbar_bench.approaches.prior import fit_prior, prior_submission
from lumbar_bench.approaches.registry import get_approach
from lumbar_bench.gate import check
from lumbar_bench.gate.baseline import REFERENCE, Baseline
from tests.conftest import BASELINE

pytestmark = pytest.mark.slow

LEARNED = [name for name in Baseline.load(BASELINE).approaches if name != REFERENCE]


def test_the_gate_passes_on_the_default_phantom(gate):
    failed = [name for name, v in gate.verdicts.items() if not v.ok]
    assert not failed, "\n" + check.render(list(gate.verdicts.values()))


def test_the_baseline_holds_its_invariants(gate):
    assert REFERENCE in gate.baseline.approaches
    for name, expected in gate.baseline.approaches.items():
        assert gate.baseline.invariant_problems(name) == [], name
        if expected.known_weak:
            assert expected.known_weak_reason, name
        if expected.dice_mean is not None:
            assert expected.dice_floor >= 0 and expected.dice_floor == pytest.approx(
                expected.dice_mean - expected.dice_mean_tolerance
            )


def test_a_ci_run_is_cut_by_its_schedule_not_the_clock(gate):
    from lumbar_bench.tracking.search import get_run

    for name in gate.verdicts:
        run = get_run(gate.request.tracking_uri, gate.run_id(name))
        assert run.tags["budget_exceeded"] == "false", name
        assert run.params["threads"] == str(check.GATE_THREADS)


def _broken_to_the_prior(monkeypatch, name: str) -> None:
    """Replace ``name``'s training by nothing and its predictions by the training prior's."""
    cls = get_approach(name)

    def fit(self, data, train_ids, ctx):
        self._broken_prior = fit_prior(data.labels.loc[train_ids])

    def predict(self, data, study_ids, ctx):
        return prior_submission(self._broken_prior, study_ids)

    monkeypatch.setattr(cls, "fit", fit)
    monkeypatch.setattr(cls, "predict", predict)
    monkeypatch.setattr(cls, "save", lambda self, path: None)


@pytest.mark.parametrize("name", LEARNED)
def test_an_approach_whose_predictions_are_the_prior_fails_the_gate(name, gate, monkeypatch):
    _broken_to_the_prior(monkeypatch, name)
    request = dataclasses.replace(gate.request, experiment="broken")
    got = check.run_approach(name, request)
    assert got.status == "FINISHED" and got.collapsed
    verdict = check.judge(name, gate.baseline.approaches[name], got, gate.baseline)
    assert not verdict.ok
    assert any(p.startswith("collapsed to the prior") for p in verdict.problems)
    expected = gate.baseline.approaches[name]
    if not expected.known_weak:  # the invariant: the prior's score is outside the tolerance too
        assert any(p.startswith("rsna_score") for p in verdict.problems), verdict.problems
    if expected.dice_mean is not None:
        assert "no dice_mean" in verdict.problems


def test_resnet18_trained_with_lr_0_fails_the_gate(gate):
    request = dataclasses.replace(gate.request, experiment="broken", overrides=("lr=0",))
    got = check.run_approach("resnet18", request)
    verdict = check.judge("resnet18", gate.baseline.approaches["resnet18"], got, gate.baseline)
    assert got.status == "FINISHED" and not verdict.ok, check.render([verdict])
