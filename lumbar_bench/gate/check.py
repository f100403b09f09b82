"""The CI regression gate: ``lumbar-bench check BASELINE_FILE``.

The baseline file (``baselines/ci.json``, see :mod:`lumbar_bench.gate.baseline`) holds, for each
approach run on ``--subset ci`` of fold 0 of the default phantom's frozen split, the
expected ``rsna_score`` and ``dice_mean`` with tolerances measured from real variation,
and the runtime budget. ``check`` runs seed 0 of every approach listed there (or, with
``--from-runs``, judges the latest runs already in the store), prints expected against
got, and fails on:

- ``rsna_score`` above expected + tolerance (lower is better);
- ``dice_mean`` below expected − tolerance, or missing where one is expected;
- a learned approach whose held-out predictions equal the prior's (``collapsed_to_prior``);
- a baseline entry that breaks an invariant (a learned approach's expected score plus
  tolerance not below the prior's without ``known_weak``; a Dice floor below zero);
- an approach of the baseline with no run, or a run that FAILED;
- ``runtime/total_s`` over the budget, or a run tagged ``budget_exceeded=true`` (reason ``budget``);
- a run on another split or other data than the baseline's (not comparable).

A ``known_weak`` approach is gated like the others, and its reason is printed on every run.
The baseline is written only by ``lumbar-bench check BASELINE_FILE --update``, never by hand.
"""

from __future__ import annotations

import json
import logging
import math
import platform
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lumbar_bench import __version__
from lumbar_bench.approaches.registry import get_spec, list_approaches
from lumbar_bench.core.errors import ConfigError
from lumbar_bench.core.paths import default_cache_dir
from lumbar_bench.data import defaults
from lumbar_bench.gate.baseline import (
    DEVICE,
    FOLD,
    GATE_THREADS,
    REFERENCE,
    SEED,
    SUBSET,
    TOLERANCE_RULE,
    VARIANTS,
    Baseline,
    Expected,
    expected_entry,
)
from lumbar_bench.run.runner import RunRequest, run
from lumbar_bench.tracking.client import experiment_id
from lumbar_bench.tracking.names import CI_EXPERIMENT, DEFAULT_TRACKING_URI
from lumbar_bench.tracking.search import RunRecord, find_runs, get_run

log = logging.getLogger(__name__)

__all__ = ["Baseline", "CheckRequest", "Expected", "Observed", "TOLERANCE_RULE", "Verdict", "check", "update"]


@dataclass(frozen=True)
class Observed:
    """What one approach's run reached (or why there is nothing)."""

    approach: str
    status: str
    run_id: str = ""
    rsna_score: float | None = None
    dice_mean: float | None = None
    runtime_s: float | None = None
    budget_exceeded: bool = False
    collapsed: bool = False
    split_digest: str = ""
    data_digest: str = ""
    message: str = ""


