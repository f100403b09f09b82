"""``lumbar-bench claims`` on a store of tiny fake runs: supported, not supported, undecided, missing."""

from __future__ import annotations

import shutil
import time

import numpy as np
import pandas as pd
import pytest

from lumbar_bench.board import claims
from lumbar_bench.cli import main
from lumbar_bench.constants import LABEL_COLUMNS, PROB_COLUMNS, row_id
from lumbar_bench.run.evaluation import evaluate_and_log
from lumbar_bench.tracking.client import tracked_run

EXP = "claims-test"
RUNTIME = {"resnet18": 50.0, "nnunet-raw": 900.0, "nnunet-qc": 700.0, "nnunet-refined": 2000.0}
#: qc reuses raw's cached stages: their recorded build seconds count as its compute too.
REUSED = {"nnunet-qc": 200.0}
#: Training work the runs report (resnet18 here reports none: seconds only).
WORK = {"nnunet-raw": 3.5e12, "nnunet-qc": 3.5e12, "nnunet-refined": 9.0e12}


def _labels(n: int = 60) -> pd.DataFrame:
    rng = np.random.default_rng(7)
    codes = rng.choice([0, 1, 2], p=[0.7, 0.2, 0.1], size=(n, len(LABEL_COLUMNS)))
    return pd.DataFrame(
        codes.astype(np.int8),
        index=pd.Index(range(1000, 1000 + n), name="study_id"),
        columns=list(LABEL_COLUMNS),
    )


def _submission(labels: pd.DataFrame, skill: float, noise_seed: int) -> pd.DataFrame:
    """A prior mixed with the one-hot truth: ``skill`` 0 = prior, 1 = nearly the truth."""
    rng = np.random.default_rng(noise_seed)
    onehot = np.eye(3)[labels.to_numpy().clip(0, 2)]
    noise = rng.dirichlet([2, 2, 2], size=onehot.shape[:2])
    probs = (1 - skill) * (0.8 * np.array([0.7, 0.2, 0.1]) + 0.2 * noise) + skill * (0.9 * onehot + 0.1 / 3)
    flat = probs.reshape(-1, 3)
    rows = [row_id(s, lab) for s in labels.index for lab in LABEL_COLUMNS]
    return pd.DataFrame({"row_id": rows, **{c: flat[:, i] for i, c in enumerate(PROB_COLUMNS)}})


def _log(uri, tmp, approach, skill, seed, *, fold=0, subset="small", status="FINISHED", noise=None):
    """One run as the runner logs it: tags, metrics (``runtime/*``), predictions and labels."""
    labels = _labels()
    tags = {
        "approach": approach,
        "config_hash": f"{approach}-cfg",
        "split_digest": "a" * 64,
        "data_digest": "d" * 64,
        "fold": fold,
        "subset": subset,
        "seed": seed,
    }
    work = tmp / f"{approach}-{seed}-{time.monotonic_ns()}"
    with tracked_run(uri, EXP, f"{approach}-s{seed}", tags) as trun:
        sub = _submission(labels, skill, noise if noise is not None else seed)
        metrics = evaluate_and_log(labels, sub, trun, work, "t")
        trun.log_metrics({**metrics, "runtime/total_s": RUNTIME[approach] + seed})
        if approach in WORK:
            trun.log_metrics({"runtime/train_flops": WORK[approach]})
        if approach in REUSED:
            trun.log_metrics({"runtime/reused_s": REUSED[approach]})
    if status != "FINISHED":
        trun.finish(status)


@pytest.fixture(scope="module")
def _claims_store(tmp_path_factory):
    """raw clearly beats resnet18 (supported), qc is clearly worse than raw (not supported),
    refined is raw with other noise (undecided); two seeds each, plus runs that must not count."""
    tmp = tmp_path_factory.mktemp("claims")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    for seed in (0, 1):
        _log(uri, tmp, "resnet18", 0.2, seed)
        _log(uri, tmp, "nnunet-raw", 0.7, seed)
        _log(uri, tmp, "nnunet-qc", 0.1, seed)
        _log(uri, tmp, "nnunet-refined", 0.7, seed, noise=10 + seed)
    _log(uri, tmp, "nnunet-qc", 0.99, 2, fold=1)  # another fold
    _log(uri, tmp, "nnunet-qc", 0.99, 3, status="FAILED")  # not finished
    _log(uri, tmp, "nnunet-qc", 0.99, 4, subset="ci")  # another subset
    return tmp / "mlflow.db"


