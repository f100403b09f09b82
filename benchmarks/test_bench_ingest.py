"""Ingest against its floors, each pair measured side by side in one run.

Data: uncompressed 16-bit sagittal series, their files dated an hour back, like a data set that
has been on disk a while (the cache's index trusts no file modified within seconds of hashing).

- ``test_ingest_cold_against_bare_decode``: rounds alternate the bare ``dcmread(path).pixel_array``
  loop and a cold ``prepare --workers 1`` (empty cache) over the same files. Per-slice time is
  each side's fastest round; fails when cold costs more than ``MAX_COLD_RATIO`` times the bare loop.
- ``test_ingest_warm_against_cold``: ``prepare`` on a full cache; fails unless at least
  ``MIN_WARM_SPEEDUP`` times faster than cold.
- The full-size run, scaled down to what CI could afford by default (``--ingest-studies 40
  --ingest-size 384``; pass 1975 and 512 for the real size): ``test_synth_two_workers`` writes the
  phantom with 2 workers (studies/s, DICOM on disk, peak RSS) and times ``SYNTH_STUDIES`` with 1
  and with 2 workers (same floor as prepare's); ``test_prepare_two_workers``
  prepares it cold with 1 and with 2 workers and fails unless 2 are ``MIN_WORKER_SPEEDUP`` times
  faster (on a machine with 2 cores or more) or the peak RSS of the process tree reaches
  ``MAX_RSS_GB`` (studies/s, slices/s, cache on disk).

Each result's ``extra_info`` holds its figures; ``benchmarks/report.py`` lists them.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from benchmarks.memory import PeakRSS
from lumbar_bench.data.ingest import IngestSummary, prepare
from lumbar_bench.data.rsna import RSNAData

SERIES = 6
SLICES = 20
SIZE = 256
ROUNDS = 7
MAX_COLD_RATIO = 1.10
MIN_WARM_SPEEDUP = 20.0
MIN_WORKER_SPEEDUP = 1.6
MAX_RSS_GB = 2.0
SYNTH_STUDIES = 8


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


def _layout(root: Path, series: int) -> Path:
    """An RSNA ``test`` part of ``series`` series of SLICES slices, files dated an hour back."""
    rng = np.random.default_rng(0)
    rows = ["study_id,series_id,series_description"]
    old = time.time() - 3600
    for s in range(series):
        folder = root / "test_images" / str(100 + s) / str(1000 + s)
        folder.mkdir(parents=True)
        for i in range(SLICES):
            path = folder / f"{i + 1}.dcm"
            _write_slice(path, rng.integers(0, 4000, (SIZE, SIZE)), SLICES - i, 4.0 * i)
            os.utime(path, (old, old))
        rows.append(f"{100 + s},{1000 + s},Sagittal T2/STIR")
    (root / "test_series_descriptions.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _layout(tmp_path_factory.mktemp("bench_rsna"), SERIES)


def _cold(root: Path, cache: Path, workers: int = 1) -> tuple[IngestSummary, float]:
    """``prepare`` into an empty ``cache``; its summary and wall seconds."""
    shutil.rmtree(cache, ignore_errors=True)
    data = RSNAData.load(root, part="test", cache_dir=cache)
    start = time.perf_counter()
    summary = prepare(data, progress=False, workers=workers)
    return summary, time.perf_counter() - start


def _bare(files: list[Path]) -> float:
    start = time.perf_counter()
    assert all(pydicom.dcmread(f).pixel_array.size > 0 for f in files)
    return time.perf_counter() - start


def test_ingest_cold_against_bare_decode(benchmark, layout: Path, tmp_path: Path) -> None:  # noqa: ANN001
    files = sorted((layout / "test_images").rglob("*.dcm"))
    bare, cold = [], []

    def one_round() -> None:
        bare.append(_bare(files))
        summary, seconds = _cold(layout, tmp_path / "cache")
        assert summary.cache_hits == 0 and summary.slices == len(files)
        cold.append(seconds)

    _bare(files)  # the files into the page cache
    benchmark.pedantic(one_round, rounds=ROUNDS, iterations=1)
    ratio = min(cold) / min(bare)
    benchmark.extra_info.update(
        slices=len(files),
        size=SIZE,
        bare_slices_per_s=len(files) / min(bare),
        slices_per_s=len(files) / min(cold),
        cold_ratio=ratio,
    )
    assert ratio <= MAX_COLD_RATIO, f"cold ingest costs {ratio:.2f}x the bare decode loop per slice"


def test_ingest_warm_against_cold(benchmark, layout: Path, tmp_path: Path) -> None:  # noqa: ANN001
    cold = min(_cold(layout, tmp_path / "cache")[1] for _ in range(3))
    data = RSNAData.load(layout, part="test", cache_dir=tmp_path / "cache")
    summary = benchmark.pedantic(prepare, args=(data,), kwargs={"progress": False}, rounds=ROUNDS)
    assert summary.cache_hits == SERIES
    warm = benchmark.stats.stats.min
    speedup = cold / warm
    benchmark.extra_info.update(
        slices=summary.slices, slices_per_s=summary.slices / warm, warm_speedup=speedup
    )
    assert speedup >= MIN_WARM_SPEEDUP, f"a warm cache is only {speedup:.1f}x faster than cold"


def _disk_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def phantom(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The phantom at ``--ingest-studies`` x ``--ingest-size``, written with 2 workers; its figures."""
    from lumbar_bench.data.phantom.synth import PhantomConfig, synthesize

    studies, size = request.config.getoption("ingest_studies"), request.config.getoption("ingest_size")
    out = tmp_path_factory.mktemp("bench_phantom") / "phantom"
    config = PhantomConfig(studies=studies, size=size, seed=0, test_studies=0, spider_cases=0, cohort_draws=1)
    with PeakRSS() as peak:
        start = time.perf_counter()
        summary = synthesize(out, config, progress=False, workers=2)
        seconds = time.perf_counter() - start
    return {
        "root": out,
        "studies": studies,
        "size": size,
        "images": summary.images,
        "synth_s": seconds,
        "synth_peak_rss_gb": peak.gb,
    }


