"""Score held-out predictions and log the evidence: every metric is recomputable.

``predictions.csv`` and ``labels.csv`` are logged next to the metrics, so
``lumbar-bench score labels.csv predictions.csv`` reproduces ``rsna_score`` exactly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from lumbar_bench.approaches.prior import fit_prior, prior_submission
from lumbar_bench.constants import GROUP_SERIES, LABEL_COLUMNS, PRIOR_APPROACH, SCORE_GROUPS, slug
from lumbar_bench.data.labels import labels_to_frame
from lumbar_bench.data.phantom.floor import phantom_floor
from lumbar_bench.data.rsna import RSNAData
from lumbar_bench.metrics.bootstrap import bootstrap_ci, run_evidence
from lumbar_bench.metrics.classification import classification_metrics, severity_confusion
from lumbar_bench.metrics.figures import confusion_figure
from lumbar_bench.metrics.score import score, submission_matrix
from lumbar_bench.run.plan import RunInputs, RunRequest
from lumbar_bench.tracking.client import TrackedRun


def compute_metrics(labels: pd.DataFrame, predictions: pd.DataFrame) -> dict[str, float]:
    """Official score, its parts, accuracy and balanced accuracy, overall and per series type."""
    result = score(labels, predictions)
    codes = labels[list(LABEL_COLUMNS)].to_numpy(dtype=np.int64)
    probs = submission_matrix(labels, predictions)
    metrics = {
        "rsna_score": result.score,
        **{f"loss/{k}": v for k, v in result.as_dict().items() if k != "score"},
        **classification_metrics(codes, probs),
    }
    conditions = np.array([lab[:-6] for lab in LABEL_COLUMNS])
    for group, members in SCORE_GROUPS.items():
        cols = np.isin(conditions, members)
        if (codes[:, cols] >= 0).any():
            acc = classification_metrics(codes[:, cols], probs[:, cols])["accuracy"]
            metrics[f"accuracy/{slug(GROUP_SERIES[group])}"] = acc
    return metrics


def reference_scores(data: RSNAData, train_ids: list[int], eval_ids: list[int]) -> dict[str, float]:
    """Scores of the training prior and, on the phantom, of the oracle, on the same held-out studies.

    They put a run's ``rsna_score`` in context. ``reference/prior_score`` is the number to beat.
    On the phantom, ``reference/bayes_floor`` is the Bayes floor: the expected score of the
    Bayes-optimal oracle under the label noise, given the true grades in ``truth/``. The
    ``reference/oracle_score`` is that oracle's realised score on these noisy labels; being
    one draw of the noise, a run can land slightly below it by chance.
    """
    labels = data.labels.loc[eval_ids]
    out = {
        "reference/prior_score": score(
            labels, prior_submission(fit_prior(data.labels.loc[train_ids]), eval_ids)
        ).score
    }
    oracle = data.root / "truth" / "oracle_submission.csv"
    if oracle.exists():
        out["reference/oracle_score"] = score(labels, pd.read_csv(oracle, dtype={"row_id": str})).score
    if (bayes := phantom_floor(data.root, labels)) is not None:
        out["reference/bayes_floor"] = bayes
    return out


def evaluate_and_log(
    labels: pd.DataFrame, predictions: pd.DataFrame, trun: TrackedRun, workdir: Path, title: str
) -> dict[str, float]:
    """Compute :func:`compute_metrics`, log them and their evidence, and return them."""
    out = workdir / "evaluation"
    out.mkdir(parents=True, exist_ok=True)
    predictions.to_csv(out / "predictions.csv", index=False)
    labels_to_frame(labels).to_csv(out / "labels.csv", index=False)
    metrics = compute_metrics(labels, predictions)
    metrics["rsna_score_ci_low"], metrics["rsna_score_ci_high"] = score_interval(labels, predictions)
    trun.log_artifact(out / "predictions.csv")
    trun.log_artifact(out / "labels.csv")
    codes = labels[list(LABEL_COLUMNS)].to_numpy(dtype=np.int64)
    matrix = severity_confusion(codes, submission_matrix(labels, predictions))
    trun.log_figure(
        confusion_figure(matrix, f"{title}: score {metrics['rsna_score']:.3f}"), "confusion_matrix.png"
    )
    return metrics


#: Resamples and seed of a run's own interval (the leaderboard's pool runs; see :func:`score_interval`).
RUN_BOOT, RUN_BOOT_SEED = 1000, 0


def score_interval(labels: pd.DataFrame, predictions: pd.DataFrame) -> tuple[float, float]:
    """95% bootstrap interval of one run's ``rsna_score`` over its held-out studies.

    Logged as ``rsna_score_ci_low`` and ``rsna_score_ci_high`` so the MLflow runs table can
    show a run's interval beside its score; it resamples studies only (one run is one seed).
    """
    return bootstrap_ci(run_evidence(labels, predictions), RUN_BOOT, RUN_BOOT_SEED, seeds=False)


#: Largest difference from the training prior's probabilities that still counts as "the prior".
COLLAPSE_TOL = 1e-6


def collapsed_to_prior(
    train_labels: pd.DataFrame,
    eval_labels: pd.DataFrame,
    predictions: pd.DataFrame,
    tol: float = COLLAPSE_TOL,
) -> bool:
    """True when every held-out row of ``predictions`` is within ``tol`` of the training prior's.

    The prior is ``prior_submission(fit_prior(train_labels), eval ids)``, the ``prior``
    approach's own prediction; rows are compared after normalising each to sum to one, as
    the score does. A learned approach for which this holds has learned nothing usable.
    """
    prior = prior_submission(fit_prior(train_labels), list(eval_labels.index))
    got, want = submission_matrix(eval_labels, predictions), submission_matrix(eval_labels, prior)
    with np.errstate(invalid="ignore", divide="ignore"):
        got = got / got.sum(axis=-1, keepdims=True)
    return bool(np.all(np.abs(got - want) <= tol))


def collapse_tags(
    approach: str, train_labels: pd.DataFrame, eval_labels: pd.DataFrame, predictions: pd.DataFrame
) -> dict[str, str]:
    """``{"collapsed_to_prior": "true"|"false"}`` for a learned approach; nothing for ``prior`` itself."""
    if approach == PRIOR_APPROACH:
        return {}
    return {"collapsed_to_prior": str(collapsed_to_prior(train_labels, eval_labels, predictions)).lower()}


def score_run(
    request: RunRequest, inputs: RunInputs, predictions: pd.DataFrame, trun: TrackedRun
) -> dict[str, float]:
    """Score a run's held-out predictions with their evidence, the reference scores and the collapse tag."""
    data = inputs.data
    labels = data.labels.loc[inputs.eval_ids]
    title = f"{request.approach} fold {request.fold} ({request.subset})"
    metrics = evaluate_and_log(labels, predictions, trun, inputs.workdir, title=title)
    metrics.update(reference_scores(data, inputs.train_ids, inputs.eval_ids))
    trun.set_tags(collapse_tags(request.approach, data.labels.loc[inputs.train_ids], labels, predictions))
    return metrics
