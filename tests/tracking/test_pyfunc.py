"""MLflow as its users expect: dataset inputs, a loadable pyfunc model, the registry, the board as a table."""

from __future__ import annotations

import json

import mlflow
import mlflow.pyfunc
import pandas as pd
import pytest
from mlflow import MlflowClient

from lumbar_bench.board.rows import TABLE
from lumbar_bench.cli import main
from lumbar_bench.constants import LABEL_COLUMNS
from lumbar_bench.data.labels import read_labels
from lumbar_bench.metrics.score import score
from lumbar_bench.run.runner import RunRequest, run
from lumbar_bench.tracking.models import load_model, run_model_id
from lumbar_bench.tracking.search import download_artifacts, find_runs, get_run


@pytest.fixture
def prior_runs(tiny_phantom, tmp_path, tracking_uri):
    """Two finished ``prior`` runs (seeds 0 and 1) on the tiny phantom."""
    results = [
        run(
            RunRequest(
                approach="prior",
                data_dir=tiny_phantom,
                subset="ci",
                device="cpu",
                seed=seed,
                tracking_uri=tracking_uri,
                cache_dir=tmp_path / "cache",
                progress=False,
            )
        )
        for seed in (0, 1)
    ]
    return results, tracking_uri, tmp_path / "cache"


def test_a_run_logs_its_training_and_evaluation_data(prior_runs):
    (result, _), uri, _ = prior_runs
    inputs = MlflowClient(uri).get_run(result.run_id).inputs.dataset_inputs
    contexts = {[t.value for t in d.tags if t.key == "mlflow.data.context"][0]: d.dataset for d in inputs}
    assert set(contexts) == {"training", "evaluation"}
    train, held = contexts["training"], contexts["evaluation"]
    assert train.name.startswith("phantom-") and train.name.endswith("f0-ci-train")
    assert held.name.endswith("f0-ci-eval") and train.digest != held.digest
    info = get_run(uri, result.run_id)
    assert info.tags["split_digest"][:8] in held.name and info.tags["data_digest"][:8] in held.name
    # the logged model's metrics name the evaluation dataset, so models can be found by it
    experiment = MlflowClient(uri).get_experiment_by_name("lumbar-bench").experiment_id
    found = MlflowClient(uri).search_logged_models(
        [experiment], datasets=[{"dataset_name": held.name, "dataset_digest": held.digest}]
    )
    assert {m.source_run_id for m in found} == {r.run_id for r in prior_runs[0]}


def test_the_logged_model_predicts_the_held_out_fold_with_the_runs_score(prior_runs, tiny_phantom, tmp_path):
    (result, _), uri, cache = prior_runs
    model = load_model(uri, result.run_id)
    assert isinstance(model, mlflow.pyfunc.PyFuncModel)
    labels = read_labels(download_artifacts(uri, result.run_id, "labels.csv", tmp_path / "a"))
    frame = pd.DataFrame({"data": str(tiny_phantom), "study_id": list(labels.index)})
    got = model.predict(frame, params={"part": "train", "device": "cpu", "cache_dir": str(cache)})
    assert len(got) == 25 * len(labels)
    assert score(labels, got).score == pytest.approx(result.metrics["rsna_score"], abs=1e-12)
    logged = MlflowClient(uri).get_logged_model(run_model_id(uri, result.run_id))
    assert logged.source_run_id == result.run_id and logged.params["config.alpha"] == "1.0"
    assert {m.key for m in logged.metrics} >= {"rsna_score", "rsna_score_ci_low", "rsna_score_ci_high"}


def test_predict_run_writes_the_test_part_through_the_logged_model(prior_runs, tiny_phantom, tmp_path):
    (result, _), uri, cache = prior_runs
    out = tmp_path / "sub.csv"
    args = ["--no-progress", "predict", "--run", result.run_id, "--data", str(tiny_phantom)]
    assert main([*args, "--cache-dir", str(cache), "--tracking-uri", uri, "--out", str(out)]) == 0
    sub = pd.read_csv(out)
    studies = pd.read_csv(tiny_phantom / "test_series_descriptions.csv").study_id.nunique()
    assert len(sub) == 25 * studies
    assert set(sub.row_id.str.split("_", n=1).str[1]) == set(LABEL_COLUMNS)
    # a bare directory is the same request as the CLI's (its test part)
    direct = load_model(uri, result.run_id).predict(str(tiny_phantom), params={"cache_dir": str(cache)})
    pd.testing.assert_frame_equal(direct.reset_index(drop=True), sub, check_dtype=False)


def test_leaderboard_registers_the_top_model_and_logs_a_table(prior_runs, tmp_path, monkeypatch, capsys):
    (first, second), uri, _ = prior_runs
    args = ["--no-progress", "leaderboard", "--tracking-uri", uri, "--results-dir", str(tmp_path / "r")]
    args += ["--bootstrap", "50", "--register", "lumbar-bench-best"]
    assert main(args) == 0
    assert main(args) == 0  # registering twice makes a new version
    printed = capsys.readouterr().err
    assert "registered lumbar-bench-best version 1" in printed and "version 2" in printed
    client = MlflowClient(uri)
    versions = client.search_model_versions("name = 'lumbar-bench-best'")
    assert sorted(int(v.version) for v in versions) == [1, 2]
    best = min((first, second), key=lambda r: r.metrics["rsna_score"])
    tags = versions[0].tags
    assert versions[0].run_id == best.run_id and tags["approach"] == "prior"
    assert float(tags["run_rsna_score"]) == pytest.approx(best.metrics["rsna_score"], abs=1e-6)
    assert tags["board_id"] and tags["board_ci"].startswith("[")
    # models:/ URIs and mlflow.load_table use the process-global store and experiment
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "lumbar-bench")
    loaded = mlflow.pyfunc.load_model(f"models:/lumbar-bench-best/{versions[0].version}")
    assert loaded.metadata.metadata["approach"] == "prior"

    boards = find_runs(uri, "lumbar-bench", tags={"kind": "leaderboard"})
    table = mlflow.load_table(TABLE, run_ids=[boards[0].run_id])
    assert list(table["approach"]) == ["prior"] and table["rsna_score"].iloc[0] > 0
    assert set(table["run_ids"].iloc[0].split(";")) == {first.run_id, second.run_id}
    # the board's runs-table view: filtered to its runs, best first, score, CI and runtime as columns
    view_path = [line for line in printed.splitlines() if "viewStateShareKey=" in line][-1]
    key = view_path.rsplit("viewStateShareKey=", 1)[1]
    experiment = client.get_experiment_by_name("lumbar-bench")
    view = json.loads(experiment.tags[f"mlflow.sharedViewState.{key}"])
    assert view["searchFilter"] == f"tags.leaderboard = '{boards[0].tags['board_id']}'"
    assert {"metrics.`rsna_score`", "metrics.`rsna_score_ci_low`", "metrics.`runtime/total_s`"} <= set(
        view["selectedColumns"]
    )


def test_runs_stay_lean_no_traces(prior_runs):
    _, uri, _ = prior_runs
    experiment = MlflowClient(uri).get_experiment_by_name("lumbar-bench").experiment_id
    assert list(MlflowClient(uri).search_traces(locations=[experiment])) == []
