"""Run one approach on one fold: fit, predict, score and log everything to MLflow.

The runner owns what every approach must share for results to be comparable: the
data, the frozen split, the subset, the official score and the tracking. Every
metric it logs can be recomputed from the ``predictions.csv`` and ``labels.csv``
artifacts with ``lumbar-bench score``.
"""

from __future__ import annotations

import hashlib
import logging
import platform
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

from lumbar_bench import attempts, datasets, distributed, tracking
from lumbar_bench.approaches.base import Approach, FitReport
from lumbar_bench.budget import Budget, Watchdog
from lumbar_bench.config import SUBSETS, apply_overrides, config_dict, config_hash
from lumbar_bench.constants import LABEL_COLUMNS, PROB_COLUMNS, row_id
from lumbar_bench.context import RunContext
from lumbar_bench.errors import ConfigError, LumbarBenchError, SubmissionError
from lumbar_bench.registry import get_approach, get_spec
from lumbar_bench.seeding import seed_everything
from lumbar_bench.splits import subset_studies

log = logging.getLogger(__name__)

#: Studies per subset: (training studies, evaluated studies); None = all of them.
SUBSET_SIZES: dict[str, tuple[int | None, int | None]] = {
    "ci": (48, 24),
    "small": (160, 60),
    "full": (None, None),
}
#: Subsets whose training is cut by epochs and iterations only, never by the clock, so one seed
#: gives one score; their budget is still checked (``budget_exceeded``) and guarded by the watchdog.
SCHEDULE_ONLY = frozenset({"ci"})
_VERSIONED = (
    "torch",
    "torchvision",
    "numpy",
    "pandas",
    "pydicom",
    "scikit-learn",
    "mlflow",
    "segmentation-models-pytorch",
    "nnunetv2",
    "SimpleITK",
)


@dataclass(frozen=True)
class RunRequest:
    """Everything ``lumbar-bench run`` was asked to do."""

    approach: str
    data_dir: Path | None = None
    split_path: Path | None = None
    fold: int = 0
    subset: str = "ci"
    device: str = "auto"
    seed: int = 0
    tracking_uri: str = tracking.DEFAULT_TRACKING_URI
    experiment: str = tracking.DEFAULT_EXPERIMENT
    overrides: tuple[str, ...] = ()
    cache_dir: Path | None = None
    budget_minutes: float | None = None
    system_metrics: bool = False
    #: torch CPU threads during the run; 0 leaves torch's default (the core count).
    threads: int = 0
    progress: bool = True
    #: The sweep this run is a task of (its MLflow run id): the run is nested under it and tagged.
    sweep_run_id: str | None = None


@dataclass
class RunResult:
    """What a finished run reports (``lumbar-bench run --json`` prints it)."""

    run_id: str
    approach: str
    fold: int
    subset: str
    config_hash: str
    split_digest: str
    metrics: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """Flat JSON-able dict with ``rsna_score``, ``accuracy``, ``balanced_accuracy`` and the rest."""
        return {
            "run_id": self.run_id,
            "approach": self.approach,
            "fold": self.fold,
            "subset": self.subset,
            "config_hash": self.config_hash,
            "split_digest": self.split_digest,
            **self.metrics,
        }


def resolve_device(device: str) -> str:
    """``auto`` becomes ``cuda`` when torch sees a GPU, else ``cpu``."""
    if device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"--device {device!r}: choose auto, cpu or cuda")
    if device == "cpu":
        return device
    try:
        import torch

        available = torch.cuda.is_available()
    except ImportError:
        available = False
    if device == "cuda" and not available:
        raise ConfigError("--device cuda: torch sees no CUDA device")
    return "cuda" if available else "cpu"


