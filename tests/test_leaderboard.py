import shutil
import time

import numpy as np
import pandas as pd
import pytest

from lumbar_bench import leaderboard, tracking
from lumbar_bench.cli import main
from lumbar_bench.constants import LABEL_COLUMNS, PROB_COLUMNS, row_id
from lumbar_bench.errors import ConfigError
from lumbar_bench.evaluation import evaluate_and_log
from lumbar_bench.metrics.bootstrap import Evidence, bootstrap_ci, paired_bootstrap, study_parts
from lumbar_bench.metrics.score import score_arrays

SPLIT = "a" * 64
OTHER_SPLIT = "b" * 64
EXP = "lb-test"


def _labels(n: int, seed: int, start: int = 1000) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    codes = rng.choice([0, 1, 2], p=[0.7, 0.2, 0.1], size=(n, len(LABEL_COLUMNS)))
    codes[rng.random(codes.shape) < 0.02] = -1
    return pd.DataFrame(
        codes.astype(np.int8),
        index=pd.Index(range(start, start + n), name="study_id"),
        columns=list(LABEL_COLUMNS),
    )


def _probs(labels: pd.DataFrame, skill: float, seed: int) -> np.ndarray:
    """Mix a prior with the one-hot truth: ``skill`` 0 = prior, 1 = oracle-ish."""
    rng = np.random.default_rng(seed)
    codes = labels.to_numpy().clip(0, 2)
    onehot = np.eye(3)[codes]
    noise = rng.dirichlet([2, 2, 2], size=codes.shape)
    return (1 - skill) * (0.8 * np.array([0.7, 0.2, 0.1]) + 0.2 * noise) + skill * (0.9 * onehot + 0.1 / 3)


def _submission(labels: pd.DataFrame, probs: np.ndarray) -> pd.DataFrame:
    rows = [row_id(s, lab) for s in labels.index for lab in LABEL_COLUMNS]
    flat = probs.reshape(-1, 3)
    return pd.DataFrame({"row_id": rows, **{c: flat[:, i] for i, c in enumerate(PROB_COLUMNS)}})


def log_run(
    uri,
    tmp_path,
    approach,
    fold,
    skill,
    *,
    split=SPLIT,
    subset="ci",
    chash=None,
    status="FINISHED",
    extra=None,
    seed=0,
):
    """A run as ``runner.run`` logs it: tags, metrics, predictions.csv and labels.csv."""
    labels = _labels(40, seed=100 + fold, start=1000 + 100 * fold)
    tags = {
        "approach": approach,
        "config_hash": chash or f"{approach}-cfg",
        "split_digest": split,
        "data_digest": "d" * 64,
        "fold": fold,
        "subset": subset,
        "seed": 0,
        "device": "cpu",
        "budget": "3 min cpu",
        "budget_minutes": 3.0,
        "dataset": "phantom",
    }
    work = tmp_path / f"{approach}-{fold}-{time.monotonic_ns()}"
    with tracking.tracked_run(uri, EXP, f"{approach}-f{fold}-{subset}", tags) as trun:
        metrics = evaluate_and_log(labels, _submission(labels, _probs(labels, skill, seed)), trun, work, "t")
        trun.log_metrics(
            {**metrics, "runtime/total_s": 12.0 + fold, "runtime/train_s": 10.0, **(extra or {})}
        )
        trun.set_tags({"budget_exceeded": "false"})
    if status != "FINISHED":
        trun.finish(status)
    return trun.run_id, metrics


@pytest.fixture(scope="module")
def _board_store(tmp_path_factory):
    """Six runs (3 approaches x 2 folds) made once; each test gets its own copy of the store."""
    tmp = tmp_path_factory.mktemp("board")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    ids = {}
    for fold in (0, 1):
        ids[("prior", fold)] = log_run(uri, tmp, "prior", fold, 0.0)
        ids[("resnet18", fold)] = log_run(uri, tmp, "resnet18", fold, 0.3)
        ids[("nnunet-raw", fold)] = log_run(
            uri, tmp, "nnunet-raw", fold, 0.6, extra={"dice_mean": 0.4 + fold / 10}
        )
    return tmp / "mlflow.db", ids


