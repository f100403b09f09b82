"""Content-keyed, atomically written cache of decoded series.

The key is a blake2b digest of the reader version, the sorted file names and every file's
bytes, so a changed, added or removed file (or a new reader) misses, while a copied or
moved series still hits. Each file is read once: the same bytes feed the digest and, on a
miss, the decoder. Entries are ``.npz`` files (pixels as 16-bit steps, which is lossless
for :mod:`lumbar_bench.data.dicom`'s normalised output) written to a temporary file in the
same folder and moved into place with ``os.replace``; a corrupt entry is discarded and
rebuilt. Each entry stores every slice's own position and orientation (``positions``,
``orientations``); an entry from an older reader (one ``orientation`` per series) has another
key, and one read anyway lacks ``orientations`` and is discarded as corrupt, never misread.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lumbar_bench.data import dicom
from lumbar_bench.data.dicom import SeriesVolume

log = logging.getLogger(__name__)

_FIELDS = ("pixels", "instance_numbers", "positions", "orientations", "pixel_spacing", "slice_spacing")
_CORRUPT = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile)


def content_key(files: Sequence[tuple[str, bytes]]) -> str:
    """Hex blake2b digest of the reader version, sorted file names and file bytes."""
    h = hashlib.blake2b(digest_size=20)
    h.update(f"lumbar-bench series reader v{dicom.READER_VERSION}\n".encode())
    for name, raw in sorted(files, key=lambda item: item[0]):
        h.update(name.encode("utf-8") + b"\0" + len(raw).to_bytes(8, "little"))
        h.update(raw)
    return h.hexdigest()


def _to_arrays(volume: SeriesVolume) -> dict[str, np.ndarray]:
    names = [n for n, _ in volume.skipped]
    reasons = [r for _, r in volume.skipped]
    return {
        "pixels": dicom.quantise(volume.pixels),
        "instance_numbers": np.asarray(volume.instance_numbers, dtype=np.int64),
        "positions": np.asarray(volume.positions, dtype=np.float64),
        "orientations": np.asarray(volume.orientations, dtype=np.float64),
        "pixel_spacing": np.asarray(volume.pixel_spacing, dtype=np.float64),
        "slice_spacing": np.asarray(volume.slice_spacing, dtype=np.float64),
        "skipped_names": np.asarray(names, dtype=np.str_).reshape(-1),
        "skipped_reasons": np.asarray(reasons, dtype=np.str_).reshape(-1),
        "reader_version": np.asarray(dicom.READER_VERSION, dtype=np.int64),
    }


def _from_arrays(z: np.lib.npyio.NpzFile) -> SeriesVolume:
    missing = [k for k in (*_FIELDS, "skipped_names", "skipped_reasons") if k not in z.files]
    if missing:
        raise KeyError(f"missing arrays {missing}")
    version = int(z["reader_version"]) if "reader_version" in z.files else 0
    if version != dicom.READER_VERSION:
        raise ValueError(f"written by series reader v{version}, this is v{dicom.READER_VERSION}")
    pixels = z["pixels"]
    if pixels.dtype != np.uint16 or pixels.ndim != 3:
        raise ValueError(f"pixels have dtype {pixels.dtype} and {pixels.ndim} dims")
    n = pixels.shape[0]
    if z["positions"].shape != (n, 3) or z["orientations"].shape != (n, 6):
        raise ValueError(f"geometry {z['positions'].shape}, {z['orientations'].shape} for {n} slices")
    spacing = z["pixel_spacing"]
    return SeriesVolume(
        pixels=dicom.dequantise(pixels),
        instance_numbers=z["instance_numbers"],
        positions=z["positions"],
        orientations=z["orientations"],
        pixel_spacing=(float(spacing[0]), float(spacing[1])),
        slice_spacing=float(z["slice_spacing"]),
        skipped=tuple(zip(z["skipped_names"].tolist(), z["skipped_reasons"].tolist(), strict=True)),
    )


class SeriesCache:
    """Decoded series under ``cache_dir``, keyed by content (see module docstring)."""

    def __init__(self, cache_dir: Path, compress: bool = False) -> None:
        self.cache_dir = Path(cache_dir)
        self.compress = compress

    def path_for(self, key: str) -> Path:
        """Where the entry of ``key`` lives."""
        return self.cache_dir / key[:2] / f"{key}.npz"

    def get(self, series_dir: Path) -> SeriesVolume:
        """Return the volume of ``series_dir``, decoded once and then read from the cache."""
        return self.lookup(series_dir)[0]

    def lookup(self, series_dir: Path) -> tuple[SeriesVolume, bool]:
        """``(volume, hit)``: like :meth:`get`, also telling whether the cache had it."""
        series_dir = Path(series_dir)
        files = dicom.read_files(series_dir)
        path = self.path_for(content_key(files))
        volume = self._load(path)
        if volume is not None:
            return volume, True
        volume = dicom.decode_series(files, series_dir)
        self._store(path, volume)
        return volume, False

    def _load(self, path: Path) -> SeriesVolume | None:
        """Load the entry at ``path``; None when absent or corrupt (a corrupt one is removed)."""
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                return _from_arrays(z)
        except _CORRUPT as exc:
            log.warning(
                "%s: corrupt cache entry discarded, rebuilding (%s: %s)", path, type(exc).__name__, exc
            )
            path.unlink(missing_ok=True)
            return None

    def _store(self, path: Path, volume: SeriesVolume) -> None:
        """Write atomically; a failed write leaves no file behind (an OSError only warns)."""
        save = np.savez_compressed if self.compress else np.savez
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
        except OSError as exc:
            log.warning("%s: cannot write cache entry (%s)", path, exc)
            return
        try:
            with os.fdopen(fd, "wb") as fh:
                save(fh, **_to_arrays(volume))
            os.replace(tmp, path)
        except OSError as exc:
            Path(tmp).unlink(missing_ok=True)
            log.warning("%s: cannot write cache entry (%s)", path, exc)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
