"""The only module that talks to MLflow.

It uses an explicit :class:`mlflow.MlflowClient` per tracking URI instead of the
fluent API's process-global state, so two runs (or a test and a run) never write
into each other's store. Runs are read back as the harness's own :class:`RunRecord`
values, found by :func:`find_runs` (which builds MLflow's filter syntax), so no other
module sees an MLflow entity or a filter string.
"""

from __future__ import annotations

import io
import json
import logging
import math
import re
import tempfile
import traceback
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
DEFAULT_EXPERIMENT = "lumbar-bench"
_MAX_PARAM_LEN = 500
#: Rows per page when reading runs back (MLflow's own limit; later pages follow the page token).
_PAGE = 1000
#: The tag MLflow puts on a nested run, naming its parent.
_PARENT_TAG = "mlflow.parentRunId"
#: The tag naming the sweep (its run id) a ``lumbar-bench run`` ran in as a task, nested under it.
SWEEP_TAG = "sweep_run_id"
#: The tag naming the logged model of a run.
MODEL_TAG = "model_id"


def _client(uri: str) -> Any:
    from mlflow import MlflowClient

    # MLflow configures its loggers on import; its schema-migration chatter is not the user's business.
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
    return MlflowClient(tracking_uri=uri)


def artifact_location(uri: str) -> str | None:
    """For a SQLite store, ``mlartifacts/`` beside the database file; else the server's default.

    Without it MLflow puts artifacts in ``./mlruns`` of whatever directory a run starts in, so
    two stores (a test's and the user's) would share one artifact folder.
    """
    if not uri.startswith("sqlite:///"):
        return None
    return (Path(uri.removeprefix("sqlite:///")).resolve().parent / "mlartifacts").as_uri()