@pytest.fixture
def board_runs(_board_store, tracking_uri):
    """The module's six runs, in this test's own store (``tracking_uri``)."""
    db, ids = _board_store
    shutil.copy(db, tracking_uri.removeprefix("sqlite:///"))
    return ids


def test_study_parts_reproduce_the_official_score():
    labels = _labels(60, seed=1)
    codes, probs = labels.to_numpy().astype(np.int64), _probs(labels, 0.4, seed=2)
    probs[0, 0] = [0.0, 0.0, 2.0]  # unnormalised and clipped rows must match too
    num, den = study_parts(codes, probs)
    ev = Evidence(np.asarray(labels.index), np.zeros(len(labels), int), num, den)
    from lumbar_bench.metrics.bootstrap import fold_mean_scores

    assert fold_mean_scores(ev, np.ones((1, len(labels))))[0] == pytest.approx(
        score_arrays(codes, probs).score, rel=1e-12
    )


def test_bootstrap_interval_and_paired_p_value():
    labels = _labels(80, seed=3)
    codes = labels.to_numpy().astype(np.int64)
    folds = np.repeat([0, 1], 40)

    def evidence(skill):
        num, den = study_parts(codes, _probs(labels, skill, seed=4))
        return Evidence(np.asarray(labels.index), folds, num, den)

    good, bad = evidence(0.7), evidence(0.0)
    low, high = bootstrap_ci(good, 500, 0)
    assert (low, high) == bootstrap_ci(good, 500, 0)  # fixed seed: reproducible
    from lumbar_bench.metrics.bootstrap import fold_mean_scores

    point = fold_mean_scores(good, np.ones((1, 80)))[0]
    assert low < point < high
    clear = paired_bootstrap(good, bad, "resnet18", 500, 0)
    assert clear.diff < 0 and clear.ci_high < 0 and clear.p_value < 0.01 and clear.n_studies == 80
    same = paired_bootstrap(good, good, "resnet18", 500, 0)
    assert same.diff == 0 and same.p_value == 1.0


def test_board_ranks_comparable_runs_with_intervals(board_runs, tracking_uri):
    board = leaderboard.build(leaderboard.BoardRequest(tracking_uri, EXP, n_boot=200))
    assert [r.approach for r in board.rows] == ["nnunet-raw", "resnet18", "prior"]
    for row in board.rows:
        assert row.folds == (0, 1) and row.n_studies == 80
        assert row.ci_low <= row.score <= row.ci_high
        fold_scores = [board_runs[(row.approach, f)][1]["rsna_score"] for f in (0, 1)]
        assert row.score == pytest.approx(np.mean(fold_scores))
    top = board.rows[0]
    assert top.metrics["dice_mean"] == pytest.approx(0.45)
    assert top.paired.baseline == "resnet18" and top.paired.diff < 0 and top.paired.p_value < 0.05
    assert board.rows[1].paired is None  # the baseline itself
    assert "dice_mean" not in board.rows[2].metrics


def test_latest_run_per_fold_wins_and_failed_runs_are_ignored(board_runs, tracking_uri, tmp_path):
    log_run(tracking_uri, tmp_path, "prior", 0, 0.0, status="FAILED")
    newer, _ = log_run(tracking_uri, tmp_path, "prior", 0, 0.05, seed=9)
    board = leaderboard.build(leaderboard.BoardRequest(tracking_uri, EXP, n_boot=100))
    prior = next(r for r in board.rows if r.approach == "prior")
    assert newer in prior.run_ids and len(prior.run_ids) == 2
    assert any("took the latest" in n and "prior" in n for n in board.notes)


