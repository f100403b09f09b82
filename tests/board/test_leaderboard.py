import io
import shutil
import time

import numpy as np
import pandas as pd
import pytest

from lumbar_bench.board import leaderboard, render
from lumbar_bench.cli import main
from lumbar_bench.constants import LABEL_COLUMNS, PROB_COLUMNS, row_id
from lumbar_bench.core.errors import ConfigError
from lumbar_bench.metrics.bootstrap import Evidence, bootstrap_ci, paired_bootstrap, study_parts
from lumbar_bench.metrics.score import score_arrays
from lumbar_bench.run.evaluation import evaluate_and_log
from lumbar_bench.tracking.client import tracked_run
from lumbar_bench.tracking.search import search_runs

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
    seed_tag=0,
    tags=None,
):
    """A run as ``runner.run`` logs it: tags, metrics, predictions.csv and labels.csv.

    ``seed`` draws the prediction noise; ``seed_tag`` is the run's ``seed`` tag.
    """
    labels = _labels(40, seed=100 + fold, start=1000 + 100 * fold)
    tags = {
        "approach": approach,
        "config_hash": chash or f"{approach}-cfg",
        "split_digest": split,
        "data_digest": "d" * 64,
        "fold": fold,
        "subset": subset,
        "seed": seed_tag,
        "device": "cpu",
        "budget": "3 min cpu",
        "budget_minutes": 3.0,
        "dataset": "phantom",
        **(tags or {}),
    }
    work = tmp_path / f"{approach}-{fold}-{time.monotonic_ns()}"
    with tracked_run(uri, EXP, f"{approach}-f{fold}-{subset}", tags) as trun:
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
    from lumbar_bench.metrics.bootstrap import point_estimate

    assert point_estimate(ev) == pytest.approx(score_arrays(codes, probs).score, rel=1e-12)


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
    from lumbar_bench.metrics.bootstrap import point_estimate

    point = point_estimate(good)
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


def test_the_pairing_baseline_may_name_one_config_of_an_approach(board_runs, tracking_uri, tmp_path):
    for fold in (0, 1):
        log_run(tracking_uri, tmp_path, "resnet18", fold, 0.5, chash="resnet18-aid")
    board = leaderboard.build(
        leaderboard.BoardRequest(tracking_uri, EXP, n_boot=100, baseline="resnet18:resnet18-c")
    )
    aid = next(r for r in board.rows if r.config_hash == "resnet18-aid")
    assert aid.paired is not None and aid.paired.diff < 0  # paired against resnet18-cfg, which it beats
    assert next(r for r in board.rows if r.config_hash == "resnet18-cfg").paired is None
    by_name = leaderboard.build(leaderboard.BoardRequest(tracking_uri, EXP, n_boot=100))
    assert next(r for r in by_name.rows if r.config_hash == "resnet18-cfg").paired.diff > 0  # vs the best
    none = leaderboard.build(leaderboard.BoardRequest(tracking_uri, EXP, n_boot=50, baseline="resnet18:zz"))
    assert all(r.paired is None for r in none.rows) and any("no resnet18:zz runs" in n for n in none.notes)


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
    boards = [r for r in search_runs(tracking_uri, EXP, "tags.kind = 'leaderboard'")]
    assert len(boards) == 1
    board_id = boards[0].tags["board_id"]
    tagged = search_runs(tracking_uri, EXP, f"tags.leaderboard = '{board_id}'")
    assert len(tagged) == 6
    from mlflow import MlflowClient

    names = {a.path for a in MlflowClient(tracking_uri).list_artifacts(boards[0].run_id)}
    assert names == {"leaderboard.md", "leaderboard.csv", "leaderboard.png", "leaderboard.json"}
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


# ---------------------------------------------------------------- seeds and folds in every interval

TODAY_CSV = [
    "rank",
    "approach",
    "config_hash",
    "n_folds",
    "folds",
    "n_studies",
    "rsna_score",
    "rsna_score_std",
    "ci_low",
    "ci_high",
    "loss/spinal",
    "loss/foraminal",
    "loss/subarticular",
    "loss/any_severe_spinal",
    "accuracy",
    "balanced_accuracy",
    "dice_mean",
    "reference/prior_score",
    "reference/oracle_score",
    "runtime/total_s",
    "runtime/train_s",
    "runtime/gpu_s",
    "gpu/peak_memory_gb",
    "budget",
    "budget_exceeded",
    "paired_baseline",
    "paired_n_studies",
    "paired_diff",
    "paired_ci_low",
    "paired_ci_high",
    "paired_p_value",
    "run_ids",
]
BLEND = {
    "grading/blend_spinal": 0.6,
    "grading/blend_foraminal": 0.5,
    "grading/blend_subarticular": 0.4,
    "grading/prior_fallback_fraction": 0.25,
}
REFINED, QC = "3f9a0c1d2e4b", "a1b2c3d4e5f6"