def package_versions() -> dict[str, str]:
    """Installed versions of the libraries that shape results."""
    out = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def complete_submission(pred: pd.DataFrame, study_ids: list[int], approach: str) -> pd.DataFrame:
    """Check an approach returned every row for ``study_ids`` and order them like labels."""
    wanted = [row_id(s, lab) for s in study_ids for lab in LABEL_COLUMNS]
    have = pred.drop_duplicates("row_id").set_index("row_id")
    missing = pd.Index(wanted).difference(have.index)
    if len(missing):
        raise SubmissionError(f"approach {approach!r} left {len(missing)} rows out, e.g. {missing[0]!r}")
    return have.loc[wanted, list(PROB_COLUMNS)].reset_index()


def resolve_config(approach: str, subset: str, overrides: tuple[str, ...]) -> tuple[Any, str]:
    """The config ``approach`` runs with on ``subset`` after ``overrides``, and its config hash."""
    config = apply_overrides(get_approach(approach).Config.for_subset(subset), overrides)
    return config, config_hash(approach, config)


def run(request: RunRequest) -> RunResult:
    """Run ``request.approach`` on one fold, log it to MLflow and return its metrics.

    Started by torchrun with several processes (:mod:`lumbar_bench.distributed`), every process
    calls this: rank 0 runs, tracks and scores as usual, the others join its training (DDP) only,
    and all of them return rank 0's result.
    """
    if request.subset not in SUBSETS:
        raise ConfigError(f"--subset {request.subset!r}: choose one of {', '.join(SUBSETS)}")
    dist = distributed.from_env(resolve_device(request.device))
    if not dist.enabled:
        return _run(request, dist)
    if not get_approach(request.approach).supports_ddp:
        raise ConfigError(
            f"{request.approach} does not train under torchrun with {dist.world_size} processes; "
            "run it as one process (nnU-Net approaches: --set num_gpus=N)"
        )
    with distributed.process_group(dist, _budget(request).hard_seconds):
        result = _run(request, dist) if dist.is_main else _follow(request, dist)
        return distributed.broadcast_object(dist, result)


def _run(request: RunRequest, dist: distributed.DistInfo) -> RunResult:
    """:func:`run` in the one process, or in rank 0 of several (``dist``)."""
    get_spec(request.approach)  # an unknown name fails here, before any data is read
    cache_dir = request.cache_dir or datasets.default_cache_dir()
    data, split, split_source = _load(request, cache_dir, dist, request.progress)
    train_ids, eval_ids = _select_studies(data, split, request)
    cls = get_approach(request.approach)
    config, chash = resolve_config(request.approach, request.subset, request.overrides)
    device = resolve_device(request.device)
    budget = _budget(request)
    workdir = _workdir(cache_dir, request, chash, split.digest, dist.world_size)
    workdir.mkdir(parents=True, exist_ok=True)
    tags, params = _provenance(request, chash, split, split_source, data, device, budget, config)
    params.update({"n_train_studies": len(train_ids), "n_eval_studies": len(eval_ids)})
    params["world_size"] = dist.world_size
    if dist.enabled:
        tags.update(world_size=dist.world_size, distributed_backend=dist.backend)
    run_name = f"{request.approach}-f{request.fold}-{request.subset}"
    sweep = _sweep_parent(request, tags)
    with (
        attempts.claim(workdir) as claim,
        tracking.tracked_run(request.tracking_uri, request.experiment, run_name, tags, parent=sweep) as trun,
    ):
        claim.begin(trun.run_id, request.tracking_uri, device)
        trun.log_params(params)
        evaluated = _log_datasets(trun, data, tags, train_ids, eval_ids)

        def on_hard_limit() -> None:
            trun.set_tags({"budget_exceeded": "true"})
            trun.fail("budget", TimeoutError(f"hard limit {budget.hard_seconds:.0f} s exceeded"))

        with (
            Watchdog(budget.hard_seconds, on_hard_limit),
            tracking.system_metrics(trun, request.system_metrics),
            _torch_threads(request.threads),
        ):
            metrics, approach = _fit_and_evaluate(
                cls,
                config,
                data,
                train_ids,
                eval_ids,
                request,
                device,
                budget,
                workdir,
                cache_dir,
                trun,
                claim,
                dist,
            )
        _log_model(approach, request, config, workdir / "model", trun, metrics, evaluated)
    return RunResult(
        trun.run_id, request.approach, request.fold, request.subset, chash, split.digest, metrics
    )


