"""Run one approach on one fold: fit, predict, score and log everything to MLflow.

The runner owns what every approach must share for results to be comparable: the
data, the frozen split, the subset, the official score and the tracking. It resolves
the request once (:mod:`lumbar_bench.run.plan`) and hands that plan down. Every metric
it logs can be recomputed from the ``predictions.csv`` and ``labels.csv`` artifacts with
``lumbar-bench score``.
"""

from __future__ import annotations

import logging
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

from lumbar_bench.approaches.base import Approach, FitReport
from lumbar_bench.approaches.context import RunContext
from lumbar_bench.core import distributed
from lumbar_bench.core.budget import Watchdog
from lumbar_bench.core.errors import ConfigError
from lumbar_bench.core.seeding import seed_everything, torch_threads
from lumbar_bench.metrics.score import complete_submission
from lumbar_bench.run import attempts, evaluation, provenance
from lumbar_bench.run.plan import RunInputs, RunPlan, RunRequest, load_inputs, make_plan
from lumbar_bench.tracking.client import TrackedRun, system_metrics, tracked_run
from lumbar_bench.tracking.names import SWEEP_TAG

__all__ = ["RunRequest", "RunResult", "run"]

log = logging.getLogger(__name__)


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


def run(request: RunRequest) -> RunResult:
    """Run ``request.approach`` on one fold, log it to MLflow and return its metrics.

    Started by torchrun with several processes (:mod:`lumbar_bench.core.distributed`), every process
    calls this: rank 0 runs, tracks and scores as usual, the others join its training (DDP) only,
    and all of them return rank 0's result.
    """
    plan = make_plan(request)
    if not plan.dist.enabled:
        return _lead(plan)
    if not plan.cls.supports_ddp:
        raise ConfigError(
            f"{request.approach} does not train under torchrun with {plan.dist.world_size} processes; "
            "run it as one process (nnU-Net approaches: --set num_gpus=N)"
        )
    with distributed.process_group(plan.dist, plan.budget.hard_seconds):
        result = _lead(plan) if plan.dist.is_main else _follow(plan)
        return distributed.broadcast_object(plan.dist, result)


def _lead(plan: RunPlan) -> RunResult:
    """:func:`run` in the one process, or in rank 0 of several: the run that tracks and scores."""
    request = plan.request
    inputs = load_inputs(plan, request.progress)
    inputs.workdir.mkdir(parents=True, exist_ok=True)
    tags = provenance.run_tags(plan, inputs)
    params = provenance.run_params(plan, inputs, tags)
    sweep = _sweep_parent(request, tags)
    with (
        attempts.claim(inputs.workdir) as claim,
        tracked_run(request.tracking_uri, request.experiment, request.run_name, tags, parent=sweep) as trun,
    ):
        claim.begin(trun.run_id, request.tracking_uri, plan.device)
        trun.log_params(params)
        evaluated = provenance.log_datasets(trun, inputs, tags)

        def on_hard_limit() -> None:
            trun.set_tags({"budget_exceeded": "true"})
            trun.fail("budget", TimeoutError(f"hard limit {plan.budget.hard_seconds:.0f} s exceeded"))

        with (
            Watchdog(plan.budget.hard_seconds, on_hard_limit),
            system_metrics(trun, request.system_metrics),
            _torch_threads(request.threads),
        ):
            metrics, approach = _fit_and_evaluate(plan, inputs, trun, claim)
        provenance.log_model(approach, plan, inputs.workdir / "model", trun, metrics, evaluated)
    return RunResult(
        trun.run_id,
        request.approach,
        request.fold,
        request.subset,
        plan.config_hash,
        inputs.split.digest,
        metrics,
    )


def _follow(plan: RunPlan) -> None:
    """A rank other than 0 of a torchrun job: the same data, split, config and work directory; fit only.

    It tracks nothing and writes nothing: rank 0 owns the MLflow run, the checkpoints and the
    caches, and alone predicts and scores.
    """
    inputs = load_inputs(plan, progress=False)
    seed_everything(plan.request.seed)
    ctx = RunContext(
        workdir=inputs.workdir,
        cache_dir=plan.cache_dir,
        device=plan.device,
        seed=plan.request.seed,
        subset=plan.request.subset,
        dist=plan.dist,
    )
    with _torch_threads(plan.request.threads):
        plan.cls(plan.config).fit(inputs.data, inputs.train_ids, ctx)
    log.info("rank %d: training done; rank 0 predicts and scores", plan.dist.rank)


