"""Read and validate the RSNA CSV files: labels, label coordinates, series descriptions.

Every problem that makes a file unusable raises :class:`~lumbar_bench.core.errors.DataError`
with one line naming the file and the problem (column, value and line where it applies).
Line numbers count the header as line 1, as an editor shows them.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from lumbar_bench.constants import (
    CONDITIONS,
    LABEL_COLUMNS,
    LEVELS,
    SERIES_TYPES,
    SEVERITIES,
    TITLE_TO_CONDITION,
    TITLE_TO_LEVEL,
)
from lumbar_bench.core.errors import DataError

log = logging.getLogger(__name__)

COORDINATE_COLUMNS: tuple[str, ...] = (
    "study_id",
    "series_id",
    "instance_number",
    "condition",
    "level",
    "x",
    "y",
)
SERIES_COLUMNS: tuple[str, ...] = ("study_id", "series_id", "series_description")
#: How many individual warnings :func:`validate_coordinates` logs before summarising.
MAX_COORDINATE_WARNINGS = 20

_SEVERITY_CODE: dict[str, int] = {s: i for i, s in enumerate(SEVERITIES)}
_CONDITION_NAMES: dict[str, str] = {**TITLE_TO_CONDITION, **{c: c for c in CONDITIONS}}
_LEVEL_NAMES: dict[str, str] = {**TITLE_TO_LEVEL, **{lv: lv for lv in LEVELS}}


def _read_csv(path: Path, required: tuple[str, ...]) -> pd.DataFrame:
    """All cells as stripped strings (blank = ""); DataError on a missing file or column."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: empty file") from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError) as exc:
        raise DataError(f"{path}: cannot parse CSV ({str(exc).strip().splitlines()[0]})") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    for column in required:
        if column not in frame.columns:
            raise DataError(f"{path}: missing column {column!r}")
    return frame.apply(lambda col: col.astype(str).str.strip())


def _integers(frame: pd.DataFrame, column: str, path: Path) -> np.ndarray:
    """Parse an integer column as int64; DataError names the first bad value, its line and column."""
    values = pd.to_numeric(frame[column], errors="coerce")
    bad = values.isna() | (values != values.round())
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(
            f"{path}: non-integer value {frame[column].iloc[i]!r} in column {column!r}, line {i + 2}"
        )
    return values.to_numpy().astype(np.int64)


def _floats(frame: pd.DataFrame, column: str, path: Path) -> np.ndarray:
    """Parse a numeric column as float64; DataError names the first bad value, its line and column."""
    values = pd.to_numeric(frame[column], errors="coerce")
    bad = values.isna() | ~np.isfinite(values.to_numpy(dtype=np.float64, na_value=np.nan))
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(
            f"{path}: non-numeric value {frame[column].iloc[i]!r} in column {column!r}, line {i + 2}"
        )
    return values.to_numpy(dtype=np.float64)


def _mapped(frame: pd.DataFrame, column: str, names: Mapping[str, str], what: str, path: Path) -> np.ndarray:
    """Map a name column through ``names``; DataError naming the first unknown value."""
    mapped = frame[column].map(names)
    if mapped.isna().any():
        i = int(np.flatnonzero(mapped.isna().to_numpy())[0])
        raise DataError(
            f"{path}: unknown {what} {frame[column].iloc[i]!r} in column {column!r}, line {i + 2}"
        )
    return mapped.to_numpy(dtype=object)


def _check_unique(ids: np.ndarray, what: str, path: Path) -> None:
    uniq, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        raise DataError(f"{path}: duplicate {what} {int(uniq[counts > 1][0])}")


def read_labels(path: Path) -> pd.DataFrame:
    """``train.csv`` -> frame indexed by ``study_id`` (int) with the 25 label columns as int8.

    Codes are 0/1/2 in ``SEVERITIES`` order and -1 for a blank (unlabelled) cell.
    """
    path = Path(path)
    frame = _read_csv(path, ("study_id", *LABEL_COLUMNS))
    study_ids = _integers(frame, "study_id", path)
    _check_unique(study_ids, "study_id", path)
    codes = np.empty((len(frame), len(LABEL_COLUMNS)), dtype=np.int8)
    for j, column in enumerate(LABEL_COLUMNS):
        cells = frame[column]
        mapped = cells.map(_SEVERITY_CODE).where(cells != "", -1)
        if mapped.isna().any():
            i = int(np.flatnonzero(mapped.isna().to_numpy())[0])
            raise DataError(f"{path}: unknown severity {cells.iloc[i]!r} in column {column!r}, line {i + 2}")
        codes[:, j] = mapped.to_numpy(dtype=np.int64)
    out = pd.DataFrame(codes, index=pd.Index(study_ids, name="study_id"), columns=list(LABEL_COLUMNS))
    return out.sort_index()


