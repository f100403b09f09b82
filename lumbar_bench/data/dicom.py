"""One DICOM series folder -> :class:`SeriesVolume`.

Each slice keeps its own ImagePositionPatient and ImageOrientationPatient: axial series are
often stacks of blocks, each tilted to its disc, so one orientation per series would put a
third of their slices on the wrong plane (see :mod:`lumbar_bench.data.geometry`). Slices are
sorted by the position of their centres along the series' mean normal (the mean of the
slices' ``cross(row_dir, col_dir)``), never by InstanceNumber or file name, because
InstanceNumber order does not reliably tell left from right in sagittal stacks. Pixel values go through
the modality LUT (RescaleSlope/Intercept) and are then normalised to [0, 1] with the
0.5/99.5 percentiles of the whole series.

A file that cannot be used (truncated, corrupt, no pixel data, multi-frame, a shape that
differs from the majority of the series) is logged as one warning line and skipped; the
rest of the series still loads. Decoding of JPEG, JPEG lossless, JPEG-LS, JPEG 2000 and
RLE pixel data comes from pydicom's pixel handlers and the pylibjpeg plugins.
"""

from __future__ import annotations

import io
import logging
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.pixels import apply_rescale

from lumbar_bench.data.geometry import unit_normal
from lumbar_bench.errors import DataError

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

    ``pixels`` float32 ``(n, H, W)`` in [0, 1]; ``instance_numbers`` ``(n,)``;
    ``positions`` ``(n, 3)`` each slice's ImagePositionPatient in mm and ``orientations``
    ``(n, 6)`` its ImageOrientationPatient (row direction, then column direction), NaN where
    a file lacks them; ``pixel_spacing`` ``(row, col)`` mm; ``slice_spacing`` mm between
    neighbouring slices (NaN when unknown); ``skipped`` ``(file name, reason)`` for each file
    left out. There is no series-level orientation: per-level axial blocks are tilted to each
    disc, so planes come from :func:`lumbar_bench.data.geometry.series_geometry`.
    """

    pixels: np.ndarray
    instance_numbers: np.ndarray
    positions: np.ndarray
    orientations: np.ndarray
    pixel_spacing: tuple[float, float]
    slice_spacing: float
    skipped: tuple[tuple[str, str], ...] = field(default=())

    @property
    def n_slices(self) -> int:
        """Number of slices."""
        return int(self.pixels.shape[0])

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


@dataclass(frozen=True)
class _Slice:
    """One usable file: rescaled values and its geometry tags (None where absent)."""

    name: str
    values: np.ndarray
    instance_number: int | None
    position: np.ndarray | None
    orientation: np.ndarray | None
    pixel_spacing: tuple[float, float] | None
    spacing_between: float | None
    thickness: float | None


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


def slice_values(ds: Dataset) -> np.ndarray:
    """Decode one single-frame dataset and apply the modality LUT: float32 ``(H, W)``.

    RescaleSlope/RescaleIntercept are applied (``pydicom.pixels.apply_rescale``); colour
    data is averaged to grey; MONOCHROME1 is negated so that bright always means high signal.
    """
    arr = ds.pixel_array
    values = np.asarray(apply_rescale(arr, ds), dtype=np.float32)
    if values.ndim == 3 and int(ds.get("SamplesPerPixel", 1)) > 1:
        values = values.mean(axis=-1, dtype=np.float32)
    if str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1":
        values = -values
    return values


def quantise(pixels: np.ndarray) -> np.ndarray:
    """[0, 1] floats -> uint16 steps of 1 / QUANT_LEVELS."""
    return np.round(np.clip(pixels, 0.0, 1.0) * QUANT_LEVELS).astype(np.uint16)


def dequantise(q: np.ndarray) -> np.ndarray:
    """uint16 steps -> float32 in [0, 1]; the inverse of :func:`quantise` on its outputs."""
    return q.astype(np.float32) / np.float32(QUANT_LEVELS)


def normalise(stack: np.ndarray) -> np.ndarray:
    """Map the series' 0.5/99.5 percentiles to 0/1, clip, and round to 16-bit steps."""
    lo, hi = np.percentile(stack, NORM_PERCENTILES)
    if not np.isfinite(lo) or not np.isfinite(hi) or hi <= lo:
        return np.zeros(stack.shape, dtype=np.float32)
    scaled = (stack - np.float32(lo)) * np.float32(1.0 / (hi - lo))
    return dequantise(quantise(scaled))


def _floats(value: object, n: int) -> np.ndarray | None:
    """``n`` finite floats from a multi-valued tag, or None."""
    try:
        out = np.asarray([float(v) for v in value], dtype=np.float64)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        return None
    return out if out.shape == (n,) and np.isfinite(out).all() else None


def _number(value: object) -> float | None:
    try:
        out = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return out if np.isfinite(out) else None