def test_synth_two_workers(benchmark, phantom: dict, tmp_path: Path) -> None:  # noqa: ANN001
    """``SYNTH_STUDIES`` at the same size with 1 and 2 workers; the row also carries the fixture's figures."""
    from lumbar_bench.data.phantom.synth import PhantomConfig, synthesize

    config = PhantomConfig(
        studies=SYNTH_STUDIES, size=phantom["size"], seed=1, test_studies=0, spider_cases=0, cohort_draws=1
    )
    seconds: dict[int, float] = {}

    def one_round() -> None:
        for workers in (1, 2):
            start = time.perf_counter()
            synthesize(tmp_path / f"workers{workers}", config, progress=False, workers=workers)
            seconds[workers] = time.perf_counter() - start

    benchmark.pedantic(one_round, rounds=1, iterations=1)
    speedup = seconds[1] / seconds[2]
    benchmark.extra_info.update(
        studies=phantom["studies"],
        size=phantom["size"],
        images=phantom["images"],
        synth_s=phantom["synth_s"],
        studies_per_s=phantom["studies"] / phantom["synth_s"],
        peak_rss_gb=phantom["synth_peak_rss_gb"],
        dicom_gb=_disk_bytes(phantom["root"] / "train_images") / 1e9,
        one_worker_studies_per_s=SYNTH_STUDIES / seconds[1],
        worker_speedup=speedup,
    )
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one core: no speed-up to measure")
    assert speedup >= MIN_WORKER_SPEEDUP, f"synth: 2 workers are only {speedup:.2f}x faster than 1"


def test_prepare_two_workers(benchmark, phantom: dict, tmp_path: Path) -> None:  # noqa: ANN001
    root, cache = phantom["root"], tmp_path / "cache"
    seconds: dict[int, float] = {}
    peak = PeakRSS()

    def one_round() -> None:
        for workers in (1, 2):
            shutil.rmtree(cache, ignore_errors=True)
            data = RSNAData.load(root, cache_dir=cache)
            with peak:
                summary = prepare(data, progress=False, workers=workers)
            assert summary.cache_hits == 0 and summary.failed_series == ()
            assert summary.slices == phantom["images"]
            seconds[workers] = summary.seconds

    benchmark.pedantic(one_round, rounds=1, iterations=1)
    speedup = seconds[1] / seconds[2]
    benchmark.extra_info.update(
        studies=phantom["studies"],
        size=phantom["size"],
        slices=phantom["images"],
        prepare_s=seconds[2],
        studies_per_s=phantom["studies"] / seconds[2],
        slices_per_s=phantom["images"] / seconds[2],
        one_worker_slices_per_s=phantom["images"] / seconds[1],
        worker_speedup=speedup,
        peak_rss_gb=peak.gb,
        cache_gb=_disk_bytes(cache) / 1e9,
    )
    assert peak.gb < MAX_RSS_GB, f"prepare peaked at {peak.gb:.2f} GB"
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one core: no speed-up to measure")
    assert speedup >= MIN_WORKER_SPEEDUP, f"2 workers are only {speedup:.2f}x faster than 1"
