"""Writing runs to MLflow: one :class:`TrackedRun` per run, FAILED on error, and its model.

It uses an explicit :class:`mlflow.MlflowClient` per tracking URI instead of the fluent API's
process-global state, so two runs (or a test and a run) never write into each other's store.
Reading runs back is :mod:`lumbar_bench.tracking.search`.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import re
import tempfile
import time
import traceback
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import mlflow.data
from mlflow import MlflowClient
from mlflow.entities import DatasetInput, InputTag, LoggedModelOutput, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

from lumbar_bench.tracking.names import MODEL_TAG, PARENT_TAG, artifact_location

log = logging.getLogger(__name__)

_MAX_PARAM_LEN = 500
#: Tries of a dataset input that another run inserts at the same moment (see TrackedRun.log_dataset).
_DATASET_TRIES = 4


#: MLflow's switch for its own artifact progress bars (tqdm on the terminal, whatever our --no-progress says).
_ARTIFACT_BARS = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"


@contextmanager
def artifacts_quietly() -> Iterator[None]:
    """Inside the block MLflow draws no "Downloading artifacts" bars; the variable is restored after.

    MLflow reads the switch only from the environment, so it is set around the call alone.
    """
    before = os.environ.get(_ARTIFACT_BARS)
    os.environ[_ARTIFACT_BARS] = "false"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(_ARTIFACT_BARS, None)
        else:
            os.environ[_ARTIFACT_BARS] = before


def mlflow_client(uri: str) -> MlflowClient:
    """An MLflow client bound to store ``uri`` (never the process-global one)."""
    # MLflow configures its loggers on import; its schema-migration chatter is not the user's business.
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
    return MlflowClient(tracking_uri=uri)


def experiment_id(uri: str, name: str) -> str:
    """Id of experiment ``name`` in ``uri``, creating it (and the store) when needed."""
    client = mlflow_client(uri)
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifact_location(uri))
    except Exception:  # noqa: BLE001 - another process may have created it meanwhile
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


@dataclass(frozen=True)
class DatasetRef:
    """A run's training or evaluation data as MLflow records it: name, digest and context.

    ``context`` is ``training`` or ``evaluation`` (the UI's Dataset column shows both);
    metrics linked to a logged model name the evaluation dataset by ``name`` and ``digest``.
    """

    name: str
    digest: str
    context: str


@dataclass(frozen=True)
class ModelSpec:
    """What a logged model records besides its files: params, tags, requirements, metadata."""

    name: str
    params: Mapping[str, Any] = field(default_factory=dict)
    tags: Mapping[str, Any] = field(default_factory=dict)
    requirements: tuple[str, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)


def logged_model_name(name: str) -> str:
    """``name`` with the characters MLflow refuses in a model name (``/ : . % " '``) as ``_``."""
    return re.sub(r"[/:.%\"']", "_", name)


class TrackedRun:
    """One MLflow run: params, tags, metrics and artifacts, with FAILED on error."""

    def __init__(self, uri: str, run_id: str) -> None:
        self.uri = uri
        self.run_id = run_id
        self._client = mlflow_client(uri)

    def log_params(self, params: dict[str, Any]) -> None:
        """Log params; values are stringified and truncated to MLflow's limit."""
        items = [Param(k, str(v)[:_MAX_PARAM_LEN]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self._client.log_batch(self.run_id, params=items[i : i + 100])

    def set_tags(self, tags: dict[str, Any]) -> None:
        """Set tags on the run."""
        self._client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_metric(self, key: str, value: float, step: int | None = None) -> None:
        """Log one metric value; NaN is skipped (MLflow stores it, but it breaks sorting)."""
        if value is None or (isinstance(value, float) and math.isnan(value)):
            log.debug("skipping NaN metric %s", key)
            return
        self._client.log_metric(self.run_id, key, float(value), step=step or 0)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        """Log several metrics at one step."""
        for key, value in metrics.items():
            self.log_metric(key, value, step)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        """Upload a file or a whole directory."""
        path = Path(path)
        if path.is_dir():
            self._client.log_artifacts(self.run_id, str(path), artifact_path)
        else:
            self._client.log_artifact(self.run_id, str(path), artifact_path)

    def log_json(self, obj: Any, name: str) -> None:
        """Upload ``obj`` as a JSON artifact called ``name``."""
        with tempfile.TemporaryDirectory() as tmp:
            target = Path(tmp) / name
            target.write_text(json.dumps(obj, indent=2, default=str))
            self.log_artifact(target)

    def log_figure(self, figure: Any, name: str) -> None:
        """Upload a matplotlib figure as a PNG artifact."""
        self._client.log_figure(self.run_id, figure, name)

    def log_table(self, frame: Any, artifact_file: str) -> None:
        """Upload a DataFrame as a table artifact (``.json``): the UI shows it sortable."""
        self._client.log_table(self.run_id, data=frame, artifact_file=artifact_file)

    def log_dataset(self, frame: Any, ref: DatasetRef) -> None:
        """Record ``frame`` (a label table) as a dataset input of the run, in context ``ref.context``."""
        with warnings.catch_warnings():  # a hint that integer columns cannot hold missing values
            warnings.simplefilter("ignore", UserWarning)
            dataset = mlflow.data.from_pandas(frame, name=ref.name, digest=ref.digest)
            # the entity mlflow.log_input builds (the schema is inferred here); the client has no
            # public converter
            entity = dataset._to_mlflow_entity()
        inputs = [DatasetInput(entity, [InputTag(MLFLOW_DATASET_CONTEXT, ref.context)])]
        for attempt in range(_DATASET_TRIES):
            try:
                self._client.log_inputs(self.run_id, inputs)
                return
            except MlflowException as exc:
                # two runs of a sweep inserting the same new dataset at once: one wins the row, and
                # the other finds it on a retry (MLflow's server answers the loser with a UniqueViolation)
                if "dataset_pk" not in str(exc) or attempt == _DATASET_TRIES - 1:
                    raise
                log.debug("dataset %s was being inserted by another run; retrying", ref.name)
                time.sleep(0.2 * (attempt + 1))

    def log_model(
        self, pyfunc_dir: Path, spec: ModelSpec, metrics: Mapping[str, float], dataset: DatasetRef | None
    ) -> str:
        """Log ``pyfunc_dir``, an MLflow pyfunc model folder already written, as this run's model.

        The model is a logged model (MLflow 3) whose source run is this one; ``metrics`` are
        logged to the run linked to the model and the evaluation ``dataset``, so the model's
        page shows them. Returns the model id (also the run's ``model_id`` tag).
        """
        experiment = self._client.get_run(self.run_id).info.experiment_id
        model = self._client.create_logged_model(
            experiment,
            name=logged_model_name(spec.name),
            source_run_id=self.run_id,
            params={k: str(v)[:_MAX_PARAM_LEN] for k, v in spec.params.items()},
            tags={k: str(v) for k, v in spec.tags.items()},
            model_type="lumbar-bench",
        )
        try:
            self._client.log_model_artifacts(model.model_id, str(pyfunc_dir))
        except BaseException:
            self._client.finalize_logged_model(model.model_id, "FAILED")
            raise
        self._client.finalize_logged_model(model.model_id, "READY")
        self._client.log_outputs(self.run_id, [LoggedModelOutput(model.model_id, 0)])
        linked = {"dataset_name": dataset.name, "dataset_digest": dataset.digest} if dataset else {}
        for key, value in metrics.items():
            if value is not None and math.isfinite(value):
                self._client.log_metric(
                    self.run_id, key, float(value), step=0, model_id=model.model_id, **linked
                )
        self.set_tags({MODEL_TAG: model.model_id})
        return model.model_id

    def child(self, name: str, tags: dict[str, Any] | None = None) -> TrackedRun:
        """Start a nested run under this one (tagged ``mlflow.parentRunId``)."""
        run = self._client.get_run(self.run_id)
        child = self._client.create_run(
            run.info.experiment_id,
            run_name=name,
            tags={PARENT_TAG: self.run_id, **{k: str(v) for k, v in (tags or {}).items()}},
        )
        return TrackedRun(self.uri, child.info.run_id)

    def finish(self, status: str = "FINISHED") -> None:
        """Mark the run ended with ``status`` (FINISHED, FAILED or KILLED)."""
        # against a server, MLflow prints the run's link on stdout, which is the CLI's (--json, csv)
        with redirect_stdout(io.StringIO()) as printed:
            self._client.set_terminated(self.run_id, status=status)
        if printed.getvalue():
            log.debug("%s", printed.getvalue().strip())

    def fail(self, reason: str, exc: BaseException | None = None) -> None:
        """Mark the run FAILED, recording why in tags and a ``failure.txt`` artifact."""
        self.set_tags({"failure_reason": reason, "failure_message": str(exc)[:4000] if exc else reason})
        if exc is not None:
            with tempfile.TemporaryDirectory() as tmp:
                target = Path(tmp) / "failure.txt"
                target.write_text("".join(traceback.format_exception(exc)))
                self.log_artifact(target)
        self.finish("FAILED")


@contextmanager
def tracked_run(
    uri: str,
    experiment: str,
    run_name: str,
    tags: dict[str, Any] | None = None,
    parent: TrackedRun | None = None,
) -> Iterator[TrackedRun]:
    """Start a run; it ends FINISHED, or FAILED (with the reason) if the block raises."""
    if parent is not None:
        run = parent.child(run_name, tags)
    else:
        exp_id = experiment_id(uri, experiment)
        created = mlflow_client(uri).create_run(
            exp_id, run_name=run_name, tags={k: str(v) for k, v in (tags or {}).items()}
        )
        run = TrackedRun(uri, created.info.run_id)
    try:
        yield run
    except BaseException as exc:
        reason = getattr(exc, "reason", None) or type(exc).__name__
        run.fail(reason, exc)
        raise
    run.finish("FINISHED")


@contextmanager
def system_metrics(run: TrackedRun, enabled: bool) -> Iterator[None]:
    """Sample CPU, memory, disk (and GPU with pynvml) into ``run`` while the block runs."""
    if not enabled:
        yield
        return
    monitor = SystemMetricsMonitor(
        run.run_id, sampling_interval=2.0, samples_before_logging=1, tracking_uri=run.uri
    )
    monitor.start()
    try:
        yield
    finally:
        monitor.finish()


def mark_killed(uri: str, run_id: str, reason: str, by_run: str) -> None:
    """End run ``run_id`` as KILLED, tagging why (``failure_reason=process_died``) and who found it."""
    run = TrackedRun(uri, run_id)
    run.set_tags({"failure_reason": "process_died", "failure_message": reason, "killed_by_run": by_run})
    run.finish("KILLED")


def set_tags(uri: str, run_id: str, tags: dict[str, Any]) -> None:
    """Set tags on an existing run (e.g. the ``leaderboard`` tag)."""
    TrackedRun(uri, run_id).set_tags(tags)


#: Experiment tag prefix under which the MLflow UI keeps a shared runs-table view (its "Share" button).
_VIEW_TAG = "mlflow.sharedViewState."


def share_runs_view(uri: str, experiment: str, key: str, view: Mapping[str, Any]) -> str:
    """Save a runs-table view (filter, order, columns) on ``experiment``; returns its UI path.

    ``view`` holds the UI's own keys: ``searchFilter``, ``orderByKey``, ``orderByAsc`` and
    ``selectedColumns`` (e.g. ``metrics.`rsna_score```). The path, after ``mlflow ui``'s address,
    opens the runs table with that view, as a link made with the UI's "Share" button does.
    """
    exp_id = experiment_id(uri, experiment)
    mlflow_client(uri).set_experiment_tag(exp_id, _VIEW_TAG + key, json.dumps(dict(view)))
    return f"/#/experiments/{exp_id}/runs?viewStateShareKey={quote(key)}"
