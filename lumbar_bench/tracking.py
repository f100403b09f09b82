"""The only module that talks to MLflow.

It uses an explicit :class:`mlflow.MlflowClient` per tracking URI instead of the
fluent API's process-global state, so two runs (or a test and a run) never write
into each other's store. Runs are read back as the harness's own :class:`RunRecord`
values, found by :func:`find_runs` (which builds MLflow's filter syntax), so no other
module sees an MLflow entity or a filter string.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
import traceback
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
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
        self._client.set_terminated(self.run_id, status=status)

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
        """True for a nested run (a stage of another run)."""
        return self.parent_id is not None

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
    nested in that run; ``tags`` adds exact tag matches; ``top_level`` drops nested runs.
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
    return [r for r in runs if not r.is_child] if top_level else runs


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

    repo = get_artifact_repository(get_run(uri, run_id).artifact_uri)
    if isinstance(repo, LocalArtifactRepository):
        local = Path(repo.download_artifacts(path))
        if not local.exists():
            raise FileNotFoundError(f"run {run_id} has no artifact {path!r}")
        return local
    return download_artifacts(uri, run_id, path, dst)
