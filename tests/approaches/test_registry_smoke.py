"""Every registered approach gets the same end-to-end smoke test, for free."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest

from lumbar_bench.approaches import registry
from lumbar_bench.constants import LABEL_COLUMNS
from lumbar_bench.data.labels import read_labels
from lumbar_bench.gate.baseline import Baseline
from lumbar_bench.metrics.score import score
from lumbar_bench.run.runner import RunRequest, RunResult, run
from lumbar_bench.tracking.models import load_model
from lumbar_bench.tracking.search import download_artifacts, get_run, search_runs
from tests.conftest import BASELINE

FAST = {"prior"}
#: Learned approaches the gate trains on ci anyway (conftest ``gate``): their smoke test reads its run.
GATED = set(Baseline.load(BASELINE).approaches) - FAST


def _params():
    for spec in registry.list_approaches():
        marks = [] if spec.name in FAST else [pytest.mark.slow]
        if spec.name.startswith("nnunet"):
            marks.append(pytest.mark.nnunet)
        yield pytest.param(spec.name, marks=marks, id=spec.name)


def _ci_run(name, request, tiny_phantom, tmp_path, tracking_uri):
    """``(result, uri, data_dir, cache_dir)`` of a ci run: the gate's, or a new one on the tiny phantom."""
    if name in GATED:
        gate = request.getfixturevalue("gate")
        info = get_run(gate.request.tracking_uri, gate.run_id(name))
        result = RunResult(
            info.run_id,
            name,
            0,
            "ci",
            info.tags["config_hash"],
            info.tags["split_digest"],
            dict(info.metrics),
        )
        return result, gate.request.tracking_uri, gate.request.data_dir, gate.request.cache_dir
    result = run(
        RunRequest(
            approach=name,
            data_dir=tiny_phantom,
            subset="ci",
            device="cpu",
            tracking_uri=tracking_uri,
            experiment="smoke",
            cache_dir=tmp_path / "cache",
            progress=False,
        )
    )
    return result, tracking_uri, tiny_phantom, tmp_path / "cache"


@pytest.mark.parametrize("name", list(_params()))
def test_ci_run_logs_a_reproducible_score(name, request, tiny_phantom, tmp_path, tracking_uri):
    result, tracking_uri, data_dir, cache_dir = _ci_run(name, request, tiny_phantom, tmp_path, tracking_uri)
    out = result.as_dict()
    for key in ("run_id", "approach", "fold", "rsna_score", "accuracy", "balanced_accuracy"):
        assert key in out
    assert 0 < out["rsna_score"] < 5 and 0 <= out["accuracy"] <= 1

    info = get_run(tracking_uri, result.run_id)
    assert info.status == "FINISHED"
    for tag in ("approach", "config_hash", "split_digest", "data_digest", "fold", "subset", "seed", "device"):
        assert info.tags[tag], tag
    assert "version.torch" in info.params
    assert info.metrics["rsna_score"] == pytest.approx(out["rsna_score"])
    for metric in (
        "loss/spinal",
        "loss/foraminal",
        "loss/subarticular",
        "loss/any_severe_spinal",
        "runtime/train_s",
        "runtime/total_s",
    ):
        assert metric in info.metrics, metric
    # every built-in approach counts its training work: none for the prior, some for the rest
    assert info.tags["work_counted"] == "true"
    flops = info.metrics["runtime/train_flops"]
    assert flops == 0 if name == "prior" else flops > 1e6

    # the logged score is recomputable from the logged artifacts, through the CLI
    art = tmp_path / "art"
    labels = download_artifacts(tracking_uri, result.run_id, "labels.csv", art)
    preds = download_artifacts(tracking_uri, result.run_id, "predictions.csv", art)
    cli = subprocess.run(
        [sys.executable, "-m", "lumbar_bench.cli", "score", str(labels), str(preds), "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(cli.stdout)["score"] == pytest.approx(out["rsna_score"], rel=1e-12)

    # the logged MLflow model (the path of `predict --run` and `mlflow.pyfunc`) predicts every row
    # of the held-out fold again, with the run's score
    held_out = read_labels(labels)
    frame = pd.DataFrame({"data": str(data_dir), "study_id": list(held_out.index)})
    model = load_model(tracking_uri, result.run_id)
    sub = model.predict(frame, params={"part": "train", "device": "cpu", "cache_dir": str(cache_dir)})
    assert len(sub) == 25 * len(held_out)
    assert set(sub.row_id.str.split("_", n=1).str[1]) == set(LABEL_COLUMNS)
    assert score(held_out, sub).score == pytest.approx(out["rsna_score"], abs=1e-6)


def test_a_crash_marks_the_run_failed(tiny_phantom, tmp_path, tracking_uri, monkeypatch):
    from lumbar_bench.approaches import prior

    def boom(*args, **kwargs):
        raise RuntimeError("simulated crash in fit")

    monkeypatch.setattr(prior.PriorApproach, "fit", boom)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(
            RunRequest(
                approach="prior",
                data_dir=tiny_phantom,
                subset="ci",
                device="cpu",
                tracking_uri=tracking_uri,
                experiment="crash",
                cache_dir=tmp_path / "cache",
                progress=False,
            )
        )
    runs = search_runs(tracking_uri, "crash")
    assert [r.status for r in runs] == ["FAILED"]
    assert runs[0].tags["failure_reason"] == "RuntimeError"
    assert "simulated crash" in runs[0].tags["failure_message"]
