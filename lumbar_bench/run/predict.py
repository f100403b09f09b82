"""``lumbar-bench predict --run``: a Kaggle submission from a run's logged MLflow model."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from lumbar_bench.core.paths import default_cache_dir
from lumbar_bench.data import defaults
from lumbar_bench.tracking.models import load_model
from lumbar_bench.tracking.names import DEFAULT_TRACKING_URI


def predict_from_run(
    run_id: str,
    out: Path,
    data_dir: Path | None = None,
    cache_dir: Path | None = None,
    tracking_uri: str = DEFAULT_TRACKING_URI,
    device: str = "auto",
    progress: bool = True,
) -> pd.DataFrame:
    """Write a complete Kaggle submission for the test part with run ``run_id``'s logged MLflow model.

    The same path as ``mlflow.pyfunc.load_model(...).predict(...)``.
    """
    cache_dir = cache_dir or default_cache_dir()
    root = data_dir if data_dir is not None else defaults.ensure_phantom(cache_dir, progress)
    model = load_model(tracking_uri, run_id)
    params = {"part": "test", "device": device, "cache_dir": str(cache_dir)}
    submission = model.predict(pd.DataFrame({"data": [str(root)]}), params=params)
    out.parent.mkdir(parents=True, exist_ok=True)
    submission.to_csv(out, index=False)
    return submission
