"""The names tracking uses, without importing MLflow: default store and experiments, tags, URIs.

The command line builds its ``--help`` from these, so this module stays free of MLflow.
"""

from __future__ import annotations

from pathlib import Path

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
DEFAULT_EXPERIMENT = "lumbar-bench"
#: The experiment the CI gate (``lumbar-bench check``) logs to.
CI_EXPERIMENT = "lumbar-bench-ci"
#: The tag MLflow puts on a nested run, naming its parent.
PARENT_TAG = "mlflow.parentRunId"
#: The tag naming the sweep (its run id) a ``lumbar-bench run`` ran in as a task, nested under it.
SWEEP_TAG = "sweep_run_id"
#: The tag naming the logged model of a run.
MODEL_TAG = "model_id"


def artifact_location(uri: str) -> str | None:
    """For a SQLite store, ``mlartifacts/`` beside the database file; else the server's default.

    Without it MLflow puts artifacts in ``./mlruns`` of whatever directory a run starts in, so
    two stores (a test's and the user's) would share one artifact folder.
    """
    if not uri.startswith("sqlite:///"):
        return None
    return (Path(uri.removeprefix("sqlite:///")).resolve().parent / "mlartifacts").as_uri()


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
