"""One DICOM series folder -> :class:`SeriesVolume`.

Each slice keeps its own ImagePositionPatient and ImageOrientationPatient: axial series are
often stacks of blocks, each tilted to its disc, so one orientation per series would put a
third of their slices on the wrong plane (see :mod:`lumbar_bench.data.geometry`). Slices are
sorted by the position of their centres along the series' mean normal (the mean of the
slices' ``cross(row_dir, col_dir)``), never by InstanceNumber or file name, because
InstanceNumber order does not reliably tell left from right in sagittal stacks. Pixel values go through
the modality LUT (RescaleSlope/Intercept) and are then normalised to [0, 1] with the
0.5/99.5 percentiles of the whole series, and kept as 16-bit steps (``SeriesVolume.quantised``).

Speed: for the usual 8/16-bit stored values with one rescale for the whole series, the normalised
value is a function of the stored value alone. So the exact percentiles come from one histogram of
the stored values, and the whole pipeline (rescale, normalise, quantise) becomes a table of 2**16
entries, computed with the same float32 operations as the general path; the volume keeps the
stored values and the table, and a reader applies it to the slices it reads. The general path
stays for everything else (colour, a Modality LUT Sequence, per-slice rescales, 32-bit or float
data). Both give identical bits; ``tests/data/test_dicom.py`` checks it, and checks the
histogram's percentiles against ``np.percentile``. Native little-endian pixel data is read
straight from its bytes, and header values shared by the slices are converted once per series
(both in :mod:`lumbar_bench.data.dicom_file`, which reads one file).

A file that cannot be used (truncated, corrupt, no pixel data, multi-frame, a shape that
differs from the majority of the series) is logged as one warning line and skipped; the
rest of the series still loads.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache, cached_property
from pathlib import Path

import numpy as np

from lumbar_bench.core.errors import DataError
from lumbar_bench.data.dicom_file import DicomSlice, modality_values, read_slice, short_error
from lumbar_bench.data.geometry import unit_normal

log = logging.getLogger(__name__)

#: Bumped whenever the decoded result of a series changes; part of every cache key
#: (2: one orientation per slice, ordered by slice centres along the mean normal).
READER_VERSION = 2
#: Normalised pixels take values k / QUANT_LEVELS, so a cache stores them losslessly as uint16.
QUANT_LEVELS = 65535
#: Percentiles of the series mapped to 0 and 1.
NORM_PERCENTILES = (0.5, 99.5)
#: A slice whose normal is further than this off the series' mean normal is a localiser; tilted
#: per-level axial blocks lie within about 20 degrees of it.
MAX_TILT_DEG = 45.0


@dataclass(frozen=True, eq=False)
class SeriesVolume:
    """One decoded series, slices sorted along the series' mean normal.

    ``stored`` ``(n, H, W)`` uint8 or uint16: with ``table`` None, the normalised pixels in steps
    of 1 / QUANT_LEVELS; else the bit patterns of the stored values, which ``table`` (uint16, one
    entry per pattern) maps to those steps. From the series cache, ``stored`` is a read-only
    memory map, so reading a few slices never loads the volume. :attr:`quantised` gives the
    steps, :attr:`pixels` the float32 volume in [0, 1] and :meth:`slice_pixels` some slices of it;
    ``instance_numbers`` ``(n,)``;
    ``positions`` ``(n, 3)`` each slice's ImagePositionPatient in mm and ``orientations``
    ``(n, 6)`` its ImageOrientationPatient (row direction, then column direction), NaN where
    a file lacks them; ``pixel_spacing`` ``(row, col)`` mm; ``slice_spacing`` mm between
    neighbouring slices (NaN when unknown); ``skipped`` ``(file name, reason)`` for each file
    left out. There is no series-level orientation: per-level axial blocks are tilted to each
    disc, so planes come from :func:`lumbar_bench.data.geometry.series_geometry`.
    """

    stored: np.ndarray
    table: np.ndarray | None
    instance_numbers: np.ndarray
    positions: np.ndarray
    orientations: np.ndarray
    pixel_spacing: tuple[float, float]
    slice_spacing: float
    skipped: tuple[tuple[str, str], ...] = field(default=())

    @property
    def n_slices(self) -> int:
        """Number of slices."""
        return int(self.stored.shape[0])

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(n, H, W)``."""
        n, h, w = self.stored.shape
        return int(n), int(h), int(w)

    @property
    def quantised(self) -> np.ndarray:
        """The normalised pixels as uint16 steps of 1 / QUANT_LEVELS, ``(n, H, W)``."""
        return self.stored if self.table is None else self.table[self.stored]

    @cached_property
    def pixels(self) -> np.ndarray:
        """The whole volume as float32 in [0, 1], computed once; see :meth:`slice_pixels` for a few slices."""
        return self.slice_pixels(slice(None))

    def slice_pixels(self, index: np.ndarray | Sequence[int] | slice) -> np.ndarray:
        """Float32 ``(k, H, W)`` of the slices at ``index``, reading only those slices."""
        picked = self.stored[index if isinstance(index, slice) else np.asarray(index, dtype=np.intp)]
        return dequantise(picked) if self.table is None else dequantise(self.table)[picked]

    @property
    def normals(self) -> np.ndarray:
        """Unit normal ``cross(row_dir, col_dir)`` of each slice, ``(n, 3)`` (NaN where unknown)."""
        return slice_normal(self.orientations)

    @property
    def normal(self) -> np.ndarray:
        """The series' mean unit normal, the direction slices are sorted along (NaN when unknown).

        For a uniform series it is every slice's normal; for tilted blocks it is only the
        stack direction, never a slice plane.
        """
        return mean_normal(self.normals)