def experiment_id(uri: str, name: str) -> str:
    """Id of experiment ``name`` in ``uri``, creating it (and the store) when needed."""
    client = _client(uri)
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
        self._client = _client(uri)

    def log_params(self, params: dict[str, Any]) -> None:
        """Log params; values are stringified and truncated to MLflow's limit."""
        from mlflow.entities import Param

        items = [Param(k, str(v)[:_MAX_PARAM_LEN]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self._client.log_batch(self.run_id, params=items[i : i + 100])

    def set_tags(self, tags: dict[str, Any]) -> None:
        """Set tags on the run."""
        from mlflow.entities import RunTag

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
        import mlflow.data
        from mlflow.entities import DatasetInput, InputTag
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        with warnings.catch_warnings():  # a hint that integer columns cannot hold missing values
            warnings.simplefilter("ignore", UserWarning)
            dataset = mlflow.data.from_pandas(frame, name=ref.name, digest=ref.digest)
            # the entity mlflow.log_input builds (the schema is inferred here); the client has no
            # public converter
            entity = dataset._to_mlflow_entity()
        self._client.log_inputs(
            self.run_id, [DatasetInput(entity, [InputTag(MLFLOW_DATASET_CONTEXT, ref.context)])]
        )

    def log_model(
        self, model_dir: Path, spec: ModelSpec, metrics: Mapping[str, float], dataset: DatasetRef | None
    ) -> str:
        """Log ``model_dir`` (:mod:`lumbar_bench.inference`) as a pyfunc MLflow model of this run.

        The model is a logged model (MLflow 3) whose source run is this one; ``metrics`` are
        logged to the run linked to the model and the evaluation ``dataset``, so the model's
        page shows them. Returns the model id (also the run's ``model_id`` tag).
        """
        from mlflow.entities import LoggedModelOutput

        from lumbar_bench import tracking_model

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
            with tempfile.TemporaryDirectory() as tmp:
                out = Path(tmp) / "model"
                tracking_model.save_pyfunc(model_dir, out, list(spec.requirements), dict(spec.metadata))
                self._client.log_model_artifacts(model.model_id, str(out))
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
            tags={_PARENT_TAG: self.run_id, **{k: str(v) for k, v in (tags or {}).items()}},
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
        created = _client(uri).create_run(
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
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    monitor = SystemMetricsMonitor(
        run.run_id, sampling_interval=2.0, samples_before_logging=1, tracking_uri=run.uri
    )
    monitor.start()
    try:
        yield
    finally:
        monitor.finish()


@dataclass(frozen=True)
class RunRecord:
    """One tracked run as the harness sees it: no MLflow entity leaves this module.

    ``start_time`` and ``end_time`` are milliseconds since the epoch (``end_time`` None while it
    runs); ``params`` and ``tags`` hold strings. The mappings are read-only.
    """

    run_id: str
    status: str
    start_time: int
    end_time: int | None = None
    name: str = ""
    params: Mapping[str, str] = field(default_factory=dict)
    metrics: Mapping[str, float] = field(default_factory=dict)
    tags: Mapping[str, str] = field(default_factory=dict)
    #: Where the run's artifacts live (``file://...`` for a local store).
    artifact_uri: str = ""

    def __post_init__(self) -> None:
        for name in ("params", "metrics", "tags"):
            object.__setattr__(self, name, MappingProxyType(dict(getattr(self, name))))

    @property
    def parent_id(self) -> str | None:
        """The run this one is nested in; None for a top-level run."""
        return self.tags.get(_PARENT_TAG)

    @property
    def is_child(self) -> bool:
        """True for a nested run (a stage of another run, or a task of a sweep)."""
        return self.parent_id is not None

    @property
    def is_sweep_task(self) -> bool:
        """True for a run made by ``lumbar-bench run`` as a task of a sweep (nested in the sweep's run)."""
        return bool(self.tags.get(SWEEP_TAG))

    def tag(self, key: str, default: str = "") -> str:
        """Tag ``key``, or ``default`` when the run lacks it."""
        return self.tags.get(key, default)

    def metric(self, key: str, default: float | None = None) -> float | None:
        """Metric ``key`` (its last value), or ``default`` when the run lacks it."""
        return self.metrics.get(key, default)


def _record(run: Any) -> RunRecord:
    """The :class:`RunRecord` of an MLflow run."""
    info, data = run.info, run.data
    return RunRecord(
        run_id=info.run_id,
        status=info.status,
        start_time=int(info.start_time or 0),
        end_time=info.end_time,
        name=info.run_name or "",
        params=data.params,
        metrics=data.metrics,
        tags=data.tags,
        artifact_uri=info.artifact_uri or "",
    )


def search_runs(uri: str, experiment: str, filter_string: str = "") -> list[RunRecord]:
    """Every run of ``experiment`` matching MLflow's ``filter_string``, following every page.

    Prefer :func:`find_runs`, which builds the filter; this is the escape hatch for one it cannot.
    """
    client = _client(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    runs: list[RunRecord] = []
    token = None
    while True:
        page = client.search_runs(
            [exp.experiment_id], filter_string=filter_string, max_results=_PAGE, page_token=token
        )
        runs.extend(_record(r) for r in page)
        token = page.token
        if not token:
            return runs


def find_runs(
    uri: str,
    experiment: str,
    *,
    approach: str | None = None,
    subset: str | None = None,
    fold: int | None = None,
    status: str | None = None,
    split_prefix: str | None = None,
    parent_id: str | None = None,
    tags: Mapping[str, object] | None = None,
    top_level: bool = False,
) -> list[RunRecord]:
    """Runs of ``experiment`` whose tags (and status) match every criterion given, filtered in the store.

    ``split_prefix`` matches the start of the ``split_digest`` tag; ``parent_id`` keeps the runs
    nested in that run; ``tags`` adds exact tag matches; ``top_level`` drops nested runs (the stages
    of a run) but keeps a sweep's tasks, which are runs of their own nested only to group them.
    """
    wanted = {"approach": approach, "subset": subset, "fold": fold, **(tags or {})}
    clauses = [f"tags.{_key(k)} = {_quote(v)}" for k, v in wanted.items() if v is not None]
    if status is not None:
        clauses.append(f"attributes.status = {_quote(status)}")
    if split_prefix:
        clauses.append(f"tags.split_digest LIKE {_quote(_literal_prefix(split_prefix) + '%')}")
    if parent_id is not None:
        clauses.append(f"tags.{_key(_PARENT_TAG)} = {_quote(parent_id)}")
    runs = search_runs(uri, experiment, " and ".join(clauses))
    return [r for r in runs if not r.is_child or r.is_sweep_task] if top_level else runs


def _key(name: str) -> str:
    """A tag name as MLflow's filter grammar wants it (backquoted when it has a dot or a dash)."""
    if "`" in name:
        raise ValueError(f"tag name {name!r}: a backquote cannot be searched for")
    return name if name.replace("_", "").isalnum() else f"`{name}`"


def _quote(value: object) -> str:
    """A value as a quoted string literal of MLflow's filter grammar (which has no escapes)."""
    text = str(value)
    if "'" not in text:
        return f"'{text}'"
    if '"' not in text:
        return f'"{text}"'
    raise ValueError(f"{text!r}: a value with both quote characters cannot be searched for")


def _literal_prefix(prefix: str) -> str:
    """``prefix`` for a LIKE pattern; its own ``%`` and ``_`` would be wildcards, so they are refused."""
    if "%" in prefix or "_" in prefix:
        raise ValueError(f"{prefix!r}: '%' and '_' are wildcards in a prefix search")
    return prefix


def get_run(uri: str, run_id: str) -> RunRecord:
    """The run ``run_id``."""
    return _record(_client(uri).get_run(run_id))


def download_artifacts(uri: str, run_id: str, path: str, dst: Path) -> Path:
    """Download artifact ``path`` of ``run_id`` into ``dst`` and return the local path."""
    dst.mkdir(parents=True, exist_ok=True)
    return Path(_client(uri).download_artifacts(run_id, path, str(dst)))


def absolute_uri(uri: str) -> str:
    """``uri`` with a relative SQLite path made absolute, so it names the same store from any directory."""
    if not uri.startswith("sqlite:///") or uri.startswith("sqlite:////"):
        return uri
    return "sqlite:///" + str(Path(uri.removeprefix("sqlite:///")).resolve())


def is_server(uri: str) -> bool:
    """True for a tracking server's URI (``http://`` or ``https://``), False for a local store."""
    return uri.startswith(("http://", "https://"))


def ui_link(uri: str, path: str) -> str:
    """Where to open ``path`` of the MLflow UI for store ``uri``: the server itself, or ``mlflow ui``."""
    if is_server(uri):
        return uri.rstrip("/") + path
    return f"in `mlflow ui --backend-store-uri {uri}`: http://127.0.0.1:5000{path}"


def run_status(uri: str, run_id: str) -> str | None:
    """Status of run ``run_id`` (RUNNING, FINISHED, FAILED, KILLED); None if the store or run is gone."""
    from mlflow.exceptions import MlflowException

    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        return None  # opening it would create an empty store
    try:
        return _client(uri).get_run(run_id).info.status
    except MlflowException as exc:
        log.warning("cannot read run %s from %s: %s", run_id, uri, exc)
        return None


def mark_killed(uri: str, run_id: str, reason: str, by_run: str) -> None:
    """End run ``run_id`` as KILLED, tagging why (``failure_reason=process_died``) and who found it."""
    run = TrackedRun(uri, run_id)
    run.set_tags({"failure_reason": "process_died", "failure_message": reason, "killed_by_run": by_run})
    run.finish("KILLED")


def set_tags(uri: str, run_id: str, tags: dict[str, Any]) -> None:
    """Set tags on an existing run (e.g. the ``leaderboard`` tag)."""
    TrackedRun(uri, run_id).set_tags(tags)


def local_artifact(uri: str, run_id: str, path: str, dst: Path) -> Path:
    """Local path of artifact ``path`` of ``run_id``.

    A local artifact store is read in place (no copy, no progress bar); others download into ``dst``.
    """
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
    from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository

    # the tracking URI resolves a server's ``mlflow-artifacts:/`` locations (else: the process-global one)
    repo = get_artifact_repository(get_run(uri, run_id).artifact_uri, tracking_uri=uri)
    if isinstance(repo, LocalArtifactRepository):
        local = Path(repo.download_artifacts(path))
        if not local.exists():
            raise FileNotFoundError(f"run {run_id} has no artifact {path!r}")
        return local
    return download_artifacts(uri, run_id, path, dst)


#: Experiment tag prefix under which the MLflow UI keeps a shared runs-table view (its "Share" button).
_VIEW_TAG = "mlflow.sharedViewState."


def share_runs_view(uri: str, experiment: str, key: str, view: Mapping[str, Any]) -> str:
    """Save a runs-table view (filter, order, columns) on ``experiment``; returns its UI path.

    ``view`` holds the UI's own keys: ``searchFilter``, ``orderByKey``, ``orderByAsc`` and
    ``selectedColumns`` (e.g. ``metrics.`rsna_score```). The path, after ``mlflow ui``'s address,
    opens the runs table with that view, as a link made with the UI's "Share" button does.
    """
    from urllib.parse import quote

    exp_id = experiment_id(uri, experiment)
    _client(uri).set_experiment_tag(exp_id, _VIEW_TAG + key, json.dumps(dict(view)))
    return f"/#/experiments/{exp_id}/runs?viewStateShareKey={quote(key)}"


def run_model_id(uri: str, run_id: str) -> str:
    """Id of the logged model of run ``run_id``; :class:`ConfigError` when it has none."""
    from lumbar_bench.errors import ConfigError

    model_id = get_run(uri, run_id).tag(MODEL_TAG)
    if not model_id:
        raise ConfigError(f"run {run_id} in {uri} has no logged model (tag {MODEL_TAG!r}); run it again")
    return model_id


def load_model(uri: str, run_id: str) -> Any:
    """The ``mlflow.pyfunc`` model logged by run ``run_id`` (a local store is read in place)."""
    import mlflow.pyfunc
    from mlflow.artifacts import download_artifacts

    location = _client(uri).get_logged_model(run_model_id(uri, run_id)).artifact_location
    return mlflow.pyfunc.load_model(download_artifacts(artifact_uri=location, tracking_uri=uri))


def register_model(uri: str, name: str, run_id: str, tags: dict[str, Any]) -> int:
    """Register run ``run_id``'s logged model as a new version of ``name``; returns the version.

    The source is the model's artifact location, not ``models:/<id>``: MLflow's SQL registry
    resolves a ``models:/`` source with a default client, i.e. the process-global tracking
    URI (``./mlflow.db``), and fails for any other store.
    """
    from mlflow.exceptions import MlflowException

    client = _client(uri)
    model_id = run_model_id(uri, run_id)
    try:
        client.create_registered_model(name, description="lumbar-bench: the top approach of a leaderboard")
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    location = client.get_logged_model(model_id).artifact_location
    version = client.create_model_version(
        name,
        source=location,
        run_id=run_id,
        tags={MODEL_TAG: model_id, **{k: str(v) for k, v in tags.items()}},
        model_id=model_id,
    )
    return int(version.version)
