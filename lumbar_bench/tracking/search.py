"""Reading runs back from MLflow as the harness's own :class:`RunRecord` values.

No MLflow entity and no filter string leaves this module: :func:`find_runs` builds MLflow's
filter syntax from keyword arguments, and every search follows every page past MLflow's
1000-row limit.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository

from lumbar_bench.tracking.client import artifacts_quietly, mlflow_client
from lumbar_bench.tracking.names import PARENT_TAG, SWEEP_TAG

log = logging.getLogger(__name__)

#: Rows per page when reading runs back (MLflow's own limit; later pages follow the page token).
_PAGE = 1000


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
        return self.tags.get(PARENT_TAG)

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
    client = mlflow_client(uri)
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
        clauses.append(f"tags.{_key(PARENT_TAG)} = {_quote(parent_id)}")
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
    return _record(mlflow_client(uri).get_run(run_id))


def download_artifacts(uri: str, run_id: str, path: str, dst: Path) -> Path:
    """Download artifact ``path`` of ``run_id`` into ``dst`` and return the local path."""
    dst.mkdir(parents=True, exist_ok=True)
    with artifacts_quietly():
        return Path(mlflow_client(uri).download_artifacts(run_id, path, str(dst)))


def run_status(uri: str, run_id: str) -> str | None:
    """Status of run ``run_id`` (RUNNING, FINISHED, FAILED, KILLED); None if the store or run is gone."""
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        return None  # opening it would create an empty store
    try:
        return mlflow_client(uri).get_run(run_id).info.status
    except MlflowException as exc:
        log.warning("cannot read run %s from %s: %s", run_id, uri, exc)
        return None


def local_artifact(uri: str, run_id: str, path: str, dst: Path) -> Path:
    """Local path of artifact ``path`` of ``run_id``.

    A local artifact store is read in place (no copy, no progress bar); others download into ``dst``.
    """
    # the tracking URI resolves a server's ``mlflow-artifacts:/`` locations (else: the process-global one)
    repo = get_artifact_repository(get_run(uri, run_id).artifact_uri, tracking_uri=uri)
    if isinstance(repo, LocalArtifactRepository):
        with artifacts_quietly():
            local = Path(repo.download_artifacts(path))
        if not local.exists():
            raise FileNotFoundError(f"run {run_id} has no artifact {path!r}")
        return local
    return download_artifacts(uri, run_id, path, dst)