def _read_slice(name: str, raw: bytes) -> _Slice | str:
    """Decode one file; the reason it is unusable as a string instead."""
    try:
        ds = pydicom.dcmread(io.BytesIO(raw))
    except Exception as exc:  # any parse failure means "skip this file"
        return f"unreadable: {_short(exc)}"
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        return "no pixel data"
    frames = _number(ds.get("NumberOfFrames", 1)) or 1
    if frames > 1:
        return f"multi-frame ({int(frames)} frames) not supported"
    try:
        values = slice_values(ds)
    except Exception as exc:  # decoder errors come in many types
        return f"cannot decode pixel data: {_short(exc)}"
    if values.ndim != 2:
        return f"unexpected pixel array shape {values.shape}"
    instance = _number(ds.get("InstanceNumber"))
    spacing = _floats(ds.get("PixelSpacing"), 2)
    return _Slice(
        name=name,
        values=values,
        instance_number=int(instance) if instance is not None else None,
        position=_floats(ds.get("ImagePositionPatient"), 3),
        orientation=_floats(ds.get("ImageOrientationPatient"), 6),
        pixel_spacing=(float(spacing[0]), float(spacing[1])) if spacing is not None else None,
        spacing_between=_number(ds.get("SpacingBetweenSlices")),
        thickness=_number(ds.get("SliceThickness")),
    )


def _short(exc: BaseException) -> str:
    """First line of an exception, prefixed with its type."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _natural_key(name: str) -> tuple:
    """Sort ``2.dcm`` before ``10.dcm``."""
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name))


def _reference_normal(normals: list[np.ndarray]) -> np.ndarray | None:
    """The series' mean normal, from the slices within ``MAX_TILT_DEG`` of the majority normal.

    The majority (rounded) normal only picks the family; averaging over the family keeps a
    series of blocks tilted either way of it centred, so no block is judged off-plane.
    """
    if len(normals) < 2:
        return None
    counts = Counter(tuple(np.round(n, 2)) for n in normals)
    majority = np.asarray(counts.most_common(1)[0][0])
    majority = majority / np.linalg.norm(majority)
    family = np.array([n for n in normals if _angle(n, majority) <= MAX_TILT_DEG])
    ref = mean_normal(np.concatenate([majority[None], family]))
    return ref if np.isfinite(ref).all() else majority


def _angle(normal: np.ndarray, reference: np.ndarray) -> float:
    """Angle (degrees) between two planes given by their unit normals (0-90)."""
    return float(np.degrees(np.arccos(np.clip(abs(float(normal @ reference)), 0.0, 1.0))))


def _drop_off_plane(slices: list[_Slice], skipped: list[tuple[str, str]]) -> list[_Slice]:
    """Move slices whose normal is more than ``MAX_TILT_DEG`` off the series' mean normal to ``skipped``.

    Such a slice is a localiser in another plane; tilted axial blocks (up to about 20 degrees
    either way) stay well within it.
    """
    normals = [slice_normal(s.orientation) if s.orientation is not None else None for s in slices]
    reference = _reference_normal([n for n in normals if n is not None and np.isfinite(n).all()])
    if reference is None:
        return slices
    keep = []
    for s, n in zip(slices, normals, strict=True):
        if n is not None and np.isfinite(n).all():
            angle = _angle(n, reference)
            if angle > MAX_TILT_DEG:
                skipped.append((s.name, f"orientation {angle:.0f} degrees off the series' plane"))
                continue
        keep.append(s)
    return keep


def _centre(s: _Slice) -> np.ndarray:
    """Patient point of the centre of a slice's image (its top-left pixel without PixelSpacing)."""
    assert s.position is not None and s.orientation is not None
    if s.pixel_spacing is None:
        return s.position
    rows, cols = s.values.shape
    return (
        s.position
        + (cols - 1) / 2 * s.pixel_spacing[1] * s.orientation[:3]
        + (rows - 1) / 2 * s.pixel_spacing[0] * s.orientation[3:]
    )


def _order(slices: list[_Slice], where: Path) -> np.ndarray:
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


def _slice_spacing(positions: np.ndarray, normal: np.ndarray, first: _Slice) -> float:
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


def _usable(files: Sequence[tuple[str, bytes]], skipped: list[tuple[str, str]]) -> list[_Slice]:
    """Decode every file; keep those of the majority shape; the rest go to ``skipped``."""
    slices: list[_Slice] = []
    for name, raw in files:
        got = _read_slice(name, raw)
        if isinstance(got, str):
            skipped.append((name, got))
        else:
            slices.append(got)
    if slices:
        shapes = Counter(s.values.shape for s in slices)
        majority = max(shapes.items(), key=lambda kv: (kv[1], kv[0]))[0]
        for s in slices:
            if s.values.shape != majority:
                skipped.append((s.name, f"shape {s.values.shape} differs from the series' {majority}"))
        slices = [s for s in slices if s.values.shape == majority]
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
    stack = np.stack([s.values for s in slices]).astype(np.float32, copy=False)
    positions = _stacked([s.position for s in slices], 3)
    orientations = _stacked([s.orientation for s in slices], 6)
    spacing = next((s.pixel_spacing for s in slices if s.pixel_spacing is not None), None)
    instances = [s.instance_number if s.instance_number is not None else -1 for s in slices]
    return SeriesVolume(
        pixels=normalise(stack),
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
            log.warning("%s: cannot read (%s)", path, _short(exc))
            out.append((path.name, b""))
    return out


def read_series(series_dir: Path) -> SeriesVolume:
    """Read every ``*.dcm`` of ``series_dir`` into a sorted, normalised :class:`SeriesVolume`."""
    series_dir = Path(series_dir)
    return decode_series(read_files(series_dir), series_dir)
