"""Content-keyed, atomically written cache of decoded series, read through memory maps.

**Key.** A digest of the cache format, the reader version, the sorted file names and every
file's bytes, so a changed, added or removed file (or a new reader) misses, while a copied or
moved series still hits. Each file is read once: the same bytes feed the digest and, on a miss,
the decoder.

**Entries.** One folder per key: ``pixels.npy`` (``SeriesVolume.stored``: the stored values' bit
patterns, or the normalised pixels' 16-bit steps, both lossless for
:mod:`lumbar_bench.data.dicom`'s output; opened with ``mmap_mode="r"``, so a reader of a few
slices never loads the volume), ``table.npy`` (from bit patterns to steps, where there is one)
and ``meta.json`` (each slice's own position and orientation, spacings, skipped files). An
entry is written into a temporary folder beside its place and renamed into it, so it appears
whole or not at all; a corrupt entry is discarded and rebuilt, and of two concurrent writers of
one key the second simply drops its copy.

**Index.** Hashing every byte on every lookup would cost as much as a large part of decoding, so
a warm lookup does not read the DICOM files at all: ``index/`` remembers, per series folder, each
file's name, size, mtime, ctime and inode with the content key they hashed to (git's index does
the same). Any change to a file changes its stat signature, so the key is hashed again. Files
modified less than ``RACY_SECONDS`` before they were hashed are not remembered, because a second
change within the file system's timestamp granularity could keep the signature; they are
hashed again on the next lookup.

**Writing behind.** Inside :meth:`SeriesCache.writing_behind` entries are written by one
background thread while the caller decodes the next series, so the write (and the page-cache
writeback it can wait on) overlaps decoding; leaving the block waits for every write.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import numpy as np
import xxhash

from lumbar_bench.core.files import write_text_atomic
from lumbar_bench.data import dicom
from lumbar_bench.data.dicom import SeriesVolume

log = logging.getLogger(__name__)

#: Bumped whenever the entry layout changes; part of every key (2: a folder with pixels.npy).
CACHE_FORMAT = 2
#: A file modified this recently before it was hashed is not remembered in the index.
RACY_SECONDS = 2.0
_META = (
    "reader_version",
    "instance_numbers",
    "positions",
    "orientations",
    "pixel_spacing",
    "slice_spacing",
    "skipped",
    "arrays",
)
_CORRUPT = (OSError, ValueError, KeyError, TypeError, EOFError)

Signature = list[tuple[str, int, int, int, int]]


def content_key(files: Sequence[tuple[str, bytes]]) -> str:
    """Hex digest of the cache format, reader version, sorted file names and file bytes."""
    h = xxhash.xxh3_128()  # a cache key, not a signature: no adversary, and it runs at memory speed
    h.update(f"lumbar-bench series cache v{CACHE_FORMAT} reader v{dicom.READER_VERSION}\n".encode())
    for name, raw in sorted(files, key=lambda item: item[0]):
        h.update(name.encode("utf-8") + b"\0" + len(raw).to_bytes(8, "little"))
        h.update(raw)
    return h.hexdigest()


def _meta(volume: SeriesVolume) -> dict[str, object]:
    """Everything but the pixels and the table, as JSON (floats round-trip exactly, NaN included)."""
    return {
        "reader_version": dicom.READER_VERSION,
        "instance_numbers": np.asarray(volume.instance_numbers, dtype=np.int64).tolist(),
        "positions": np.asarray(volume.positions, dtype=np.float64).tolist(),
        "orientations": np.asarray(volume.orientations, dtype=np.float64).tolist(),
        "pixel_spacing": [float(v) for v in volume.pixel_spacing],
        "slice_spacing": float(volume.slice_spacing),
        "skipped": [list(item) for item in volume.skipped],
    }


def _save_array(path: Path, array: np.ndarray) -> dict[str, object]:
    """``np.save`` and return where the data sits, so a reader maps it without parsing the header."""
    np.save(path, array)
    return {
        "dtype": array.dtype.str,
        "shape": list(array.shape),
        "offset": path.stat().st_size - array.nbytes,
    }


def _open_array(path: Path, where: dict) -> np.memmap:
    """Read-only memory map of an array written by :func:`_save_array` (ValueError when truncated)."""
    return np.memmap(
        path,
        dtype=np.dtype(where["dtype"]),
        mode="r",
        offset=int(where["offset"]),
        shape=tuple(where["shape"]),
    )


def _read_entry(folder: Path) -> SeriesVolume:
    """The volume stored in ``folder``; raises one of ``_CORRUPT`` when it is not a whole entry."""
    meta = json.loads((folder / "meta.json").read_text())
    missing = [k for k in _META if k not in meta]
    if missing:
        raise KeyError(f"missing fields {missing}")
    if meta["reader_version"] != dicom.READER_VERSION:
        raise ValueError(
            f"written by series reader v{meta['reader_version']}, this is v{dicom.READER_VERSION}"
        )
    arrays = meta["arrays"]
    pixels = _open_array(folder / "pixels.npy", arrays["pixels"])
    table = _open_array(folder / "table.npy", arrays["table"]) if "table" in arrays else None
    if pixels.dtype not in (np.uint8, np.uint16) or pixels.ndim != 3:
        raise ValueError(f"pixels have dtype {pixels.dtype} and {pixels.ndim} dims")
    patterns = 2 ** (8 * pixels.itemsize)
    if (table is None and pixels.dtype != np.uint16) or (
        table is not None and (table.shape != (patterns,) or table.dtype != np.uint16)
    ):
        raise ValueError(f"{pixels.dtype} pixels with a table of {None if table is None else table.shape}")
    n = pixels.shape[0]
    positions = np.asarray(meta["positions"], dtype=np.float64).reshape(-1, 3)
    orientations = np.asarray(meta["orientations"], dtype=np.float64).reshape(-1, 6)
    if positions.shape != (n, 3) or orientations.shape != (n, 6):
        raise ValueError(f"geometry {positions.shape}, {orientations.shape} for {n} slices")
    spacing = meta["pixel_spacing"]
    return SeriesVolume(
        stored=pixels,
        table=table,
        instance_numbers=np.asarray(meta["instance_numbers"], dtype=np.int64),
        positions=positions,
        orientations=orientations,
        pixel_spacing=(float(spacing[0]), float(spacing[1])),
        slice_spacing=float(meta["slice_spacing"]),
        skipped=tuple((str(name), str(reason)) for name, reason in meta["skipped"]),
    )


def _signature(series_dir: Path) -> Signature:
    """``(name, size, mtime_ns, ctime_ns, inode)`` of each ``*.dcm`` file, sorted."""
    out = []
    with os.scandir(series_dir) as entries:
        for entry in entries:
            if entry.name.endswith(".dcm") and entry.is_file():
                st = entry.stat()
                out.append((entry.name, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino))
    return sorted(out)


class SeriesCache:
    """Decoded series under ``cache_dir``, keyed by content (see module docstring)."""

    def __init__(self, cache_dir: Path) -> None:
        self.cache_dir = Path(cache_dir)
        self._behind: _WriteBehind | None = None

    def __getstate__(self) -> dict[str, object]:
        """Pickle for worker processes without the background writer (each worker opens its own)."""
        return {**self.__dict__, "_behind": None}

    @contextmanager
    def writing_behind(self, pending: int = 2) -> Iterator[None]:
        """Write new entries in a background thread while the block goes on; wait for them on exit.

        At most ``pending`` decoded volumes wait for their write, so memory stays bounded. A write
        that fails only warns, as a synchronous one does for an OSError: the caller already has
        the volume, and the next lookup decodes the series again.
        """
        if self._behind is not None:  # nested: the outer block waits
            yield
            return
        self._behind = _WriteBehind(pending)
        try:
            yield
        finally:
            behind, self._behind = self._behind, None
            behind.close()

    def path_for(self, key: str) -> Path:
        """The folder of the entry of ``key``."""
        return self.cache_dir / key[:2] / key

    def get(self, series_dir: Path) -> SeriesVolume:
        """Return the volume of ``series_dir``, decoded once and then read from the cache."""
        return self.lookup(series_dir)[0]

    def lookup(self, series_dir: Path) -> tuple[SeriesVolume, bool]:
        """``(volume, hit)``: like :meth:`get`, also telling whether the cache had it."""
        series_dir = Path(series_dir)
        signature = self._stat(series_dir)
        key = self._indexed_key(series_dir, signature) if signature is not None else None
        if key is not None and (volume := self._load(self.path_for(key))) is not None:
            return volume, True
        started = time.time_ns()
        files = dicom.read_files(series_dir)
        key = content_key(files)
        if signature is not None:
            self._remember(series_dir, signature, key, started)
        path = self.path_for(key)
        volume = self._load(path)
        if volume is not None:
            return volume, True
        volume = dicom.decode_series(files, series_dir)
        if self._behind is not None:
            self._behind.submit(self._store, path, volume)
            return volume, False
        return self._store(path, volume), False

    def _stat(self, series_dir: Path) -> Signature | None:
        """The folder's stat signature; None when it cannot be taken (the read will say why)."""
        try:
            return _signature(series_dir)
        except OSError:
            return None

    def _index_path(self, series_dir: Path) -> Path:
        digest = xxhash.xxh3_128_hexdigest(os.path.abspath(series_dir).encode())
        return self.cache_dir / "index" / digest[:2] / f"{digest}.json"

    def _indexed_key(self, series_dir: Path, signature: Signature) -> str | None:
        """The content key remembered for exactly this signature, else None."""
        try:
            record = json.loads(self._index_path(series_dir).read_text())
            files, key = [tuple(f) for f in record["files"]], str(record["key"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return key if files == signature else None

    def _remember(self, series_dir: Path, signature: Signature, key: str, started_ns: int) -> None:
        """Record ``signature -> key`` unless a file changed too recently to trust its mtime."""
        if any(mtime > started_ns - RACY_SECONDS * 1e9 for _, _, mtime, _, _ in signature):
            return
        path = self._index_path(series_dir)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(path, json.dumps({"key": key, "files": signature}))  # per process and path
        except OSError as exc:
            log.warning("%s: cannot write cache index (%s)", path, exc)

    def _load(self, path: Path) -> SeriesVolume | None:
        """Load the entry at ``path``; None when absent or corrupt (a corrupt one is removed)."""
        try:
            return _read_entry(path)
        except FileNotFoundError as exc:
            if not path.exists():
                return None  # the usual miss, told by the first open rather than a stat
            reason = f"{type(exc).__name__}: {exc}"
        except _CORRUPT as exc:
            reason = f"{type(exc).__name__}: {exc}"
        log.warning("%s: corrupt cache entry discarded, rebuilding (%s)", path, reason)
        shutil.rmtree(path, ignore_errors=True)
        return None

    def _store(self, path: Path, volume: SeriesVolume) -> SeriesVolume:
        """Write atomically and return ``volume``.

        A failed write leaves no entry behind; an OSError only warns, anything else is raised.
        """
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
        except OSError as exc:
            log.warning("%s: cannot write cache entry (%s)", path, exc)
            return volume
        try:
            arrays = {"pixels": _save_array(tmp / "pixels.npy", np.ascontiguousarray(volume.stored))}
            if volume.table is not None:
                arrays["table"] = _save_array(tmp / "table.npy", np.asarray(volume.table, dtype=np.uint16))
            (tmp / "meta.json").write_text(json.dumps({**_meta(volume), "arrays": arrays}))
            _rename_folder(tmp, path)
        except OSError as exc:
            log.warning("%s: cannot write cache entry (%s)", path, exc)
            return volume
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return volume


class _WriteBehind:
    """One writer thread with at most ``pending`` writes queued (see :meth:`SeriesCache.writing_behind`)."""

    def __init__(self, pending: int) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cache-write")
        self._slots = threading.BoundedSemaphore(max(1, pending))

    def submit(
        self, store: Callable[[Path, SeriesVolume], SeriesVolume], path: Path, volume: SeriesVolume
    ) -> None:
        """Queue ``store(path, volume)``; blocks while ``pending`` writes already wait."""
        self._slots.acquire()
        future = self._pool.submit(store, path, volume)
        future.add_done_callback(partial(self._done, path))

    def _done(self, path: Path, future: Future) -> None:
        self._slots.release()
        if (exc := future.exception()) is not None:
            log.warning("%s: cache entry not written (%s: %s)", path, type(exc).__name__, exc)

    def close(self) -> None:
        """Wait for every queued write."""
        self._pool.shutdown(wait=True)


def _rename_folder(tmp: Path, path: Path) -> None:
    """Move ``tmp`` to ``path``; when another writer got there first, keep theirs."""
    try:
        os.rename(tmp, path)
    except OSError:
        if not path.is_dir():
            raise