def empty_labels() -> pd.DataFrame:
    """Make a labels frame with no rows but the right index and columns (the test part)."""
    index = pd.Index(np.empty(0, dtype=np.int64), name="study_id")
    return pd.DataFrame({c: np.empty(0, dtype=np.int8) for c in LABEL_COLUMNS}, index=index)


def labels_to_frame(codes: pd.DataFrame) -> pd.DataFrame:
    """Codes (as :func:`read_labels` returns) -> ``train.csv`` form: ``study_id`` column, strings, blanks.

    ``study_id`` may be the index or a column; write the result with ``to_csv(index=False)``.
    """
    frame = codes if "study_id" in codes.columns else codes.reset_index()
    if "study_id" not in frame.columns:
        raise DataError("labels_to_frame: no study_id index or column")
    names = np.array(["", *SEVERITIES], dtype=object)
    values = frame[list(LABEL_COLUMNS)].to_numpy(dtype=np.int64)
    if ((values < -1) | (values >= len(SEVERITIES))).any():
        raise DataError(f"labels_to_frame: codes outside -1..{len(SEVERITIES) - 1}")
    out = pd.DataFrame(names[values + 1], columns=list(LABEL_COLUMNS), dtype=object)
    out.insert(0, "study_id", frame["study_id"].to_numpy(dtype=np.int64))
    return out


def empty_coordinates() -> pd.DataFrame:
    """Make a coordinates frame with no rows but the right columns and dtypes."""
    return pd.DataFrame(
        {
            "study_id": np.empty(0, np.int64),
            "series_id": np.empty(0, np.int64),
            "instance_number": np.empty(0, np.int64),
            "condition": np.empty(0, object),
            "level": np.empty(0, object),
            "x": np.empty(0, np.float64),
            "y": np.empty(0, np.float64),
        }
    )


def read_coordinates(path: Path) -> pd.DataFrame:
    """``train_label_coordinates.csv`` with snake-case ``condition``/``level`` and numeric columns."""
    path = Path(path)
    frame = _read_csv(path, COORDINATE_COLUMNS)
    return pd.DataFrame(
        {
            "study_id": _integers(frame, "study_id", path),
            "series_id": _integers(frame, "series_id", path),
            "instance_number": _integers(frame, "instance_number", path),
            "condition": _mapped(frame, "condition", _CONDITION_NAMES, "condition", path),
            "level": _mapped(frame, "level", _LEVEL_NAMES, "level", path),
            "x": _floats(frame, "x", path),
            "y": _floats(frame, "y", path),
        }
    )


def read_series_descriptions(path: Path) -> pd.DataFrame:
    """``*_series_descriptions.csv``: ``study_id``, ``series_id`` (int) and ``series_description``.

    An unfamiliar description is kept and logged once per value.
    """
    path = Path(path)
    frame = _read_csv(path, SERIES_COLUMNS)
    out = pd.DataFrame(
        {
            "study_id": _integers(frame, "study_id", path),
            "series_id": _integers(frame, "series_id", path),
            "series_description": frame["series_description"].to_numpy(dtype=object),
        }
    )
    _check_unique(out["series_id"].to_numpy(), "series_id", path)
    for desc in sorted(set(out["series_description"]) - set(SERIES_TYPES)):
        log.warning("%s: unfamiliar series_description %r", path, desc)
    return out.sort_values(["study_id", "series_id"], kind="stable").reset_index(drop=True)


def validate_coordinates(
    coords: pd.DataFrame, series: pd.DataFrame, instances_by_series: Mapping[int, Collection[int]]
) -> int:
    """Warn (one line each) about coordinates on unknown series or missing instances; return the count.

    ``instances_by_series`` maps a series id to the instance numbers present on disk; a
    series absent from it counts as having no instances. Logs at most
    ``MAX_COORDINATE_WARNINGS`` lines, then one summary line.
    """
    study_of = dict(zip(series["series_id"].tolist(), series["study_id"].tolist(), strict=True))
    problems = 0
    rows = coords[["study_id", "series_id", "instance_number"]].itertuples(index=False)
    for study_id, series_id, instance in rows:
        if series_id not in study_of:
            why = "series not in the series descriptions"
        elif study_of[series_id] != study_id:
            why = f"series belongs to study {study_of[series_id]}"
        elif instance not in instances_by_series.get(series_id, ()):
            why = "instance not found"
        else:
            continue
        problems += 1
        if problems <= MAX_COORDINATE_WARNINGS:
            log.warning(
                "coordinate on study %s series %s instance %s: %s", study_id, series_id, instance, why
            )
    if problems > MAX_COORDINATE_WARNINGS:
        log.warning(
            "%d coordinates point at missing series or instances (first %d shown)",
            problems,
            MAX_COORDINATE_WARNINGS,
        )
    return problems
