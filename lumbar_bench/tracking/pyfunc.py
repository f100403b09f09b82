"""The ``mlflow.pyfunc`` face of a trained approach.

A run's model folder (:mod:`lumbar_bench.approaches.trained`) is logged as an MLflow model whose
``predict`` returns Kaggle submission rows::

    model = mlflow.pyfunc.load_model("models:/lumbar-bench-best/1")
    model.predict(pd.DataFrame({"data": ["/data/rsna"]}))        # every study of the test part
    model.predict(pd.DataFrame({"data": ["/data/rsna"], "study_id": [4003253]}),
                  params={"part": "train", "device": "cpu"})     # chosen studies of a part

The input is a frame with a ``data`` column (one RSNA-layout directory) and an optional
``study_id`` column; a plain directory path is accepted too. ``params``: ``part`` (``test``),
``device`` (``auto``), ``cache_dir`` (the user cache directory when empty).

The model is saved *from code* (:mod:`lumbar_bench.tracking.model_code`), not pickled, so
loading it runs this package's code and nothing else.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

from lumbar_bench.approaches.trained import load_trained, predict_studies
from lumbar_bench.constants import PROB_COLUMNS
from lumbar_bench.tracking.client import artifacts_quietly

#: The key of the model folder among the pyfunc model's artifacts.
ARTIFACT = "lumbar_bench_model"
PARAMS = {"part": "test", "device": "auto", "cache_dir": ""}
#: The file MLflow runs to build the model when it loads it (models from code).
MODEL_CODE = Path(__file__).with_name("model_code.py")


class LumbarBenchModel(mlflow.pyfunc.PythonModel):
    """Loads the approach once (``load_context``) and predicts submission rows (``predict``)."""

    def load_context(self, context: Any) -> None:
        """Rebuild the trained approach from the model's artifact folder."""
        self.trained = load_trained(Path(context.artifacts[ARTIFACT]))

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        """Submission rows (``row_id, normal_mild, moderate, severe``) for the studies asked for.

        The ``DataFrame`` hint tells MLflow not to build a column schema, which would refuse
        the plain path that :func:`parse_input` also accepts.
        """
        data_dir, study_ids = parse_input(model_input)
        p = {**PARAMS, **(params or {})}
        return predict_studies(
            self.trained,
            data_dir,
            study_ids,
            part=str(p["part"]),
            cache_dir=Path(p["cache_dir"]) if p["cache_dir"] else None,
            device=str(p["device"]),
        )


def parse_input(model_input: Any) -> tuple[Path, list[int] | None]:
    """The data directory and study ids of a pyfunc input (a path, or a ``data``/``study_id`` frame)."""
    if isinstance(model_input, str | Path):
        return Path(model_input), None
    if not isinstance(model_input, pd.DataFrame) or "data" not in model_input:
        raise ValueError("input: an RSNA-layout directory, or a frame with a 'data' column")
    roots = model_input["data"].dropna().astype(str).unique()
    if len(roots) != 1:
        raise ValueError(f"input: one data directory per call, got {len(roots)}")
    if "study_id" not in model_input:
        return Path(roots[0]), None
    return Path(roots[0]), [int(s) for s in model_input["study_id"].dropna().unique()]


def save_pyfunc(model_dir: Path, out: Path, requirements: list[str], metadata: dict[str, Any]) -> Path:
    """Write ``model_dir`` as an MLflow pyfunc model at ``out``, saved from code.

    It has no input example: none is portable (it would name a local data folder), and the
    signature names the output columns and the params only.
    """
    signature = ModelSignature(
        inputs=None,  # a path or a data/study_id frame (parse_input); a column schema refuses a path
        outputs=Schema([ColSpec("string", "row_id")] + [ColSpec("double", c) for c in PROB_COLUMNS]),
        params=ParamSchema([ParamSpec(k, "string", v) for k, v in PARAMS.items()]),
    )
    with warnings.catch_warnings(), artifacts_quietly():
        # MLflow's hint to add an input example: none is portable, as said above
        warnings.filterwarnings("ignore", message=".*input example was not provided", category=UserWarning)
        mlflow.pyfunc.save_model(
            str(out),
            python_model=str(MODEL_CODE),
            artifacts={ARTIFACT: str(model_dir)},
            signature=signature,
            pip_requirements=requirements,
            metadata=metadata,
        )
    return out