def test_incomparable_runs_are_refused_until_one_group_is_picked(board_runs, tracking_uri, tmp_path):
    log_run(tracking_uri, tmp_path, "prior", 0, 0.0, split=OTHER_SPLIT)
    log_run(tracking_uri, tmp_path, "prior", 0, 0.0, subset="small")
    with pytest.raises(ConfigError, match="not comparable") as info:
        leaderboard.build(leaderboard.BoardRequest(tracking_uri, EXP, n_boot=50))
    assert "--split bbbbbbbbbbbb" in str(info.value) and "--subset small" in str(info.value)
    board = leaderboard.build(
        leaderboard.BoardRequest(tracking_uri, EXP, split="aaaaaaaa", subset="ci", n_boot=50)
    )
    assert len(board.rows) == 3 and board.split_digest == SPLIT
    other = leaderboard.build(leaderboard.BoardRequest(tracking_uri, EXP, subset="small", n_boot=50))
    assert [r.approach for r in other.rows] == ["prior"]
    assert any("no resnet18" in n for n in other.notes)


def test_cli_writes_files_logs_a_board_run_and_tags_members(board_runs, tracking_uri, tmp_path, capsys):
    out = tmp_path / "board.md"
    code = main(
        [
            "leaderboard",
            "--tracking-uri",
            tracking_uri,
            "--experiment",
            EXP,
            "--subset",
            "ci",
            "--format",
            "markdown",
            "--out",
            str(out),
            "--results-dir",
            str(tmp_path / "results"),
            "--bootstrap",
            "100",
        ]
    )
    assert code == 0
    text = out.read_text()
    assert "| 1 | nnunet-raw |" in text and "Δ vs resnet18" in text
    folder = tmp_path / "results" / EXP
    assert {p.name for p in folder.iterdir()} == {"leaderboard.md", "leaderboard.csv", "leaderboard.png"}
    frame = pd.read_csv(folder / "leaderboard.csv")
    assert list(frame["approach"]) == ["nnunet-raw", "resnet18", "prior"]
    assert {"ci_low", "ci_high", "loss/spinal", "balanced_accuracy", "dice_mean", "paired_p_value"} <= set(
        frame
    )
    boards = [r for r in tracking.search_runs(tracking_uri, EXP, "tags.kind = 'leaderboard'")]
    assert len(boards) == 1
    board_id = boards[0].data.tags["board_id"]
    tagged = tracking.search_runs(tracking_uri, EXP, f"tags.leaderboard = '{board_id}'")
    assert len(tagged) == 6
    from mlflow import MlflowClient

    names = {a.path for a in MlflowClient(tracking_uri).list_artifacts(boards[0].info.run_id)}
    assert names == {"leaderboard.md", "leaderboard.csv", "leaderboard.png"}
    # the board run itself never shows up as a row on the next board
    assert (
        main(
            [
                "leaderboard",
                "--tracking-uri",
                tracking_uri,
                "--experiment",
                EXP,
                "--format",
                "csv",
                "--results-dir",
                str(tmp_path / "results"),
                "--bootstrap",
                "50",
            ]
        )
        == 0
    )
    assert len(pd.read_csv(folder / "leaderboard.csv")) == 3


def test_cli_table_and_empty_store(board_runs, tracking_uri, tmp_path, capsys):
    assert (
        main(
            [
                "leaderboard",
                "--tracking-uri",
                tracking_uri,
                "--experiment",
                EXP,
                "--bootstrap",
                "50",
                "--results-dir",
                str(tmp_path / "r"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "nnunet-raw" in out and "score [95% CI]" in out
    assert (
        main(
            [
                "leaderboard",
                "--tracking-uri",
                tracking_uri,
                "--experiment",
                "nothing-here",
                "--results-dir",
                str(tmp_path / "r"),
            ]
        )
        == 2
    )
    assert "no FINISHED" in capsys.readouterr().err
