"""What a run records about itself in tracking: provenance, its datasets and its trained model.

Every MLflow run records the approach, config hash, split digest, data digest, fold, subset, seed,
device and budget as tags (what makes runs comparable), the config and package versions as
params, the label tables it trained on and was scored on as dataset inputs, and the trained
approach as a logged ``mlflow.pyfunc`` model.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Any

from lumbar_bench import __version__
from lumbar_bench.approaches.base import Approach
from lumbar_bench.approaches.trained import save_trained
from lumbar_bench.config import config_dict
from lumbar_bench.data import defaults
from lumbar_bench.data.labels import labels_to_frame
from lumbar_bench.run.plan import RunInputs, RunPlan
from lumbar_bench.tracking.client import DatasetRef, ModelSpec, TrackedRun
from lumbar_bench.tracking.pyfunc import save_pyfunc

#: Metrics a logged model carries (linked to it and to the evaluation dataset).
MODEL_METRICS = (
    "rsna_score",
    "rsna_score_ci_low",
    "rsna_score_ci_high",
    "accuracy",
    "balanced_accuracy",
    "runtime/total_s",
)


def run_tags(plan: RunPlan, inputs: RunInputs) -> dict[str, Any]:
    """The run's tags: what makes runs comparable (and, under torchrun, its world size)."""
    r = plan.request
    tags: dict[str, Any] = {
        "approach": r.approach,
        "config_hash": plan.config_hash,
        "split_digest": inputs.split.digest,
        "data_digest": inputs.data.data_digest(),
        "fold": r.fold,
        "subset": r.subset,
        "seed": r.seed,
        "device": plan.device,
        "budget": plan.budget.label(),
        "budget_minutes": plan.budget.minutes,
        "dataset": defaults.describe(inputs.data),
    }
    if plan.dist.enabled:
        tags.update(world_size=plan.dist.world_size, distributed_backend=plan.dist.backend)
    return tags


def run_params(plan: RunPlan, inputs: RunInputs, tags: dict[str, Any]) -> dict[str, Any]:
    """The run's params: its tags, every config field, the package versions and the study counts."""
    return {
        **{k: v for k, v in tags.items() if k not in ("world_size", "distributed_backend")},
        **{f"config.{k}": v for k, v in config_dict(plan.config).items()},
        **{f"version.{k}": v for k, v in plan.versions.items()},
        "split_source": inputs.split_source,
        "threads": plan.request.threads,
        "n_train_studies": len(inputs.train_ids),
        "n_eval_studies": len(inputs.eval_ids),
        "world_size": plan.dist.world_size,
    }


def log_datasets(trun: TrackedRun, inputs: RunInputs, tags: dict[str, Any]) -> DatasetRef:
    """Log the training and evaluation label tables as the run's dataset inputs; returns the evaluation one.

    A dataset is named after the data and the split (``phantom-5e57f6a9/split-aa8c459a/f0-ci-train``);
    its digest hashes the data digest, the split digest, fold, subset and context, so runs that
    trained (or were scored) on the same studies share it.
    """
    base = (
        f"{tags['dataset']}-{tags['data_digest'][:8]}/split-{tags['split_digest'][:8]}/"
        f"f{tags['fold']}-{tags['subset']}"
    )
    refs = {}
    for context, ids, suffix in (
        ("training", inputs.train_ids, "train"),
        ("evaluation", inputs.eval_ids, "eval"),
    ):
        key = f"{tags['data_digest']}:{tags['split_digest']}:{tags['fold']}:{tags['subset']}:{context}"
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        refs[context] = DatasetRef(f"{base}-{suffix}", digest, context)
        trun.log_dataset(labels_to_frame(inputs.data.labels.loc[ids]), refs[context])
    return refs["evaluation"]


def log_model(
    approach: Approach,
    plan: RunPlan,
    model_dir: Path,
    trun: TrackedRun,
    metrics: dict[str, float],
    evaluated: DatasetRef,
) -> str:
    """Log ``config.json`` and the trained approach (:mod:`~lumbar_bench.approaches.trained`) as its model."""
    name, chash = plan.request.approach, plan.config_hash
    trun.log_json({"approach": name, "config_hash": chash, "config": config_dict(plan.config)}, "config.json")
    save_trained(approach, name, chash, model_dir)
    versions = dict(plan.versions)
    requirements = [f"lumbar-bench=={__version__}"] + [
        f"{lib}=={v}" for lib, v in versions.items() if lib != "python" and v != "absent"
    ]
    spec = ModelSpec(
        name=name,
        params={f"config.{k}": v for k, v in config_dict(plan.config).items()},
        tags={"approach": name, "config_hash": chash, "subset": plan.request.subset},
        requirements=tuple(requirements),
        metadata={"approach": name, "config_hash": chash, "versions": versions},
    )
    wanted = {k: metrics[k] for k in MODEL_METRICS if k in metrics}
    with tempfile.TemporaryDirectory() as tmp:
        pyfunc_dir = save_pyfunc(model_dir, Path(tmp) / "model", list(spec.requirements), dict(spec.metadata))
        return trun.log_model(pyfunc_dir, spec, wanted, evaluated)
