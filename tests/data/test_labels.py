"""Reading and validating the RSNA CSV files."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lumbar_bench.constants import LABEL_COLUMNS, SEVERITIES
from lumbar_bench.core.errors import DataError
from lumbar_bench.data.labels import (
    MAX_COORDINATE_WARNINGS,
    empty_labels,
    labels_to_frame,
    read_coordinates,
    read_labels,
    read_series_descriptions,
    validate_coordinates,
)


def write_labels(path: Path, rows: dict[int, list[str]]) -> Path:
    lines = [",".join(("study_id", *LABEL_COLUMNS))]
    lines += [",".join((str(s), *vals)) for s, vals in rows.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def _row(default: str = "Normal/Mild", **cells: str) -> list[str]:
    return [cells.get(c, default) for c in LABEL_COLUMNS]


COORDS = (
    "study_id,series_id,instance_number,condition,level,x,y\n"
    "10,100,3,Spinal Canal Stenosis,L1/L2,12.5,40.25\n"
    "10,101,7,Left Neural Foraminal Narrowing,L5/S1,1,2\n"
    "11,110,2,Right Subarticular Stenosis,L4/L5,3.5,4.5\n"
)
SERIES = (
    "study_id,series_id,series_description\n10,100,Sagittal T2/STIR\n10,101,Sagittal T1\n11,110,Axial T2\n"
)


def test_read_labels_codes(tmp_path: Path) -> None:
    path = write_labels(
        tmp_path / "train.csv",
        {
            20: _row(spinal_canal_stenosis_l4_l5="Severe", left_subarticular_stenosis_l1_l2=""),
            10: _row("Moderate"),
        },
    )
    labels = read_labels(path)
    assert labels.index.name == "study_id" and labels.index.tolist() == [10, 20]
    assert list(labels.columns) == list(LABEL_COLUMNS)
    assert (labels.dtypes == np.int8).all()
    assert (labels.loc[10] == 1).all()
    assert labels.loc[20, "spinal_canal_stenosis_l4_l5"] == 2
    assert labels.loc[20, "left_subarticular_stenosis_l1_l2"] == -1
    assert labels.loc[20, "spinal_canal_stenosis_l1_l2"] == 0


def test_labels_roundtrip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    codes = pd.DataFrame(
        rng.integers(-1, 3, (5, len(LABEL_COLUMNS))).astype(np.int8),
        index=pd.Index([5, 3, 9, 1, 2], name="study_id"),
        columns=list(LABEL_COLUMNS),
    )
    frame = labels_to_frame(codes)
    assert frame.columns[0] == "study_id" and frame["study_id"].tolist() == [5, 3, 9, 1, 2]
    assert set(frame[list(LABEL_COLUMNS)].to_numpy().ravel()) <= {"", *SEVERITIES}
    frame.to_csv(tmp_path / "train.csv", index=False)
    back = read_labels(tmp_path / "train.csv")
    pd.testing.assert_frame_equal(back, codes.sort_index())


def test_empty_labels_has_columns() -> None:
    empty = empty_labels()
    assert list(empty.columns) == list(LABEL_COLUMNS) and empty.index.name == "study_id" and len(empty) == 0
    assert labels_to_frame(empty).columns.tolist() == ["study_id", *LABEL_COLUMNS]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"train\.csv: file not found"):
        read_labels(tmp_path / "train.csv")


def test_missing_column_named(tmp_path: Path) -> None:
    path = tmp_path / "train.csv"
    path.write_text("study_id," + ",".join(LABEL_COLUMNS[:-1]) + "\n1," + ",".join(["Moderate"] * 24) + "\n")
    with pytest.raises(DataError, match=rf"{path}: missing column 'right_subarticular_stenosis_l5_s1'"):
        read_labels(path)


def test_unknown_severity_named(tmp_path: Path) -> None:
    path = write_labels(
        tmp_path / "train.csv", {1: _row(), 2: _row(right_neural_foraminal_narrowing_l2_l3="Bad")}
    )
    with pytest.raises(DataError) as err:
        read_labels(path)
    message = str(err.value)
    assert str(path) in message and "'Bad'" in message
    assert "right_neural_foraminal_narrowing_l2_l3" in message and "line 3" in message
    assert "\n" not in message


def test_non_integer_study_id(tmp_path: Path) -> None:
    path = write_labels(tmp_path / "train.csv", {1: _row()})
    path.write_text(path.read_text().replace("\n1,", "\nabc,"))
    with pytest.raises(DataError, match=r"'abc' in column 'study_id', line 2"):
        read_labels(path)


def test_duplicate_study(tmp_path: Path) -> None:
    path = tmp_path / "train.csv"
    write_labels(path, {1: _row()})
    path.write_text(path.read_text() + path.read_text().splitlines()[1] + "\n")
    with pytest.raises(DataError, match="duplicate study_id 1"):
        read_labels(path)


def test_read_coordinates(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text(COORDS)
    coords = read_coordinates(path)
    assert coords["condition"].tolist() == [
        "spinal_canal_stenosis",
        "left_neural_foraminal_narrowing",
        "right_subarticular_stenosis",
    ]
    assert coords["level"].tolist() == ["l1_l2", "l5_s1", "l4_l5"]
    assert coords["instance_number"].dtype == np.int64 and coords["instance_number"].tolist() == [3, 7, 2]
    assert coords["x"].dtype == np.float64 and coords["y"].tolist() == [40.25, 2.0, 4.5]


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "Spinal Canal Stenosis",
            "Spinal Stenosis",
            "unknown condition 'Spinal Stenosis' in column 'condition', line 2",
        ),
        ("L5/S1", "L6/S1", "unknown level 'L6/S1' in column 'level', line 3"),
        ("12.5,", "twelve,", "non-numeric value 'twelve' in column 'x', line 2"),
        (",4.5\n", ",\n", "non-numeric value '' in column 'y', line 4"),
        (",3,Spinal", ",3.5,Spinal", "non-integer value '3.5' in column 'instance_number', line 2"),
    ],
)
def test_coordinate_errors(tmp_path: Path, old: str, new: str, expected: str) -> None:
    path = tmp_path / "coords.csv"
    path.write_text(COORDS.replace(old, new))
    with pytest.raises(DataError) as err:
        read_coordinates(path)
    assert str(err.value) == f"{path}: {expected}"


def test_coordinates_missing_column(tmp_path: Path) -> None:
    path = tmp_path / "coords.csv"
    path.write_text(COORDS.replace(",level,", ",lvl,"))
    with pytest.raises(DataError, match=r"coords\.csv: missing column 'level'"):
        read_coordinates(path)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    path.write_text("")
    with pytest.raises(DataError, match=r"s\.csv: empty file"):
        read_series_descriptions(path)


def test_series_descriptions(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "s.csv"
    path.write_text(SERIES + "11,111,Coronal T1\n")
    with caplog.at_level(logging.WARNING):
        series = read_series_descriptions(path)
    assert series["series_id"].tolist() == [100, 101, 110, 111]
    assert series["series_description"].tolist()[:3] == ["Sagittal T2/STIR", "Sagittal T1", "Axial T2"]
    assert any("'Coronal T1'" in r.getMessage() for r in caplog.records)


def test_validate_coordinates_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "c.csv").write_text(COORDS + "12,999,1,Spinal Canal Stenosis,L1/L2,1,1\n")
    (tmp_path / "s.csv").write_text(SERIES)
    coords = read_coordinates(tmp_path / "c.csv")
    series = read_series_descriptions(tmp_path / "s.csv")
    with caplog.at_level(logging.WARNING):
        problems = validate_coordinates(coords, series, {100: {1, 2, 3}, 101: {1, 2}, 110: {2}})
    assert problems == 2
    messages = [r.getMessage() for r in caplog.records]
    assert any("study 10 series 101 instance 7" in m and "instance not found" in m for m in messages)
    assert any(
        "study 12 series 999 instance 1" in m and "not in the series descriptions" in m for m in messages
    )
    assert all("\n" not in m for m in messages)


def test_validate_coordinates_caps_warnings(caplog: pytest.LogCaptureFixture) -> None:
    n = MAX_COORDINATE_WARNINGS + 5
    coords = pd.DataFrame({"study_id": [1] * n, "series_id": [2] * n, "instance_number": range(n)})
    series = pd.DataFrame({"study_id": [1], "series_id": [2], "series_description": ["Axial T2"]})
    with caplog.at_level(logging.WARNING):
        assert validate_coordinates(coords, series, {}) == n
    assert len(caplog.records) == MAX_COORDINATE_WARNINGS + 1