def _sweep_parent(request: RunRequest, tags: dict[str, Any]) -> TrackedRun | None:
    """The sweep run to nest this run under (tagging ``tags`` with it); None outside a sweep."""
    if not request.sweep_run_id:
        return None
    tags[SWEEP_TAG] = request.sweep_run_id
    return TrackedRun(request.tracking_uri, request.sweep_run_id)


def _context(
    plan: RunPlan, inputs: RunInputs, trun: TrackedRun, claim: attempts.Claim, t0: float
) -> RunContext:
    """What the approach is handed: folders, device, seed, the soft deadline, loggers, ledger hooks."""
    request = plan.request
    return RunContext(
        workdir=inputs.workdir,
        cache_dir=plan.cache_dir,
        device=plan.device,
        seed=request.seed,
        subset=request.subset,
        deadline=t0 + plan.budget.soft_seconds if plan.deadline_bound else None,
        progress=request.progress,
        log_metric=trun.log_metric,
        log_artifact=trun.log_artifact,
        nested_run=lambda name: tracked_run(trun.uri, request.experiment, name, parent=trun),
        on_checkpoint=claim.checkpointed,
        on_resume=claim.resumed,
        dist=plan.dist,
    )


def _fit_and_evaluate(
    plan: RunPlan, inputs: RunInputs, trun: TrackedRun, claim: attempts.Claim
) -> tuple[dict[str, float], Approach]:
    """Fit on the training studies, predict the evaluated ones, score and log; returns the metrics and model.

    Compute is counted over attempts (see :mod:`lumbar_bench.run.attempts`): a run that resumed an
    interrupted one logs the training seconds of both, one that reused a finished model the original's.
    """
    seed_everything(plan.request.seed)
    t0 = time.monotonic()
    ctx = _context(plan, inputs, trun, claim, t0)
    approach = plan.cls(plan.config)
    claim.start_fit()
    fitted = approach.fit(inputs.data, inputs.train_ids, ctx) or FitReport()  # None: it measured nothing
    cost = claim.fit_done(dict(fitted.stage_seconds))
    t_fit = time.monotonic()
    raw = approach.predict(inputs.data, inputs.eval_ids, ctx)
    predictions = complete_submission(raw, inputs.eval_ids, plan.request.approach)
    predict_s = time.monotonic() - t_fit
    report = fitted.merge(approach.last_predict_report())
    metrics = evaluation.score_run(plan.request, inputs, predictions, trun)
    metrics.update(report.metrics)
    metrics.update(cost.metrics(predict_s, time.monotonic() - t0, dict(report.stage_seconds)))
    metrics.update(report.work_metrics())
    trun.set_tags({**cost.tags(), "work_counted": str(bool(report.stage_flops)).lower()})
    if report.time_to_best_s is not None:
        metrics["runtime/time_to_best_s"] = report.time_to_best_s
    metrics.update(_gpu_metrics(plan.device, cost.gpu_train_s + predict_s))
    trun.log_metrics(metrics)
    over = cost.train_s + predict_s > plan.budget.soft_seconds
    trun.set_tags({"budget_exceeded": str(over).lower()})
    return metrics, approach


def _torch_threads(n: int) -> AbstractContextManager[None]:
    """``n`` torch threads inside the block; nothing (and no torch import) for 0."""
    if n <= 0:
        return nullcontext()
    return torch_threads(n)


def _gpu_metrics(device: str, total_s: float) -> dict[str, float]:
    """GPU seconds and peak GPU memory when the run used CUDA."""
    if device != "cuda":
        return {}
    import torch  # lazy: a CPU run (and `list`, `--help`) never imports torch for this

    return {"runtime/gpu_s": total_s, "gpu/peak_memory_gb": torch.cuda.max_memory_allocated() / 2**30}