def slice_normal(orientation: np.ndarray) -> np.ndarray:
    """Unit normal ``cross(row_dir, col_dir)`` of one (6,) or many (n, 6) ImageOrientationPatient."""
    return unit_normal(orientation)


def mean_normal(normals: np.ndarray) -> np.ndarray:
    """Unit mean of ``(n, 3)`` normals, each flipped to agree with the first; NaN if any is unknown."""
    normals = np.asarray(normals, dtype=np.float64).reshape(-1, 3)
    if not len(normals) or not np.isfinite(normals).all():
        return np.full(3, np.nan)
    signs = np.where(normals @ normals[0] < 0, -1.0, 1.0)
    total = (normals * signs[:, None]).sum(axis=0)
    norm = np.linalg.norm(total)
    return total / norm if norm > 0 else np.full(3, np.nan)


def sagittal_side(volume: SeriesVolume) -> np.ndarray:
    """Patient x (mm) of each slice of ``volume``, in slice order.

    DICOM patient coordinates are LPS: +x points to the patient's LEFT. In a sagittal
    series the slices with the largest x are the left parasagittal ones (left foraminal
    narrowing), the smallest x the right ones. NaN where positions are unknown.
    """
    return np.asarray(volume.positions, dtype=np.float64)[:, 0].copy()


def quantise(pixels: np.ndarray) -> np.ndarray:
    """[0, 1] floats -> uint16 steps of 1 / QUANT_LEVELS."""
    return np.round(np.clip(pixels, 0.0, 1.0) * QUANT_LEVELS).astype(np.uint16)


def dequantise(q: np.ndarray) -> np.ndarray:
    """uint16 steps -> float32 in [0, 1]; the inverse of :func:`quantise` on its outputs."""
    return q.astype(np.float32) / np.float32(QUANT_LEVELS)


