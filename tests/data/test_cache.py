"""Content-keyed series cache: hits, keys, atomic writes, corrupt entries."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest

from lumbar_bench.data import cache as cache_mod
from lumbar_bench.data.cache import SeriesCache, content_key
from lumbar_bench.data.dicom import read_files, read_series
from tests.data.test_dicom import write_series, write_tilted_blocks


def _no_decode(*args: object, **kwargs: object) -> None:
    raise AssertionError("decoded although the cache should have hit")


def _entries(cache_dir: Path) -> list[Path]:
    """Entry folders (the index aside)."""
    return sorted(p.parent for p in cache_dir.rglob("meta.json"))


def _files_under(cache_dir: Path) -> list[Path]:
    return sorted(p for p in cache_dir.rglob("*") if p.is_file() and "index" not in p.parts)


def _age(folder: Path, seconds: float = 3600.0) -> None:
    """Date every file of ``folder`` back, as for a data set that has been on disk a while."""
    when = time.time() - seconds
    for path in folder.glob("*.dcm"):
        os.utime(path, (when, when))


def test_second_get_is_a_hit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_series(tmp_path / "s", n=4)
    cache = SeriesCache(tmp_path / "cache")
    first, hit1 = cache.lookup(tmp_path / "s")
    monkeypatch.setattr(cache_mod.dicom, "decode_series", _no_decode)
    second, hit2 = cache.lookup(tmp_path / "s")
    assert (hit1, hit2) == (False, True)
    np.testing.assert_array_equal(first.pixels, second.pixels)
    assert second.pixels.dtype == np.float32
    np.testing.assert_array_equal(first.instance_numbers, second.instance_numbers)
    np.testing.assert_array_equal(first.positions, second.positions)
    np.testing.assert_array_equal(first.orientations, second.orientations)
    assert second.orientations.shape == (4, 6)
    assert first.pixel_spacing == second.pixel_spacing
    assert first.slice_spacing == second.slice_spacing
    assert first.skipped == second.skipped


def test_cached_volume_equals_direct_read(tmp_path: Path) -> None:
    write_series(tmp_path / "s", n=3)
    (tmp_path / "s" / "bad.dcm").write_bytes(b"junk")
    cache = SeriesCache(tmp_path / "cache")
    cache.get(tmp_path / "s")
    cached, direct = cache.get(tmp_path / "s"), read_series(tmp_path / "s")
    np.testing.assert_array_equal(cached.pixels, direct.pixels)
    assert cached.skipped == direct.skipped and cached.skipped[0][0] == "bad.dcm"


def test_key_follows_content_not_location(tmp_path: Path) -> None:
    write_series(tmp_path / "a", n=3)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    key_a = content_key(read_files(tmp_path / "a"))
    assert key_a == content_key(read_files(tmp_path / "b"))
    ds = pydicom.dcmread(tmp_path / "b" / "2.dcm")
    arr = ds.pixel_array.copy()
    arr[0, 0] += 1
    ds.PixelData = arr.tobytes()
    ds.save_as(tmp_path / "b" / "2.dcm", enforce_file_format=True)
    assert content_key(read_files(tmp_path / "b")) != key_a
    (tmp_path / "a" / "3.dcm").rename(tmp_path / "a" / "30.dcm")
    assert content_key(read_files(tmp_path / "a")) != key_a


def test_modified_file_misses(tmp_path: Path) -> None:
    write_series(tmp_path / "s", n=3)
    cache = SeriesCache(tmp_path / "cache")
    cache.get(tmp_path / "s")
    (tmp_path / "s" / "3.dcm").unlink()
    vol, hit = cache.lookup(tmp_path / "s")
    assert not hit and vol.n_slices == 2
    assert len(_entries(tmp_path / "cache")) == 2


def test_warm_lookup_reads_no_dicom_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_series(tmp_path / "s", n=3)
    _age(tmp_path / "s")
    cache = SeriesCache(tmp_path / "cache")
    first = cache.get(tmp_path / "s")
    monkeypatch.setattr(cache_mod.dicom, "read_files", _no_decode)
    vol, hit = cache.lookup(tmp_path / "s")
    assert hit and isinstance(vol.stored, np.memmap)
    np.testing.assert_array_equal(vol.pixels, first.pixels)


def test_changed_file_with_its_old_size_and_mtime_misses(tmp_path: Path) -> None:
    write_series(tmp_path / "s", n=3)
    _age(tmp_path / "s")
    cache = SeriesCache(tmp_path / "cache")
    cache.get(tmp_path / "s")
    path = tmp_path / "s" / "2.dcm"
    st = path.stat()
    ds = pydicom.dcmread(path)
    arr = ds.pixel_array.copy()
    arr[0, 0] += 1
    ds.PixelData = arr.tobytes()
    ds.save_as(path, enforce_file_format=True)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size, same mtime: only ctime tells
    assert path.stat().st_size == st.st_size
    vol, hit = cache.lookup(tmp_path / "s")
    assert not hit and len(_entries(tmp_path / "cache")) == 2


def test_recently_modified_files_are_hashed_every_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_series(tmp_path / "s", n=2)  # written just now: its mtimes cannot be trusted yet
    cache = SeriesCache(tmp_path / "cache")
    cache.get(tmp_path / "s")
    assert not (tmp_path / "cache" / "index").exists()
    calls = []
    monkeypatch.setattr(cache_mod.dicom, "read_files", lambda d: calls.append(d) or read_files(d))
    assert cache.lookup(tmp_path / "s")[1] and calls == [tmp_path / "s"]


def test_reading_a_few_slices_loads_only_those(tmp_path: Path) -> None:
    write_series(tmp_path / "s", n=5)
    cache = SeriesCache(tmp_path / "cache")
    direct = cache.get(tmp_path / "s")
    vol = cache.get(tmp_path / "s")
    assert isinstance(vol.stored, np.memmap) and not vol.stored.flags.writeable
    np.testing.assert_array_equal(vol.slice_pixels([4, 1]), direct.pixels[[4, 1]])
    assert "pixels" not in vol.__dict__  # the float volume was never built


@pytest.mark.parametrize("error", [RuntimeError, OSError])
def test_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: type[Exception]) -> None:
    write_series(tmp_path / "s", n=3)
    cache = SeriesCache(tmp_path / "cache")

    def half_write(path: Path, array: object) -> None:
        Path(path).write_bytes(b"\x93NUMPY partial")
        raise error("disk went away")

    monkeypatch.setattr(np, "save", half_write)
    if error is OSError:  # an I/O failure only costs the cache entry
        vol = cache.get(tmp_path / "s")
        assert vol.n_slices == 3
    else:
        with pytest.raises(RuntimeError, match="disk went away"):
            cache.get(tmp_path / "s")
    assert _files_under(tmp_path / "cache") == []


def test_writing_behind_leaves_every_entry_on_exit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for k in range(4):
        write_series(tmp_path / f"s{k}", n=3 + k)
    cache = SeriesCache(tmp_path / "cache")
    with cache.writing_behind(pending=1):
        volumes = [cache.lookup(tmp_path / f"s{k}") for k in range(4)]
    assert [hit for _, hit in volumes] == [False] * 4
    assert len(_entries(tmp_path / "cache")) == 4
    monkeypatch.setattr(cache_mod.dicom, "decode_series", _no_decode)
    for k, (volume, _) in enumerate(volumes):
        again, hit = cache.lookup(tmp_path / f"s{k}")
        assert hit and again.n_slices == 3 + k
        np.testing.assert_array_equal(again.pixels, volume.pixels)


def test_writing_behind_failure_only_warns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    write_series(tmp_path / "s", n=3)
    cache = SeriesCache(tmp_path / "cache")

    def broken(path: Path, array: object) -> None:
        raise RuntimeError("disk went away")

    monkeypatch.setattr(np, "save", broken)
    with caplog.at_level(logging.WARNING), cache.writing_behind():
        volume, hit = cache.lookup(tmp_path / "s")
    assert volume.n_slices == 3 and not hit
    assert "cache entry not written (RuntimeError: disk went away)" in caplog.text
    assert _files_under(tmp_path / "cache") == []


def test_corrupt_entry_rebuilt(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_series(tmp_path / "s", n=3)
    cache = SeriesCache(tmp_path / "cache")
    good = cache.get(tmp_path / "s")
    (entry,) = _entries(tmp_path / "cache")
    (entry / "pixels.npy").write_bytes((entry / "pixels.npy").read_bytes()[:100])
    with caplog.at_level(logging.WARNING):
        vol, hit = cache.lookup(tmp_path / "s")
    assert not hit
    assert any(
        "corrupt cache entry" in r.getMessage() and str(entry) in r.getMessage() for r in caplog.records
    )
    np.testing.assert_array_equal(vol.pixels, good.pixels)
    assert cache.lookup(tmp_path / "s")[1]


def test_tilted_blocks_round_trip(tmp_path: Path) -> None:
    write_tilted_blocks(tmp_path / "ax", (-15.0, 0.0, 15.0))
    cache = SeriesCache(tmp_path / "cache")
    first = cache.get(tmp_path / "ax")
    second, hit = cache.lookup(tmp_path / "ax")
    assert hit
    np.testing.assert_array_equal(first.orientations, second.orientations)
    assert len({tuple(o) for o in second.orientations}) == 3  # one orientation per block, kept


def test_entry_of_an_older_reader_is_rebuilt_not_misread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_tilted_blocks(tmp_path / "ax", (-15.0, 15.0))
    cache = SeriesCache(tmp_path / "cache")
    vol = cache.get(tmp_path / "ax")
    (entry,) = _entries(tmp_path / "cache")
    meta = json.loads((entry / "meta.json").read_text())
    meta["orientation"] = meta.pop("orientations")[0]  # the old layout: one orientation per series
    meta["reader_version"] = 1
    (entry / "meta.json").write_text(json.dumps(meta))
    again, hit = cache.lookup(tmp_path / "ax")
    assert not hit
    np.testing.assert_array_equal(again.orientations, vol.orientations)
    # and an old reader's key is not this reader's: the entry would not even be looked up
    monkeypatch.setattr(cache_mod.dicom, "READER_VERSION", 1)
    assert content_key(read_files(tmp_path / "ax")) != entry.name