def _budget(request: RunRequest) -> Budget:
    """The run's budget: ``--budget-minutes`` if given, else the approach's own for the subset."""
    default = get_spec(request.approach).budget(request.subset)
    return Budget(request.budget_minutes or default.minutes, default.device)


def _load(
    request: RunRequest, cache_dir: Path, dist: distributed.DistInfo, progress: bool
) -> tuple[Any, Any, str]:
    """The data and split of ``request``, with the split's source; rank 0 first, writing the caches."""
    with distributed.main_first(dist):  # the other ranks read the data caches rank 0 wrote
        data = datasets.load_data(request.data_dir, cache_dir, progress=progress)
        split, split_source = datasets.resolve_split(data, request.split_path, cache_dir)
    return data, split, split_source


def _workdir(cache_dir: Path, request: RunRequest, chash: str, split_digest: str, world_size: int) -> Path:
    """The run's work directory, keyed by approach, config, split, fold, subset, seed and world size.

    A checkpoint written by one number of torchrun processes never resumes another.
    """
    key = f"{request.approach}-{chash}-{split_digest[:8]}-f{request.fold}-{request.subset}-s{request.seed}"
    return cache_dir / "runs" / (key if world_size == 1 else f"{key}-w{world_size}")


def _follow(request: RunRequest, dist: distributed.DistInfo) -> None:
    """A rank other than 0 of a torchrun job: the same data, split, config and work directory; fit only.

    It tracks nothing and writes nothing: rank 0 owns the MLflow run, the checkpoints and the
    caches, and alone predicts and scores.
    """
    cache_dir = request.cache_dir or datasets.default_cache_dir()
    data, split, _ = _load(request, cache_dir, dist, progress=False)
    train_ids, _ = _select_studies(data, split, request)
    config, chash = resolve_config(request.approach, request.subset, request.overrides)
    seed_everything(request.seed)
    ctx = RunContext(
        workdir=_workdir(cache_dir, request, chash, split.digest, dist.world_size),
        cache_dir=cache_dir,
        device=resolve_device(request.device),
        seed=request.seed,
        subset=request.subset,
        dist=dist,
    )
    with _torch_threads(request.threads):
        get_approach(request.approach)(config).fit(data, train_ids, ctx)
    log.info("rank %d: training done; rank 0 predicts and scores", dist.rank)