def _scaled(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``(values - lo) / (hi - lo)`` in float32, elementwise; zeros when the range is empty."""
    if not np.isfinite(lo) or not np.isfinite(hi) or hi <= lo:
        return np.zeros(values.shape, dtype=np.float32)
    return (values - np.float32(lo)) * np.float32(1.0 / (hi - lo))


#: Stored dtypes whose every value fits a lookup table.
_TABLE_DTYPES = frozenset(np.dtype(t) for t in (np.uint8, np.int8, np.uint16, np.int16))


@cache
def _domain(dtype: np.dtype) -> tuple[np.ndarray, np.dtype]:
    """Every value of ``dtype`` indexed by its bit pattern, and the unsigned dtype of those patterns."""
    unsigned = np.dtype(f"u{dtype.itemsize}")
    return np.arange(2 ** (8 * dtype.itemsize), dtype=unsigned).view(dtype), unsigned


def _stored_and_table(slices: list[DicomSlice]) -> tuple[np.ndarray, np.ndarray | None]:
    """``(stored, table)`` of :class:`SeriesVolume`: bit patterns and their table when one applies.

    Else (colour, per-slice rescales, wider types) the general float path: the quantised
    steps themselves and no table.
    """
    first = slices[0]
    table = (
        first.stored.dtype in _TABLE_DTYPES
        and first.stored.ndim == 2
        and not first.rescale[-1]
        and all(s.rescale == first.rescale for s in slices[1:])
    )
    if not table:
        stack = np.stack([s.values for s in slices]).astype(np.float32, copy=False)
        return quantise(_scaled(stack, *np.percentile(stack, NORM_PERCENTILES))), None
    domain, unsigned = _domain(first.stored.dtype)
    values = modality_values(domain, first.ds)  # float32, one per bit pattern
    raw = np.stack([s.stored for s in slices]).view(unsigned)
    counts = np.bincount(raw.reshape(-1), minlength=domain.size)
    lo, hi = percentiles_from_counts(counts, values, NORM_PERCENTILES)
    return raw, quantise(_scaled(values, lo, hi))


def percentiles_from_counts(counts: np.ndarray, values: np.ndarray, qs: Sequence[float]) -> list[float]:
    """``np.percentile(data, qs)`` of float32 data given as ``counts[i]`` copies of each ``values[i]``.

    The two order statistics around each percentile come from the cumulative counts over the
    values in sorted order; ``np.quantile`` itself interpolates the pair, with the weight the
    full call would use, so each result has the bits ``np.percentile`` gives on the full data.
    """
    present = np.flatnonzero(counts)
    order = present[np.argsort(values[present], kind="stable")]
    ranked = values[order].astype(np.float32)
    cumulative = np.cumsum(counts[order])
    n = int(cumulative[-1])
    out = []
    for q in qs:
        virtual = (n - 1) * (q / 100)
        previous = int(np.floor(virtual))
        ranks = np.searchsorted(cumulative, [previous, min(previous + 1, n - 1)], side="right")
        out.append(float(np.quantile(ranked[ranks], np.array([virtual - previous]))[0]))
    return out


def _natural_key(name: str) -> tuple:
    """Sort ``2.dcm`` before ``10.dcm``."""
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name))


def _reference_normal(normals: np.ndarray) -> np.ndarray | None:
    """The series' mean normal, from the slices within ``MAX_TILT_DEG`` of the majority normal.

    The majority (rounded) normal only picks the family; averaging over the family keeps a
    series of blocks tilted either way of it centred, so no block is judged off-plane.
    """
    if len(normals) < 2:
        return None
    counts = Counter(map(tuple, np.round(normals, 2).tolist()))
    majority = np.asarray(counts.most_common(1)[0][0])
    majority = majority / np.linalg.norm(majority)
    family = normals[_angles(normals, majority) <= MAX_TILT_DEG]
    ref = mean_normal(np.concatenate([majority[None], family]))
    return ref if np.isfinite(ref).all() else majority


def _angles(normals: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Angles (degrees, 0-90) between the planes of ``(n, 3)`` unit normals and a reference plane."""
    return np.degrees(np.arccos(np.clip(np.abs(normals @ reference), 0.0, 1.0)))


def _drop_off_plane(slices: list[DicomSlice], skipped: list[tuple[str, str]]) -> list[DicomSlice]:
    """Move slices whose normal is more than ``MAX_TILT_DEG`` off the series' mean normal to ``skipped``.

    Such a slice is a localiser in another plane; tilted axial blocks (up to about 20 degrees
    either way) stay well within it.
    """
    if len(slices) < 2:
        return slices
    orientations = _stacked([s.orientation for s in slices], 6)
    normals = slice_normal(orientations)
    known = np.isfinite(normals).all(axis=1)
    reference = _reference_normal(normals[known])
    if reference is None:
        return slices
    angles = _angles(normals, reference)
    keep = []
    for s, angle, ok in zip(slices, angles, known, strict=True):
        if ok and angle > MAX_TILT_DEG:
            skipped.append((s.name, f"orientation {angle:.0f} degrees off the series' plane"))
            continue
        keep.append(s)
    return keep


def _centre(s: DicomSlice) -> np.ndarray:
    """Patient point of the centre of a slice's image (its top-left pixel without PixelSpacing)."""
    assert s.position is not None and s.orientation is not None
    if s.pixel_spacing is None:
        return s.position
    rows, cols = s.shape
    return (
        s.position
        + (cols - 1) / 2 * s.pixel_spacing[1] * s.orientation[:3]
        + (rows - 1) / 2 * s.pixel_spacing[0] * s.orientation[3:]
    )


def _order(slices: list[DicomSlice], where: Path) -> np.ndarray:
    """Slice order: slice centres along the mean normal, else InstanceNumber, else file name.

    Centres, not ImagePositionPatient: the top-left corners of blocks tilted differently
    are far apart along the mean normal even where the blocks' centres are in order.
    """
    has_geometry = all(s.position is not None and s.orientation is not None for s in slices)
    if has_geometry:
        normal = mean_normal(slice_normal(np.array([s.orientation for s in slices])))
        if np.isfinite(normal).all():
            along = np.array([float(_centre(s) @ normal) for s in slices])
            inst = np.array([s.instance_number if s.instance_number is not None else 0 for s in slices])
            return np.lexsort((inst, along))
    if all(s.instance_number is not None for s in slices):
        log.warning("%s: no usable slice geometry; ordered by InstanceNumber", where)
        keys = [(s.instance_number, _natural_key(s.name)) for s in slices]
    else:
        log.warning("%s: no usable slice geometry or InstanceNumber; ordered by file name", where)
        keys = [(0, _natural_key(s.name)) for s in slices]
    return np.array(sorted(range(len(slices)), key=lambda i: keys[i]), dtype=np.int64)


def _slice_spacing(positions: np.ndarray, normal: np.ndarray, first: DicomSlice) -> float:
    """Median distance of neighbouring slices along the normal; tag fallbacks; NaN if unknown."""
    if len(positions) > 1 and np.isfinite(positions).all() and np.isfinite(normal).all():
        gaps = np.abs(np.diff(positions @ normal))
        gaps = gaps[gaps > 1e-6]
        if gaps.size:
            return float(np.median(gaps))
    for value in (first.spacing_between, first.thickness):
        if value is not None and value > 0:
            return float(value)
    return float("nan")


def _usable(files: Sequence[tuple[str, bytes]], skipped: list[tuple[str, str]]) -> list[DicomSlice]:
    """Decode every file; keep those of the majority shape; the rest go to ``skipped``."""
    slices: list[DicomSlice] = []
    memo: dict = {}
    for name, raw in files:
        got = read_slice(name, raw, memo)
        if isinstance(got, str):
            skipped.append((name, got))
        else:
            slices.append(got)
    if slices:
        shapes = Counter(s.shape for s in slices)
        majority = max(shapes.items(), key=lambda kv: (kv[1], kv[0]))[0]
        for s in slices:
            if s.shape != majority:
                skipped.append((s.name, f"shape {s.shape} differs from the series' {majority}"))
        slices = [s for s in slices if s.shape == majority]
    return _drop_off_plane(slices, skipped)


def _stacked(values: list[np.ndarray | None], width: int) -> np.ndarray:
    """``(n, width)`` float64 rows, NaN where a value is missing."""
    return np.array([v if v is not None else np.full(width, np.nan) for v in values], dtype=np.float64)


def decode_series(files: Sequence[tuple[str, bytes]], where: Path) -> SeriesVolume:
    """Decode ``(file name, file bytes)`` pairs of one series folder ``where`` into a volume."""
    if not files:
        raise DataError(f"{where}: empty series folder (no *.dcm files)")
    skipped: list[tuple[str, str]] = []
    slices = _usable(files, skipped)
    for name, reason in skipped:
        log.warning("%s: skipped (%s)", where / name, reason)
    if not slices:
        first = min(skipped, key=lambda item: _natural_key(item[0]))
        raise DataError(f"{where}: no readable DICOM slice in {len(files)} files ({first[0]}: {first[1]})")

    slices = [slices[i] for i in _order(slices, where)]
    positions = _stacked([s.position for s in slices], 3)
    orientations = _stacked([s.orientation for s in slices], 6)
    spacing = next((s.pixel_spacing for s in slices if s.pixel_spacing is not None), None)
    instances = [s.instance_number if s.instance_number is not None else -1 for s in slices]
    stored, table = _stored_and_table(slices)
    return SeriesVolume(
        stored=stored,
        table=table,
        instance_numbers=np.asarray(instances, dtype=np.int64),
        positions=positions,
        orientations=orientations,
        pixel_spacing=spacing if spacing is not None else (float("nan"), float("nan")),
        slice_spacing=_slice_spacing(positions, mean_normal(slice_normal(orientations)), slices[0]),
        skipped=tuple(sorted(skipped, key=lambda item: _natural_key(item[0]))),
    )


def series_files(series_dir: Path) -> list[Path]:
    """List the ``*.dcm`` files of a series folder in natural name order; DataError if it is missing."""
    if not series_dir.is_dir():
        raise DataError(f"{series_dir}: series folder not found")
    return sorted(series_dir.glob("*.dcm"), key=lambda p: _natural_key(p.name))


def read_files(series_dir: Path) -> list[tuple[str, bytes]]:
    """``(name, bytes)`` of every ``*.dcm`` in ``series_dir``; an unreadable file gets empty bytes."""
    out: list[tuple[str, bytes]] = []
    for path in series_files(series_dir):
        try:
            out.append((path.name, path.read_bytes()))
        except OSError as exc:
            log.warning("%s: cannot read (%s)", path, short_error(exc))
            out.append((path.name, b""))
    return out


def read_series(series_dir: Path) -> SeriesVolume:
    """Read every ``*.dcm`` of ``series_dir`` into a sorted, normalised :class:`SeriesVolume`."""
    series_dir = Path(series_dir)
    return decode_series(read_files(series_dir), series_dir)
