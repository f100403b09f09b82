"""RSNAData on a tiny RSNA layout, and ``prepare`` over it."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from lumbar_bench.constants import LABEL_COLUMNS
from lumbar_bench.core.errors import DataError
from lumbar_bench.data.ingest import IngestSummary, prepare
from lumbar_bench.data.rsna import RSNAData
from lumbar_bench.data.spider import read_spider
from tests.data.test_dicom import write_series

# study -> [(series, description, slices)]
LAYOUT = {
    1: [(11, "Sagittal T1", 3), (12, "Sagittal T2/STIR", 3), (13, "Axial T2", 4)],
    2: [(21, "Sagittal T1", 3), (22, "Axial T2", 2), (23, "Axial T2", 2)],
}


def build_layout(root: Path, part: str = "train") -> Path:
    """Series folders, descriptions, labels and coordinates for LAYOUT (plus study 3 without images)."""
    rows = ["study_id,series_id,series_description"]
    for study, series in LAYOUT.items():
        for k, (series_id, desc, n) in enumerate(series):
            write_series(
                root / f"{part}_images" / str(study) / str(series_id), n=n, size=(8, 8), seed=study + k
            )
            rows.append(f"{study},{series_id},{desc}")
    (root / f"{part}_series_descriptions.csv").write_text("\n".join(rows) + "\n")
    if part == "train":
        header = ",".join(("study_id", *LABEL_COLUMNS))
        body = [",".join((str(s), *["Normal/Mild"] * 25)) for s in (1, 2, 3)]
        (root / "train.csv").write_text("\n".join([header, *body]) + "\n")
        (root / "train_label_coordinates.csv").write_text(
            "study_id,series_id,instance_number,condition,level,x,y\n"
            "1,12,2,Spinal Canal Stenosis,L4/L5,3,4\n"
            "2,21,9,Left Neural Foraminal Narrowing,L5/S1,3,4\n"
        )
    return root


@pytest.fixture
def layout(tmp_path: Path) -> Path:
    return build_layout(tmp_path / "rsna")


def test_load(layout: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        data = RSNAData.load(layout, cache_dir=tmp_path / "cache")
    assert data.study_ids == [1, 2, 3]
    assert data.series_of(1) == [11, 12, 13]
    assert data.series_of(2, "Axial T2") == [22, 23]
    assert data.series_of(3) == []
    assert data.labels.shape == (3, 25)
    assert data.coordinates["condition"].tolist() == [
        "spinal_canal_stenosis",
        "left_neural_foraminal_narrowing",
    ]
    messages = [r.getMessage() for r in caplog.records]
    assert any("study 3" in m and "no image folder" in m for m in messages)
    assert any("study 2 series 21 instance 9" in m for m in messages)
    vol = data.volume(1, 13)
    assert vol.n_slices == 4 and vol.pixels.shape == (4, 8, 8)


def test_test_part_has_empty_labels(tmp_path: Path) -> None:
    root = build_layout(tmp_path / "rsna", part="test")
    data = RSNAData.load(root, part="test", cache_dir=tmp_path / "cache")
    assert data.labels.empty and list(data.labels.columns) == list(LABEL_COLUMNS)
    assert data.coordinates.empty and "instance_number" in data.coordinates.columns
    assert data.study_ids == [1, 2]
    assert data.volume(2, 22).n_slices == 2


def test_load_errors(tmp_path: Path, layout: Path) -> None:
    with pytest.raises(DataError, match="data directory not found"):
        RSNAData.load(tmp_path / "missing")
    with pytest.raises(DataError, match="unknown part 'val'"):
        RSNAData.load(layout, part="val")
    (layout / "train_label_coordinates.csv").unlink()
    with pytest.raises(DataError, match=r"train_label_coordinates\.csv: file not found"):
        RSNAData.load(layout)


def test_volume_of_missing_series(layout: Path, tmp_path: Path) -> None:
    data = RSNAData.load(layout, cache_dir=tmp_path / "cache")
    with pytest.raises(DataError, match="series folder not found"):
        data.volume(3, 99)


def test_data_digest(layout: Path, tmp_path: Path) -> None:
    data = RSNAData.load(layout, cache_dir=tmp_path / "cache")
    digest = data.data_digest()
    assert len(digest) == 64 and digest == RSNAData.load(layout, cache_dir=tmp_path / "c2").data_digest()
    with (layout / "train.csv").open("a") as fh:
        fh.write(",".join(("4", *["Moderate"] * 25)) + "\n")
    assert data.data_digest() != digest


def test_default_cache_dir(layout: Path) -> None:
    data = RSNAData.load(layout)
    assert data.cache_dir.name == "series" and "lumbar-bench" in str(data.cache_dir)


def test_prepare_reports_bad_file_and_keeps_study(layout: Path, tmp_path: Path) -> None:
    bad = layout / "train_images" / "2" / "22" / "1.dcm"
    bad.write_bytes(bad.read_bytes()[:200])
    for f in (layout / "train_images" / "2" / "23").glob("*.dcm"):
        f.write_bytes(b"broken")
    data = RSNAData.load(layout, cache_dir=tmp_path / "cache")
    summary = prepare(data, progress=False)
    assert isinstance(summary, IngestSummary)
    assert (summary.studies, summary.series, summary.cache_hits) == (3, 6, 0)
    assert summary.slices == 3 + 3 + 4 + 3 + 1
    assert summary.skipped_files == ((str(bad), summary.skipped_files[0][1]),)
    assert "unreadable" in summary.skipped_files[0][1] or "pixel data" in summary.skipped_files[0][1]
    assert len(summary.failed_series) == 1 and summary.failed_series[0][0].endswith("23")
    assert 2 in data.study_ids and data.volume(2, 22).n_slices == 1
    text = summary.describe()
    assert str(bad) in text and "5 cache hits" not in text

    again = prepare(data, progress=False)
    assert again.cache_hits == 5 and again.slices == summary.slices
    assert again.skipped_files == summary.skipped_files


def test_prepare_with_progress_bar(layout: Path, tmp_path: Path) -> None:
    summary = prepare(RSNAData.load(layout, cache_dir=tmp_path / "cache"), progress=True)
    assert summary.series == 6 and summary.slices_per_second > 0
    assert np.isfinite(summary.seconds)


def test_prepare_in_worker_processes(layout: Path, tmp_path: Path) -> None:
    bad = layout / "train_images" / "1" / "13" / "2.dcm"
    bad.write_bytes(b"junk")
    for f in (layout / "train_images" / "2" / "23").glob("*.dcm"):
        f.write_bytes(b"broken")
    data = RSNAData.load(layout, cache_dir=tmp_path / "cache")
    parallel = prepare(data, progress=False, workers=2)
    assert parallel.series == 6 and parallel.slices == 3 + 3 + 3 + 3 + 2 and parallel.cache_hits == 0
    assert [p for p, _ in parallel.skipped_files] == [str(bad)]
    assert [p for p, _ in parallel.failed_series] == [str(layout / "train_images" / "2" / "23")]
    serial = prepare(RSNAData.load(layout, cache_dir=tmp_path / "serial"), progress=False, workers=1)
    assert (serial.slices, serial.skipped_files, serial.failed_series) == (
        parallel.slices,
        parallel.skipped_files,
        parallel.failed_series,
    )
    assert prepare(data, progress=False).cache_hits == 5


def test_phantom_layout_loads_and_prepares(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    pytest.importorskip("lumbar_bench.data.phantom.synth")
    root: Path = request.getfixturevalue("tiny_phantom")
    data = RSNAData.load(root, cache_dir=tmp_path / "cache")
    assert len(data.study_ids) > 0 and list(data.labels.columns) == list(LABEL_COLUMNS)
    summary = prepare(data, progress=False)
    assert summary.failed_series == () and summary.slices > 0
    row = data.coordinates.iloc[0]
    vol = data.volume(int(row["study_id"]), int(row["series_id"]))
    assert int(row["instance_number"]) in set(vol.instance_numbers.tolist())
    assert np.all(np.diff(vol.positions @ vol.normal) > 0)
    test = RSNAData.load(root, part="test", cache_dir=tmp_path / "cache")
    assert test.labels.empty and len(test.study_ids) > 0


def test_phantom_spider_reads(request: pytest.FixtureRequest) -> None:
    pytest.importorskip("lumbar_bench.data.phantom.synth")
    root: Path = request.getfixturevalue("tiny_phantom")
    case = read_spider(root / "spider")[0]
    assert case.image.shape == case.mask.shape and case.spacing[0] == max(case.spacing)
    values = set(np.unique(case.mask).tolist())
    assert values <= {0, 100} | set(range(1, 26)) | set(range(101, 126)) | set(range(201, 226))
