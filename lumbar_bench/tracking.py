"""The only module that talks to MLflow.

It uses an explicit :class:`mlflow.MlflowClient` per tracking URI instead of the
fluent API's process-global state, so two runs (or a test and a run) never write
into each other's store.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
DEFAULT_EXPERIMENT = "lumbar-bench"
_MAX_PARAM_LEN = 500


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
            tags={"mlflow.parentRunId": self.run_id, **{k: str(v) for k, v in (tags or {}).items()}},
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


def search_runs(uri: str, experiment: str, filter_string: str = "") -> list[Any]:
    """Every run of ``experiment`` matching ``filter_string``, following every page."""
    client = _client(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    runs: list[Any] = []
    token = None
    while True:
        page = client.search_runs(
            [exp.experiment_id], filter_string=filter_string, max_results=1000, page_token=token
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def get_run(uri: str, run_id: str) -> Any:
    """The MLflow run ``run_id``."""
    return _client(uri).get_run(run_id)


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

    repo = get_artifact_repository(get_run(uri, run_id).info.artifact_uri)
    if isinstance(repo, LocalArtifactRepository):
        local = Path(repo.download_artifacts(path))
        if not local.exists():
            raise FileNotFoundError(f"run {run_id} has no artifact {path!r}")
        return local
    return download_artifacts(uri, run_id, path, dst)