def _provenance(
    request: RunRequest,
    chash: str,
    split: Any,
    split_source: str,
    data: Any,
    device: str,
    budget: Budget,
    config: Any,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The run's tags (what makes runs comparable) and params (tags, config, package versions)."""
    tags = {
        "approach": request.approach,
        "config_hash": chash,
        "split_digest": split.digest,
        "data_digest": data.data_digest(),
        "fold": request.fold,
        "subset": request.subset,
        "seed": request.seed,
        "device": device,
        "budget": budget.label(),
        "budget_minutes": budget.minutes,
        "dataset": datasets.describe(data),
    }
    params = {
        **tags,
        **{f"config.{k}": v for k, v in config_dict(config).items()},
        **{f"version.{k}": v for k, v in package_versions().items()},
        "split_source": split_source,
        "threads": request.threads,
    }
    return tags, params


def _sweep_parent(request: RunRequest, tags: dict[str, Any]) -> tracking.TrackedRun | None:
    """The sweep run to nest this run under (tagging ``tags`` with it); None outside a sweep."""
    if not request.sweep_run_id:
        return None
    tags[tracking.SWEEP_TAG] = request.sweep_run_id
    return tracking.TrackedRun(request.tracking_uri, request.sweep_run_id)


def _select_studies(data: Any, split: Any, request: RunRequest) -> tuple[list[int], list[int]]:
    """Training and evaluated studies of ``request``'s fold and subset; refuses any overlap."""
    n_train, n_eval = SUBSET_SIZES[request.subset]
    labelled = set(data.labels.index)
    train_ids = subset_studies([s for s in split.train_studies(request.fold) if s in labelled], n_train)
    eval_ids = subset_studies([s for s in split.studies(request.fold) if s in labelled], n_eval)
    if set(train_ids) & set(eval_ids):
        raise LumbarBenchError("leakage: a study is both trained on and evaluated")
    return train_ids, eval_ids


def _fit_and_evaluate(
    cls: type[Approach],
    config: Any,
    data: Any,
    train_ids: list[int],
    eval_ids: list[int],
    request: RunRequest,
    device: str,
    budget: Budget,
    workdir: Path,
    cache_dir: Path,
    trun: tracking.TrackedRun,
    claim: attempts.Claim,
    dist: distributed.DistInfo,
) -> tuple[dict[str, float], Approach]:
    """Fit on ``train_ids``, predict ``eval_ids``, then score and log; returns the metrics and the model.

    Compute is counted over attempts (see :mod:`lumbar_bench.attempts`): a run that resumed an
    interrupted one logs the training seconds of both, one that reused a finished model the original's.
    """
    seed_everything(request.seed)
    t0 = time.monotonic()
    ctx = RunContext(
        workdir=workdir,
        cache_dir=cache_dir,
        device=device,
        seed=request.seed,
        subset=request.subset,
        deadline=None if request.subset in SCHEDULE_ONLY else t0 + budget.soft_seconds,
        progress=request.progress,
        log_metric=trun.log_metric,
        log_artifact=trun.log_artifact,
        nested_run=lambda name: tracking.tracked_run(trun.uri, request.experiment, name, parent=trun),
        on_checkpoint=claim.checkpointed,
        on_resume=claim.resumed,
        dist=dist,
    )
    approach = cls(config)
    claim.start_fit()
    fitted = approach.fit(data, train_ids, ctx) or FitReport()  # None: an approach that measured nothing
    cost = claim.fit_done(dict(fitted.stage_seconds))
    t_fit = time.monotonic()
    raw = approach.predict(data, eval_ids, ctx)
    predictions = complete_submission(raw, eval_ids, request.approach)
    predict_s = time.monotonic() - t_fit
    total_s = cost.train_s + predict_s
    report = fitted.merge(approach.last_predict_report())
    metrics = _score_and_log(request, data, train_ids, eval_ids, predictions, trun, workdir)
    metrics.update(report.metrics)
    metrics.update(cost.metrics(predict_s, time.monotonic() - t0, dict(report.stage_seconds)))
    trun.set_tags(cost.tags())
    if report.time_to_best_s is not None:
        metrics["runtime/time_to_best_s"] = report.time_to_best_s
    metrics.update(_gpu_metrics(device, cost.gpu_train_s + predict_s))
    trun.log_metrics(metrics)
    over = total_s > budget.soft_seconds
    trun.set_tags({"budget_exceeded": str(over).lower()})
    return metrics, approach


#: Metrics a logged model carries (linked to it and to the evaluation dataset).
MODEL_METRICS = (
    "rsna_score",
    "rsna_score_ci_low",
    "rsna_score_ci_high",
    "accuracy",
    "balanced_accuracy",
    "runtime/total_s",
)


def _log_model(
    approach: Approach,
    request: RunRequest,
    config: Any,
    model_dir: Path,
    trun: tracking.TrackedRun,
    metrics: dict[str, float],
    evaluated: tracking.DatasetRef,
) -> str:
    """Log ``config.json`` and the trained approach (:mod:`lumbar_bench.inference`) as the run's model."""
    from lumbar_bench import __version__, inference

    chash = config_hash(request.approach, config)
    trun.log_json(
        {"approach": request.approach, "config_hash": chash, "config": config_dict(config)}, "config.json"
    )
    inference.save_trained(approach, request.approach, chash, model_dir)
    versions = package_versions()
    requirements = [f"lumbar-bench=={__version__}"] + [
        f"{name}=={v}" for name, v in versions.items() if name != "python" and v != "absent"
    ]
    spec = tracking.ModelSpec(
        name=request.approach,
        params={f"config.{k}": v for k, v in config_dict(config).items()},
        tags={"approach": request.approach, "config_hash": chash, "subset": request.subset},
        requirements=tuple(requirements),
        metadata={"approach": request.approach, "config_hash": chash, "versions": versions},
    )
    wanted = {k: metrics[k] for k in MODEL_METRICS if k in metrics}
    return trun.log_model(model_dir, spec, wanted, evaluated)


def _log_datasets(
    trun: tracking.TrackedRun, data: Any, tags: dict[str, Any], train_ids: list[int], eval_ids: list[int]
) -> tracking.DatasetRef:
    """Log the training and evaluation label tables as the run's dataset inputs; returns the evaluation one.

    A dataset is named after the data and the split (``phantom-5e57f6a9/split-aa8c459a/f0-ci-train``);
    its digest hashes the data digest, the split digest, fold, subset and context, so runs that
    trained (or were scored) on the same studies share it.
    """
    from lumbar_bench.data.labels import labels_to_frame

    base = (
        f"{tags['dataset']}-{tags['data_digest'][:8]}/split-{tags['split_digest'][:8]}/"
        f"f{tags['fold']}-{tags['subset']}"
    )
    refs = {}
    for context, ids, suffix in (("training", train_ids, "train"), ("evaluation", eval_ids, "eval")):
        key = f"{tags['data_digest']}:{tags['split_digest']}:{tags['fold']}:{tags['subset']}:{context}"
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        refs[context] = tracking.DatasetRef(f"{base}-{suffix}", digest, context)
        trun.log_dataset(labels_to_frame(data.labels.loc[ids]), refs[context])
    return refs["evaluation"]


def _score_and_log(
    request: RunRequest,
    data: Any,
    train_ids: list[int],
    eval_ids: list[int],
    predictions: pd.DataFrame,
    trun: tracking.TrackedRun,
    workdir: Path,
) -> dict[str, float]:
    """Score the held-out predictions with their evidence, the reference scores and the collapse tag."""
    from lumbar_bench import evaluation

    labels = data.labels.loc[eval_ids]
    title = f"{request.approach} fold {request.fold} ({request.subset})"
    metrics = evaluation.evaluate_and_log(labels, predictions, trun, workdir, title=title)
    metrics.update(evaluation.reference_scores(data, train_ids, eval_ids))
    trun.set_tags(evaluation.collapse_tags(request.approach, data.labels.loc[train_ids], labels, predictions))
    return metrics


def _torch_threads(n: int) -> AbstractContextManager[None]:
    """``n`` torch threads inside the block; nothing (and no torch import) for 0."""
    if n <= 0:
        return nullcontext()
    from lumbar_bench.seeding import torch_threads

    return torch_threads(n)


def _gpu_metrics(device: str, total_s: float) -> dict[str, float]:
    """GPU seconds and peak GPU memory when the run used CUDA."""
    if device != "cuda":
        return {}
    import torch

    return {"runtime/gpu_s": total_s, "gpu/peak_memory_gb": torch.cuda.max_memory_allocated() / 2**30}


def predict_from_run(
    run_id: str,
    out: Path,
    data_dir: Path | None = None,
    cache_dir: Path | None = None,
    tracking_uri: str = tracking.DEFAULT_TRACKING_URI,
    device: str = "auto",
    progress: bool = True,
) -> pd.DataFrame:
    """Write a complete Kaggle submission for the test part with run ``run_id``'s logged MLflow model.

    The same path as ``mlflow.pyfunc.load_model(...).predict(...)``.
    """
    cache_dir = cache_dir or datasets.default_cache_dir()
    root = data_dir if data_dir is not None else datasets.ensure_phantom(cache_dir, progress)
    model = tracking.load_model(tracking_uri, run_id)
    params = {"part": "test", "device": device, "cache_dir": str(cache_dir)}
    submission = model.predict(pd.DataFrame({"data": [str(root)]}), params=params)
    out.parent.mkdir(parents=True, exist_ok=True)
    submission.to_csv(out, index=False)
    return submission