def _seeded_evidence(skills, n=60, n_folds=2):
    """Evidence of one approach, one seed per skill, and each seed's official fold scores."""
    from lumbar_bench.metrics.score import score

    labels = _labels(n, seed=5)
    codes, fold_of = labels.to_numpy().astype(np.int64), np.arange(n) % n_folds
    nums, dens, fold_scores = [], [], []
    for s, skill in enumerate(skills):
        probs = _probs(labels, skill, seed=10 + s)
        num, den = study_parts(codes, probs)
        nums.append(num)
        dens.append(den)
        sub = _submission(labels, probs)
        fold_scores.append([score(labels[fold_of == f], sub).score for f in range(n_folds)])
    k = len(skills)
    ev = Evidence(
        np.tile(np.asarray(labels.index), k),
        np.tile(fold_of, k),
        np.vstack(nums),
        np.vstack(dens),
        np.repeat(np.arange(k), n),
    )
    return ev, np.array(fold_scores)


def test_bootstrap_point_estimate_is_the_mean_over_seeds_of_the_official_score():
    from lumbar_bench.metrics.bootstrap import point_estimate

    ev, fold_scores = _seeded_evidence([0.2, 0.5, 0.7])
    assert ev.n_seeds == 3
    assert point_estimate(ev) == pytest.approx(fold_scores.mean(axis=1).mean(), rel=1e-12)


def test_two_level_interval_covers_seed_spread_and_falls_back_to_studies_with_one_seed():
    ev, _ = _seeded_evidence([0.1, 0.5, 0.9])
    two = bootstrap_ci(ev, 400, 0)
    studies = bootstrap_ci(ev, 400, 0, seeds=False)
    assert two[1] - two[0] >= studies[1] - studies[0]
    assert two[1] - two[0] > 1.5 * (studies[1] - studies[0])  # these seeds disagree a lot
    one, _ = _seeded_evidence([0.5])
    assert bootstrap_ci(one, 300, 0) == bootstrap_ci(one, 300, 0, seeds=False)


def test_paired_two_level_bootstrap_on_shared_studies():
    from lumbar_bench.metrics.bootstrap import point_estimate

    good, _ = _seeded_evidence([0.6, 0.7, 0.8])
    bad, _ = _seeded_evidence([0.0, 0.05])
    clear = paired_bootstrap(good, bad, "resnet18", 400, 0)
    assert clear.n_studies == 60 and clear.diff == pytest.approx(point_estimate(good) - point_estimate(bad))
    assert clear.ci_high < 0 and clear.p_value < 0.01
    same = paired_bootstrap(good, good, "resnet18", 400, 0)
    assert same.diff == 0 and same.p_value == 1.0
    part = good.take(np.asarray(good.study_ids[:30]))  # only half the studies are shared
    assert paired_bootstrap(part, bad, "resnet18", 100, 0).n_studies == 30


def test_collapsed_to_prior_compares_with_the_training_prior():
    from lumbar_bench.approaches.prior import fit_prior, prior_submission
    from lumbar_bench.run.evaluation import collapse_tags, collapsed_to_prior

    train, held_out = _labels(50, seed=7), _labels(20, seed=8, start=5000)
    prior = prior_submission(fit_prior(train), list(held_out.index))
    assert collapsed_to_prior(train, held_out, prior)
    doubled = prior.assign(**{c: 2 * prior[c] for c in prior.columns if c != "row_id"})
    assert collapsed_to_prior(train, held_out, doubled)  # same distribution once normalised
    learned = _submission(held_out, _probs(held_out, 0.5, seed=1))
    assert not collapsed_to_prior(train, held_out, learned)
    assert collapse_tags("resnet18", train, held_out, prior) == {"collapsed_to_prior": "true"}
    assert collapse_tags("nnunet-qc", train, held_out, learned) == {"collapsed_to_prior": "false"}
    assert collapse_tags("prior", train, held_out, prior) == {}