@pytest.fixture
def store(_claims_store, tmp_path):
    shutil.copy(_claims_store, tmp_path / "mlflow.db")
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def _by_approach(report: claims.ClaimsReport) -> dict[str, claims.ClaimResult]:
    return {r.claim.approach: r for r in report.results}


def test_each_claim_gets_its_verdict_with_seeds_and_compute(store):
    report = claims.build(claims.ClaimsRequest(store, EXP, n_boot=300))
    results = _by_approach(report)
    assert results["nnunet-raw"].verdict == claims.SUPPORTED
    assert results["nnunet-raw"].paired.ci_high < 0
    assert results["nnunet-qc"].verdict == claims.NOT_SUPPORTED
    assert results["nnunet-qc"].paired.ci_low > 0
    assert results["nnunet-refined"].verdict == claims.UNDECIDED
    qc = results["nnunet-qc"]
    assert qc.side.seeds == (0, 1)  # the other fold, the FAILED run and the ci run do not count
    assert qc.side.runtime_s == pytest.approx(700.5 + 200.0)  # its own seconds and the stages it reused
    assert results["nnunet-raw"].reference.runtime_s == pytest.approx(50.5)
    assert results["nnunet-raw"].side.work_flops == pytest.approx(3.5e12)
    assert np.isnan(results["nnunet-raw"].reference.work_flops)  # seconds only
    assert qc.paired.diff == pytest.approx(qc.side.score - qc.reference.score)


def test_the_table_fits_120_columns_and_states_compute(store, capsys):
    assert main(["claims", "--tracking-uri", store, "--experiment", EXP, "--bootstrap", "200"]) == 0
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= 120
    for text in (
        "nnunet-raw < resnet18",
        "supported",
        "not supported",
        "undecided: CI spans 0",
        "900/50",
        "900/900",  # qc against raw: the same compute once qc's reused stages count
        "compute s",
        "2/2",
        "work TFLOP",
        "3.5/–",  # raw counted its work, resnet18 here did not
    ):
        assert text in out, text


def test_markdown(store, capsys):
    args = [
        "claims",
        "--tracking-uri",
        store,
        "--experiment",
        EXP,
        "--format",
        "markdown",
        "--bootstrap",
        "200",
    ]
    assert main(args) == 0
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("|")]
    assert len(table) == 2 + len(claims.CLAIMS)
    assert all(line.count("|") == len(claims.HEADER) + 1 for line in table)


def test_a_missing_side_says_so_instead_of_crashing(tracking_uri, tmp_path, capsys):
    for seed in (0, 1):
        _log(tracking_uri, tmp_path, "resnet18", 0.2, seed)
        _log(tracking_uri, tmp_path, "nnunet-raw", 0.7, seed)
    assert main(["claims", "--tracking-uri", tracking_uri, "--experiment", EXP, "--bootstrap", "100"]) == 0
    out = capsys.readouterr().out
    assert "no finished nnunet-qc runs on small fold 0" in out
    assert "no finished nnunet-refined runs on small fold 0" in out
    assert "supported" in out


def test_an_empty_store_leaves_every_claim_open(tracking_uri):
    report = claims.build(claims.ClaimsRequest(tracking_uri, EXP, subset="ci", fold=2))
    for result in report.results:
        claim = result.claim
        assert result.verdict == (
            f"no finished {claim.approach} runs on ci fold 2; no finished {claim.reference} runs on ci fold 2"
        )
    assert "no finished" in claims.to_text_table(report)


def test_help_shows_an_example(capsys):
    with pytest.raises(SystemExit):
        main(["claims", "--help"])
    assert "lumbar-bench claims --subset ci --format markdown" in capsys.readouterr().out
