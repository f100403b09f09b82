"""One RSNA-layout directory: labels, coordinates, series descriptions and cached volumes.

Layout (Kaggle): ``{part}.csv`` (train only), ``{part}_label_coordinates.csv`` (train only),
``{part}_series_descriptions.csv`` and ``{part}_images/{study_id}/{series_id}/{instance}.dcm``.
Problems with single studies or series are logged and never stop the load.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from lumbar_bench.core.errors import DataError
from lumbar_bench.core.paths import default_cache_dir as user_cache_dir
from lumbar_bench.data import labels as labels_io
from lumbar_bench.data.cache import SeriesCache
from lumbar_bench.data.dicom import SeriesVolume

log = logging.getLogger(__name__)

PARTS: tuple[str, ...] = ("train", "test")


def default_cache_dir() -> Path:
    """Return the per-user series cache: ``<user cache dir>/lumbar-bench/series``."""
    return user_cache_dir() / "series"


def csv_paths(root: Path, part: str) -> dict[str, Path]:
    """Map each CSV file of ``part`` under ``root`` to its path (labels, coordinates: train only)."""
    paths = {"series": root / f"{part}_series_descriptions.csv"}
    if part == "train":
        paths = {"labels": root / "train.csv", "coordinates": root / "train_label_coordinates.csv", **paths}
    return paths


def _instances_on_disk(images: Path, series: pd.DataFrame) -> dict[int, set[int]]:
    """Instance numbers (from ``<instance>.dcm`` names) of every listed series folder."""
    out: dict[int, set[int]] = {}
    for study_id, series_id in series[["study_id", "series_id"]].itertuples(index=False):
        folder = images / str(study_id) / str(series_id)
        try:
            out[series_id] = {int(p.stem) for p in folder.glob("*.dcm") if p.stem.isdigit()}
        except OSError:
            out[series_id] = set()
    return out


def _check_images(images: Path, study_ids: list[int], series: pd.DataFrame) -> None:
    """Warn about studies without an image folder and listed series without a folder."""
    if not images.is_dir():
        log.warning("%s: image folder not found; no volume can be read", images)
        return
    on_disk = {p.name for p in images.iterdir() if p.is_dir()}
    listed = set(series["study_id"].tolist())
    for study_id in study_ids:
        if str(study_id) not in on_disk or study_id not in listed:
            where = "no image folder" if str(study_id) not in on_disk else "no series listed"
            log.warning("study %s: %s; it stays in the study list without images", study_id, where)
    for study_id, series_id in series[["study_id", "series_id"]].itertuples(index=False):
        if str(study_id) in on_disk and not (images / str(study_id) / str(series_id)).is_dir():
            log.warning("study %s series %s: listed but its folder is missing", study_id, series_id)


@dataclass(frozen=True, eq=False)
class RSNAData:
    """One part (``train`` or ``test``) of an RSNA-layout directory."""

    root: Path
    part: str
    labels: pd.DataFrame
    coordinates: pd.DataFrame
    series: pd.DataFrame
    cache_dir: Path

    @classmethod
    def load(cls, root: Path, part: str = "train", cache_dir: Path | None = None) -> RSNAData:
        """Read and validate the CSV files of ``part``; volumes are decoded lazily via the cache.

        ``cache_dir`` defaults to :func:`default_cache_dir`.
        """
        root = Path(root)
        if part not in PARTS:
            raise DataError(f"{root}: unknown part {part!r} (expected one of {', '.join(PARTS)})")
        if not root.is_dir():
            raise DataError(f"{root}: data directory not found")
        paths = csv_paths(root, part)
        series = labels_io.read_series_descriptions(paths["series"])
        if part == "train":
            labels = labels_io.read_labels(paths["labels"])
            coordinates = labels_io.read_coordinates(paths["coordinates"])
        else:
            labels, coordinates = labels_io.empty_labels(), labels_io.empty_coordinates()
        data = cls(
            root,
            part,
            labels,
            coordinates,
            series,
            Path(cache_dir) if cache_dir is not None else default_cache_dir(),
        )
        _check_images(data.images_dir, data.study_ids, series)
        if len(coordinates):
            labels_io.validate_coordinates(coordinates, series, _instances_on_disk(data.images_dir, series))
        return data

    @property
    def images_dir(self) -> Path:
        """``root/{part}_images``."""
        return self.root / f"{self.part}_images"

    @property
    def study_ids(self) -> list[int]:
        """Sorted study ids of the series descriptions and the labels together."""
        ids = set(self.series["study_id"].tolist()) | set(self.labels.index.tolist())
        return sorted(int(s) for s in ids)

    @property
    def cache(self) -> SeriesCache:
        """The series cache under ``cache_dir``."""
        return SeriesCache(self.cache_dir)

    def series_of(self, study_id: int, description: str | None = None) -> list[int]:
        """Series ids of ``study_id`` (sorted), optionally only those with ``description``."""
        rows = self.series[self.series["study_id"] == int(study_id)]
        if description is not None:
            rows = rows[rows["series_description"] == description]
        return sorted(int(s) for s in rows["series_id"])

    def series_dir(self, study_id: int, series_id: int) -> Path:
        """Folder of one series' DICOM files."""
        return self.images_dir / str(int(study_id)) / str(int(series_id))

    def volume(self, study_id: int, series_id: int) -> SeriesVolume:
        """Return the decoded, cached volume of one series; DataError if it cannot be read at all."""
        return self.cache.get(self.series_dir(study_id, series_id))

    def data_digest(self) -> str:
        """sha256 hex over the names and bytes of this part's CSV files (provenance)."""
        h = hashlib.sha256()
        for key, path in sorted(csv_paths(self.root, self.part).items()):
            if path.is_file():
                h.update(f"{key}:{path.name}:{path.stat().st_size}\n".encode())
                h.update(path.read_bytes())
        return h.hexdigest()