@pytest.fixture(scope="module")
def _seeded_store(_board_store, tmp_path_factory):
    """The six one-seed runs plus nnunet-refined (2 folds x 3 seeds) and nnunet-qc (fold 0 lacks seed 2)."""
    db, _ = _board_store
    tmp = tmp_path_factory.mktemp("seeded")
    shutil.copy(db, tmp / "mlflow.db")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    scores = {}
    for fold in (0, 1):
        for s, skill in enumerate((0.45, 0.6, 0.75)):
            _, m = log_run(
                uri,
                tmp,
                "nnunet-refined",
                fold,
                skill,
                seed=s,
                seed_tag=s,
                chash=REFINED,
                extra=BLEND,
                tags={"collapsed_to_prior": "false"},
            )
            scores[(fold, s)] = m["rsna_score"]
    for fold, s in ((0, 0), (0, 1), (1, 0), (1, 1), (1, 2)):
        collapsed = s == 1  # these runs predict (nearly) the prior: tagged as the runner would
        log_run(
            uri,
            tmp,
            "nnunet-qc",
            fold,
            0.0 if collapsed else 0.5,
            seed=s,
            seed_tag=s,
            chash=QC,
            tags={"collapsed_to_prior": str(collapsed).lower()},
        )
    return tmp / "mlflow.db", scores


@pytest.fixture
def seeded_runs(_seeded_store, tracking_uri):
    """The seeded store, copied into this test's ``tracking_uri``; returns nnunet-refined's scores."""
    db, scores = _seeded_store
    shutil.copy(db, tracking_uri.removeprefix("sqlite:///"))
    return scores


@pytest.fixture
def seeded_board(seeded_runs, tracking_uri):
    return leaderboard.build(leaderboard.BoardRequest(tracking_uri, EXP, n_boot=200))


def _by_name(board, approach):
    return next(r for r in board.rows if r.approach == approach)


def test_seeds_pool_into_one_row_with_a_two_level_interval(seeded_board, seeded_runs):
    board = seeded_board
    assert sorted(r.approach for r in board.rows) == [
        "nnunet-qc",
        "nnunet-raw",
        "nnunet-refined",
        "prior",
        "resnet18",
    ]
    refined = _by_name(board, "nnunet-refined")
    assert refined.folds == (0, 1) and refined.seeds == (0, 1, 2) and refined.n_seeds == 3
    assert len(refined.run_ids) == 6 and refined.n_studies == 80
    per_seed = [(seeded_runs[(0, s)] + seeded_runs[(1, s)]) / 2 for s in range(3)]
    assert refined.score == pytest.approx(sum(per_seed) / 3)
    mean = sum(per_seed) / 3
    assert refined.seed_std == pytest.approx((sum((x - mean) ** 2 for x in per_seed) / 2) ** 0.5)
    assert refined.ci_low <= refined.score <= refined.ci_high
    assert refined.paired is not None and refined.paired.n_studies == 80
    assert _by_name(board, "resnet18").n_seeds == 1 and np.isnan(_by_name(board, "resnet18").seed_std)
    assert any(n.startswith("one seed for") and "resnet18" in n and "prior" in n for n in board.notes)
    text = render.to_text_table(board)
    assert "2×3" in text and "2×1" in text and "two-level bootstrap" in text


def test_mixed_seed_counts_say_which_fold_lacks_which_seed(seeded_board):
    qc = _by_name(seeded_board, "nnunet-qc")
    assert qc.seeds == (0, 1, 2) and len(qc.run_ids) == 5
    assert f"nnunet-qc {QC}: fold 0 lacks seed 2" in seeded_board.notes
    assert not any("nnunet-refined" in n and "lacks" in n for n in seeded_board.notes)
    assert np.isfinite(qc.seed_std)  # over seeds 0 and 1, which ran both folds


