"""Ingest throughput: cold (decode + cache write), warm (hash + cache read), and the pydicom floor.

Run with ``pytest benchmarks/test_bench_ingest.py``; each result carries
``extra_info["slices_per_s"]``. The data is a few synthetic 256x256 sagittal series.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from lumbar_bench.data.ingest import prepare
from lumbar_bench.data.rsna import RSNAData

SERIES = 3
SLICES = 20
SIZE = 256


def _write_slice(path: Path, pixels: np.ndarray, instance: int, x: float) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = MRImageStorage, meta.MediaStorageSOPInstanceUID, "MR"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit, ds.PixelRepresentation = 15, 0
    ds.InstanceNumber = instance
    ds.ImagePositionPatient = [x, -100.0, 100.0]
    ds.ImageOrientationPatient = [0.0, 1.0, 0.0, 0.0, 0.0, -1.0]
    ds.PixelSpacing = [0.6, 0.6]
    ds.RescaleSlope, ds.RescaleIntercept = 1.0, 0.0
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An RSNA ``test`` part with SERIES series of SLICES slices."""
    root = tmp_path_factory.mktemp("bench_rsna")
    rng = np.random.default_rng(0)
    rows = ["study_id,series_id,series_description"]
    for s in range(SERIES):
        folder = root / "test_images" / str(100 + s) / str(1000 + s)
        folder.mkdir(parents=True)
        for i in range(SLICES):
            _write_slice(folder / f"{i + 1}.dcm", rng.integers(0, 4000, (SIZE, SIZE)), SLICES - i, 4.0 * i)
        rows.append(f"{100 + s},{1000 + s},Sagittal T2/STIR")
    (root / "test_series_descriptions.csv").write_text("\n".join(rows) + "\n")
    return root


def _record(benchmark: pytest.FixtureRequest, slices: int) -> None:
    mean = benchmark.stats.stats.mean
    benchmark.extra_info["slices"] = slices
    benchmark.extra_info["slices_per_s"] = slices / mean if mean > 0 else float("nan")


def test_ingest_cold(benchmark, layout: Path, tmp_path: Path) -> None:  # noqa: ANN001
    counter = itertools.count()

    def setup() -> tuple[tuple[RSNAData], dict]:
        data = RSNAData.load(layout, part="test", cache_dir=tmp_path / f"cache{next(counter)}")
        return (data,), {"progress": False}

    summary = benchmark.pedantic(prepare, setup=setup, rounds=3, iterations=1)
    assert summary.cache_hits == 0 and summary.slices == SERIES * SLICES
    _record(benchmark, summary.slices)


def test_ingest_warm(benchmark, layout: Path, tmp_path: Path) -> None:  # noqa: ANN001
    data = RSNAData.load(layout, part="test", cache_dir=tmp_path / "cache")
    prepare(data, progress=False)
    summary = benchmark.pedantic(prepare, args=(data,), kwargs={"progress": False}, rounds=5, iterations=1)
    assert summary.cache_hits == SERIES
    _record(benchmark, summary.slices)


def test_pydicom_floor(benchmark, layout: Path) -> None:  # noqa: ANN001
    files = sorted((layout / "test_images").rglob("*.dcm"))

    def decode_all() -> int:
        return sum(pydicom.dcmread(f).pixel_array.shape[0] > 0 for f in files)

    assert benchmark.pedantic(decode_all, rounds=5, iterations=1) == len(files)
    _record(benchmark, len(files))
