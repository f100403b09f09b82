"""A run's logged model read back: as ``mlflow.pyfunc``, or registered in the Model Registry."""

from __future__ import annotations

from typing import Any

import mlflow.pyfunc
from mlflow.artifacts import download_artifacts
from mlflow.exceptions import MlflowException

from lumbar_bench.core.errors import ConfigError
from lumbar_bench.tracking.client import artifacts_quietly, mlflow_client
from lumbar_bench.tracking.names import MODEL_TAG
from lumbar_bench.tracking.search import get_run


def run_model_id(uri: str, run_id: str) -> str:
    """Id of the logged model of run ``run_id``; :class:`ConfigError` when it has none."""
    model_id = get_run(uri, run_id).tag(MODEL_TAG)
    if not model_id:
        raise ConfigError(f"run {run_id} in {uri} has no logged model (tag {MODEL_TAG!r}); run it again")
    return model_id


def load_model(uri: str, run_id: str) -> Any:
    """The ``mlflow.pyfunc`` model logged by run ``run_id`` (a local store is read in place)."""
    location = mlflow_client(uri).get_logged_model(run_model_id(uri, run_id)).artifact_location
    with artifacts_quietly():
        return mlflow.pyfunc.load_model(download_artifacts(artifact_uri=location, tracking_uri=uri))


def register_model(uri: str, name: str, run_id: str, tags: dict[str, Any]) -> int:
    """Register run ``run_id``'s logged model as a new version of ``name``; returns the version.

    The source is the model's artifact location, not ``models:/<id>``: MLflow's SQL registry
    resolves a ``models:/`` source with a default client, i.e. the process-global tracking
    URI (``./mlflow.db``), and fails for any other store.
    """
    client = mlflow_client(uri)
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
