"""A trained approach as a folder, and Kaggle submission rows from it: the one prediction path.

``lumbar-bench run`` writes the folder with :func:`save_trained` and logs it as an MLflow
model (:mod:`lumbar_bench.tracking.pyfunc` wraps it for ``mlflow.pyfunc``). ``lumbar-bench
predict --run``, ``mlflow.pyfunc.load_model(...).predict(...)`` and ``mlflow models serve``
all end in :func:`predict_studies`. Nothing here imports MLflow.

Layout of the folder::

    approach.json   {"approach": name, "config_hash": ..., "config": {...}}
    weights/        what the approach's own ``save`` wrote (loaded with ``weights_only=True``)
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from lumbar_bench.approaches.base import Approach
from lumbar_bench.approaches.context import RunContext
from lumbar_bench.approaches.registry import get_approach
from lumbar_bench.config import config_dict, config_from_dict
from lumbar_bench.core.devices import resolve_device
from lumbar_bench.core.errors import ConfigError, DataError
from lumbar_bench.core.files import write_text_atomic
from lumbar_bench.core.paths import default_cache_dir
from lumbar_bench.data.defaults import load_data
from lumbar_bench.metrics.score import complete_submission

MANIFEST = "approach.json"
WEIGHTS = "weights"


@dataclass(frozen=True)
class Trained:
    """A trained approach rebuilt from its folder, with the name it is registered under."""

    name: str
    approach: Approach


def save_trained(approach: Approach, name: str, config_hash: str, directory: Path) -> Path:
    """Write ``approach`` (its own ``save``) and its manifest into ``directory``; returns it."""
    weights = directory / WEIGHTS
    weights.mkdir(parents=True, exist_ok=True)
    approach.save(weights)
    manifest = {"approach": name, "config_hash": config_hash, "config": config_dict(approach.config)}
    write_text_atomic(directory / MANIFEST, json.dumps(manifest, indent=1, default=str))
    return directory


def load_trained(directory: Path) -> Trained:
    """Rebuild the approach saved in ``directory`` by :func:`save_trained`."""
    path = Path(directory) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: not a lumbar-bench model folder ({exc})") from None
    cls = get_approach(manifest["approach"])
    config = config_from_dict(cls.Config, manifest["config"])
    approach = cls.load(Path(directory) / WEIGHTS, config)
    return Trained(manifest["approach"], approach)


def predict_studies(
    trained: Trained,
    data_dir: Path | None,
    study_ids: Sequence[int] | None = None,
    *,
    part: str = "test",
    cache_dir: Path | None = None,
    device: str = "auto",
    progress: bool = False,
) -> pd.DataFrame:
    """Kaggle submission rows of ``study_ids`` (default: every study) of ``part`` of ``data_dir``.

    ``data_dir`` None is the embedded phantom. Every study gets all 25 rows, in label order.
    """
    cache_dir = cache_dir or default_cache_dir()
    data = load_data(data_dir, cache_dir, progress=progress, part=part)
    ids = list(data.study_ids) if study_ids is None else [int(s) for s in study_ids]
    unknown = sorted(set(ids) - set(data.study_ids))
    if unknown:
        raise DataError(
            f"{data.root}: {len(unknown)} studies are not in its {part} part (e.g. {unknown[0]}); "
            f"choose the part that lists them"
        )
    scratch = cache_dir / "predict"
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"{trained.name}-", dir=scratch) as workdir:
        ctx = RunContext(
            workdir=Path(workdir), cache_dir=cache_dir, device=resolve_device(device), progress=progress
        )
        return complete_submission(trained.approach.predict(data, ids, ctx), ids, trained.name)