@dataclass(frozen=True)
class Verdict:
    """The gate's judgement of one approach."""

    approach: str
    expected: Expected | None
    observed: Observed
    problems: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """True when nothing regressed."""
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form (``check --json``)."""
        return {
            "approach": self.approach,
            "ok": self.ok,
            "problems": list(self.problems),
            "notes": list(self.notes),
            "expected": asdict(self.expected) if self.expected else None,
            "observed": asdict(self.observed),
        }


@dataclass(frozen=True)
class CheckRequest:
    """What ``lumbar-bench check`` was asked to do."""

    baseline_path: Path
    tracking_uri: str = DEFAULT_TRACKING_URI
    experiment: str = CI_EXPERIMENT
    cache_dir: Path | None = None
    data_dir: Path | None = None
    approaches: tuple[str, ...] = ()
    from_runs: bool = False
    #: ``--set key=value`` overrides for every approach run (to break one on purpose, say).
    overrides: tuple[str, ...] = ()
    progress: bool = False


def _observed_from_run(approach: str, run: RunRecord) -> Observed:
    """Observed values of a tracked run."""
    return Observed(
        approach=approach,
        status=run.status,
        run_id=run.run_id,
        rsna_score=run.metric("rsna_score"),
        dice_mean=run.metric("dice_mean"),
        runtime_s=run.metric("runtime/total_s"),
        budget_exceeded=run.tag("budget_exceeded") == "true",
        collapsed=run.tag("collapsed_to_prior") == "true",
        split_digest=run.tag("split_digest"),
        data_digest=run.tag("data_digest"),
        message=run.tag("failure_message") if run.status != "FINISHED" else "",
    )


def run_approach(approach: str, request: CheckRequest, seed: int = SEED) -> Observed:
    """Run ``approach`` on fold 0 of ``--subset ci`` in this process; a failure is recorded, not raised."""
    try:
        result = run(
            RunRequest(
                approach=approach,
                subset=SUBSET,
                fold=FOLD,
                seed=seed,
                device=DEVICE,
                threads=GATE_THREADS,
                tracking_uri=request.tracking_uri,
                experiment=request.experiment,
                data_dir=request.data_dir,
                cache_dir=request.cache_dir,
                overrides=request.overrides,
                progress=request.progress,
            )
        )
    except Exception as exc:  # noqa: BLE001 - one failing approach must not hide the others
        log.error("%s failed: %s", approach, exc)
        return Observed(approach, "FAILED", message=f"{type(exc).__name__}: {exc}"[:500])
    return _observed_from_run(approach, get_run(request.tracking_uri, result.run_id))


def latest_run(approach: str, request: CheckRequest) -> Observed:
    """Return the latest top-level ci fold-0 run of ``approach`` in the store, whatever its status."""
    runs = find_runs(
        request.tracking_uri, request.experiment, approach=approach, subset=SUBSET, fold=FOLD, top_level=True
    )
    if not runs:
        return Observed(approach, "MISSING", message=f"no run in experiment {request.experiment!r}")
    return _observed_from_run(approach, max(runs, key=lambda r: r.start_time))


def judge(approach: str, expected: Expected | None, got: Observed, baseline: Baseline) -> Verdict:
    """Compare one approach's run with its baseline entry and the baseline's invariants."""
    if expected is None:
        return Verdict(approach, None, got, ("not in the baseline (run `check --update`)",))
    notes = [f"known weak: {expected.known_weak_reason}"] if expected.known_weak else []
    if got.status != "FINISHED":
        reason = f"run {got.status}: {got.message or 'no reason recorded'}"
        return Verdict(approach, expected, got, (reason,), tuple(notes))
    problems = baseline.invariant_problems(approach)
    if got.split_digest != baseline.split_digest or got.data_digest != baseline.data_digest:
        problems.append(
            f"run on split {got.split_digest[:8]}/data {got.data_digest[:8]}, baseline has "
            f"{baseline.split_digest[:8]}/{baseline.data_digest[:8]}: not comparable"
        )
    if got.collapsed and approach != REFERENCE:
        problems.append(f"collapsed to the {REFERENCE}: its held-out predictions are the {REFERENCE}'s")
    problems += _score_problems(expected, got, notes) + _dice_problems(expected, got)
    budget_s = expected.budget_minutes * 60
    if got.budget_exceeded or (got.runtime_s is not None and got.runtime_s > budget_s):
        problems.append(f"budget: {got.runtime_s or float('nan'):.1f} s > {budget_s:.0f} s")
    return Verdict(approach, expected, got, tuple(problems), tuple(notes))


def _score_problems(expected: Expected, got: Observed, notes: list[str]) -> list[str]:
    """``rsna_score`` against expected + tolerance; a note when it is better beyond tolerance."""
    score = got.rsna_score
    if score is None or not math.isfinite(score):
        return ["no rsna_score"]
    if score > expected.score_limit:
        return [f"rsna_score {score:.4f} > {expected.rsna_score:.4f} + {expected.rsna_score_tolerance:.4f}"]
    if score < expected.rsna_score - expected.rsna_score_tolerance:
        notes.append("rsna_score better than the baseline beyond tolerance: consider `check --update`")
    return []


def _dice_problems(expected: Expected, got: Observed) -> list[str]:
    """``dice_mean`` against its floor, where the baseline expects one."""
    floor = expected.dice_floor
    if floor is None:
        return []
    if got.dice_mean is None:
        return ["no dice_mean"]
    if got.dice_mean < floor:
        return [f"dice_mean {got.dice_mean:.4f} < floor {floor:.4f}"]
    return []


def check(request: CheckRequest) -> list[Verdict]:
    """Run (or read) every approach of the baseline and judge each one."""
    baseline = Baseline.load(request.baseline_path)
    names = list(request.approaches or baseline.approaches)
    if not names:
        raise ConfigError(f"{request.baseline_path}: lists no approach")
    if not request.from_runs:
        experiment_id(request.tracking_uri, request.experiment)  # create the store once, up front
    verdicts = []
    for name in names:
        got = latest_run(name, request) if request.from_runs else run_approach(name, request)
        verdicts.append(judge(name, baseline.approaches.get(name), got, baseline))
    return verdicts


def measure(approach: str, request: CheckRequest, data_dir: Path) -> dict[str, Observed]:
    """Run ``approach`` once per :data:`VARIANTS` entry, each in a fresh process with an empty cache."""
    runs = {}
    for variant, threads in VARIANTS.items():
        with tempfile.TemporaryDirectory(prefix=f"lb-{variant}-") as cache:
            cmd = [
                *(sys.executable, "-m", "lumbar_bench.cli", "--no-progress", "run", "--json"),
                *("--approach", approach, "--subset", SUBSET, "--fold", str(FOLD), "--seed", str(SEED)),
                *("--device", DEVICE, "--threads", str(threads), "--data", str(data_dir)),
                *("--cache-dir", cache, "--tracking-uri", request.tracking_uri),
                *("--experiment", request.experiment),
                *(a for o in request.overrides for a in ("--set", o)),
            ]
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            message = (done.stderr.strip().splitlines() or ["no output"])[-1]
            runs[variant] = Observed(approach, "FAILED", message=f"{variant}: {message}"[:500])
            continue
        run_id = json.loads(done.stdout.strip().splitlines()[-1])["run_id"]
        runs[variant] = _observed_from_run(approach, get_run(request.tracking_uri, run_id))
        log.info("%s %s: %s", approach, variant, runs[variant].rsna_score)
    return runs


def update(request: CheckRequest) -> Baseline:
    """Write the baseline file from measurement runs of each approach that runs (``check --update``)."""
    names = list(request.approaches) or [s.name for s in list_approaches()]
    names.sort(key=lambda n: n != REFERENCE)  # the prior first: the others are held against it
    data_dir = request.data_dir or defaults.ensure_phantom(
        request.cache_dir or default_cache_dir(), request.progress
    )
    experiment_id(request.tracking_uri, request.experiment)
    old = _previous(request.baseline_path)
    entries: dict[str, Expected] = dict(old.approaches) if old and request.approaches else {}
    left_out: dict[str, str] = {}
    digests: set[tuple[str, str]] = set()
    for name in names:
        runs = measure(name, request, data_dir)
        budget = get_spec(name).budget(SUBSET).minutes
        reason = _unfit(list(runs.values()), budget)
        if reason:
            left_out[name] = reason
            log.warning("%s left out of the baseline: %s", name, reason)
            continue
        digests |= {(r.split_digest, r.data_digest) for r in runs.values()}
        prior = entries.get(REFERENCE)
        entries[name] = expected_entry(name, runs, budget, prior.rsna_score if prior else None)
    if not entries:
        raise ConfigError(f"no approach ran; nothing to write ({left_out})")
    if len(digests) != 1 or (old and request.approaches and digests != {(old.split_digest, old.data_digest)}):
        raise ConfigError(f"runs disagree on split/data digests {sorted(digests)}; is the phantom changing?")
    split, data = digests.pop()
    baseline = Baseline(split, data, dict(sorted(entries.items())), generated=_generated(left_out))
    baseline.save(request.baseline_path)
    return baseline


def _generated(left_out: dict[str, str]) -> dict[str, Any]:
    """Provenance of a baseline: when, with what, and which approaches could not be baselined."""
    return {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "lumbar_bench": __version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "variants": VARIANTS,
        "left_out": left_out,
    }


def _unfit(runs: list[Observed], budget_minutes: float) -> str:
    """Why these runs cannot make a baseline entry (failed, no score, over budget); "" if they can."""
    for r in runs:
        if r.status != "FINISHED" or r.rsna_score is None:
            return f"run {r.status}: {r.message}"[:300]
        if r.budget_exceeded or (r.runtime_s or 0.0) > budget_minutes * 60:
            return f"over budget: {r.runtime_s or float('nan'):.0f} s > {budget_minutes * 60:.0f} s"
    return ""


def ungated(baseline: Baseline) -> list[str]:
    """List the registered approaches the baseline does not gate, with the reason recorded at update."""
    reasons = baseline.generated.get("left_out", {})
    return [
        f"{s.name} ({reasons.get(s.name, 'not in the baseline')})"
        for s in list_approaches()
        if s.name not in baseline.approaches
    ]


def _previous(path: Path) -> Baseline | None:
    """Return the existing baseline at ``path``, if there is a readable one."""
    try:
        return Baseline.load(path)
    except ConfigError:
        return None


def render(verdicts: list[Verdict], not_gated: list[str] = ()) -> str:
    """Plain-text table of expected against got, one line per approach, then its problems and notes."""
    head = (
        f"{'approach':<16} {'status':<9} {'rsna_score expected':>22} {'got':>8} {'dice floor':>10} "
        f"{'got':>6} {'runtime s':>10} {'budget s':>9}  verdict"
    )
    lines = [head, "-" * len(head)]
    for v in verdicts:
        e, o = v.expected, v.observed
        exp_score = f"{e.rsna_score:.4f} ± {e.rsna_score_tolerance:.3f}" if e else "–"
        floor = _fmt(e.dice_floor if e else None, 3)
        budget = f"{e.budget_minutes * 60:.0f}" if e else "–"
        lines.append(
            f"{v.approach:<16} {o.status:<9} {exp_score:>22} {_fmt(o.rsna_score, 4):>8} {floor:>10} "
            f"{_fmt(o.dice_mean, 3):>6} {_fmt(o.runtime_s, 1):>10} {budget:>9}  {'PASS' if v.ok else 'FAIL'}"
        )
        lines += [f"    FAIL {p}" for p in v.problems] + [f"    note {n}" for n in v.notes]
    failed = [v.approach for v in verdicts if not v.ok]
    lines += [f"warning: not gated: {n}" for n in not_gated]
    lines.append(
        f"gate {'FAILED: ' + ', '.join(failed) if failed else 'passed'} ({len(verdicts)} approaches)"
    )
    return "\n".join(lines)


def _fmt(value: float | None, digits: int) -> str:
    return "–" if value is None else f"{value:.{digits}f}"