def test_csv_keeps_todays_columns_and_adds_seeds(seeded_board):
    frame = pd.read_csv(io.StringIO(render.render(seeded_board, "csv")))
    assert list(frame.columns) == CSV_COLUMNS
    assert [c for c in frame.columns if c in TODAY_CSV] == TODAY_CSV
    refined = frame.set_index("approach").loc["nnunet-refined"]
    row = _by_name(seeded_board, "nnunet-refined")
    assert refined["n_seeds"] == 3 and refined["seeds"] == "0 1 2"
    assert refined["seed_std"] == pytest.approx(row.seed_std)
    assert refined["grading/blend_spinal"] == pytest.approx(0.6)
    assert refined["grading/prior_fallback_fraction"] == pytest.approx(0.25)
    prior = frame.set_index("approach").loc["prior"]
    assert prior["n_seeds"] == 1 and np.isnan(prior["seed_std"])


CSV_COLUMNS = [
    *TODAY_CSV[:5],
    "n_seeds",
    "seeds",
    *TODAY_CSV[5:8],
    "seed_std",
    *TODAY_CSV[8:19],
    "reference/bayes_floor",
    *TODAY_CSV[19:21],
    "runtime/train_flops",
    *TODAY_CSV[21:23],
    "grading/blend_spinal",
    "grading/blend_foraminal",
    "grading/blend_subarticular",
    "grading/prior_fallback_fraction",
    *TODAY_CSV[23:25],
    "collapsed_to_prior",
    *TODAY_CSV[25:],
]


def test_collapsed_runs_are_flagged_on_the_board(seeded_board):
    assert _by_name(seeded_board, "nnunet-qc").collapsed == 2
    assert _by_name(seeded_board, "nnunet-refined").collapsed == 0
    assert _by_name(seeded_board, "prior").collapsed == 0
    text = render.to_text_table(seeded_board)
    qc_lines = [line for line in text.splitlines() if "nnunet-qc" in line and not line.startswith("note")]
    assert len(qc_lines) == 1 and "= prior 2/5" in qc_lines[0]
    assert text.count("= prior") == 2  # the row and the legend


def test_default_board_fits_120_columns_and_wide_has_the_parts(seeded_board):
    import dataclasses

    long_note = "nnunet-refined 3f9a0c1d2e4b: " + "a very long note " * 20 + "/" * 150
    rows = [
        dataclasses.replace(r, metrics={**r.metrics, "reference/oracle_score": 0.18})
        for r in seeded_board.rows
    ]
    board = dataclasses.replace(seeded_board, rows=tuple(rows), notes=(*seeded_board.notes, long_note))
    text = render.render(board, "table")
    assert max(len(line) for line in text.splitlines()) <= 120
    assert "…" not in text  # nothing essential was cut
    assert "nnunet-refined" in text and "score [95% CI]" in text and "Δ vs resnet18 [95% CI]" in text
    assert "any_severe_spinal" not in text and "Bayes-optimal prediction's realised score" in text
    assert "blend" in text and "fallback 25%" in text
    wide = render.render(board, "table", wide=True)
    head = next(line for line in wide.splitlines() if "any_severe_spinal" in line)
    for col in (
        "spinal",
        "foraminal",
        "accuracy",
        "bal. acc.",
        "dice",
        "seed sd",
        "blend spinal",
        "fallback",
    ):
        assert col in head
    assert REFINED in wide  # the full config hash
    markdown = render.render(board, "markdown")
    assert "| blend spinal |" in markdown and "no approach can beat" not in markdown


def test_wide_board_shows_work_or_says_seconds_only(seeded_board):
    import dataclasses

    first, *rest = seeded_board.rows
    counted = dataclasses.replace(first, metrics={**first.metrics, "runtime/train_flops": 2.5e12})
    board = dataclasses.replace(seeded_board, rows=(counted, *rest))
    wide = render.render(board, "table", wide=True)
    assert "work TFLOP/fold" in wide
    rows = {x.split()[1]: x for x in wide.splitlines() if x[:1].isdigit()}  # "#  approach  ..." lines
    assert " 2.5 " in rows[first.approach]
    assert all("s only" in rows[r.approach] for r in rest)


def test_cli_wide_table_and_csv(seeded_runs, tracking_uri, tmp_path, capsys):
    common = ["leaderboard", "--tracking-uri", tracking_uri, "--experiment", EXP, "--bootstrap", "50"]
    common += ["--results-dir", str(tmp_path / "r")]
    assert main([*common, "--wide"]) == 0
    out = capsys.readouterr().out
    assert "any_severe_spinal" in out and "nnunet-refined" in out
    assert main([*common, "--format", "csv"]) == 0
    frame = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert {"n_seeds", "seed_std"} <= set(frame) and len(frame) == 5
