"""One DICOM series folder -> :class:`SeriesVolume`.

Slices are sorted along the slice normal (``cross(row_dir, col_dir)`` of
ImageOrientationPatient), never by InstanceNumber or file name, because InstanceNumber
order does not reliably tell left from right in sagittal stacks. Pixel values go through
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

from lumbar_bench.errors import DataError

log = logging.getLogger(__name__)

#: Bumped whenever the decoded result of a series changes; part of every cache key.
READER_VERSION = 1
#: Normalised pixels take values k / QUANT_LEVELS, so a cache stores them losslessly as uint16.
QUANT_LEVELS = 65535
#: Percentiles of the series mapped to 0 and 1.
NORM_PERCENTILES = (0.5, 99.5)
#: A slice whose normal is further than this off the series' majority normal is a localiser.
MAX_TILT_DEG = 45.0


@dataclass(frozen=True, eq=False)
class SeriesVolume:
    """One decoded series, slices sorted along the slice normal.

    ``pixels`` float32 ``(n, H, W)`` in [0, 1]; ``instance_numbers`` ``(n,)``;
    ``positions`` ``(n, 3)`` ImagePositionPatient in mm (NaN when the files lack it);
    ``orientation`` ``(6,)`` ImageOrientationPatient (row direction, then column direction);
    ``pixel_spacing`` ``(row, col)`` mm; ``slice_spacing`` mm between neighbouring slices
    (NaN when unknown); ``skipped`` ``(file name, reason)`` for each file left out.
    """

    pixels: np.ndarray
    instance_numbers: np.ndarray
    positions: np.ndarray
    orientation: np.ndarray
    pixel_spacing: tuple[float, float]
    slice_spacing: float
    skipped: tuple[tuple[str, str], ...] = field(default=())

    @property
    def n_slices(self) -> int:
        """Number of slices."""
        return int(self.pixels.shape[0])

    @property
    def normal(self) -> np.ndarray:
        """Unit slice normal ``cross(row_dir, col_dir)`` (NaN when orientation is unknown)."""
        return slice_normal(self.orientation)


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
    """Return the unit normal ``cross(row_dir, col_dir)`` of a 6-value ImageOrientationPatient."""
    o = np.asarray(orientation, dtype=np.float64)
    n = np.cross(o[:3], o[3:6])
    norm = np.linalg.norm(n)
    return n / norm if norm > 0 else np.full(3, np.nan)


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


def _drop_off_plane(slices: list[_Slice], skipped: list[tuple[str, str]]) -> list[_Slice]:
    """Move slices whose normal is more than ``MAX_TILT_DEG`` off the series' to ``skipped``.

    Such a slice is a localiser in another plane; tilted axial slabs stay well within it.
    """
    normals = [slice_normal(s.orientation) if s.orientation is not None else None for s in slices]
    known = [n for n in normals if n is not None and np.isfinite(n).all()]
    if len(known) < 2:
        return slices
    counts = Counter(tuple(np.round(n, 2)) for n in known)
    reference = np.asarray(counts.most_common(1)[0][0])
    reference = reference / np.linalg.norm(reference)
    keep = []
    for s, n in zip(slices, normals, strict=True):
        if n is not None and np.isfinite(n).all():
            angle = float(np.degrees(np.arccos(np.clip(abs(float(n @ reference)), 0.0, 1.0))))
            if angle > MAX_TILT_DEG:
                skipped.append((s.name, f"orientation {angle:.0f} degrees off the series' plane"))
                continue
        keep.append(s)
    return keep


def _order(slices: list[_Slice], where: Path) -> tuple[np.ndarray, np.ndarray]:
    """Slice order and the reference orientation (NaN when geometry is missing)."""
    has_geometry = all(s.position is not None and s.orientation is not None for s in slices)
    if has_geometry:
        counts = Counter(tuple(np.round(s.orientation, 4)) for s in slices)  # type: ignore[arg-type]
        reference = np.asarray(counts.most_common(1)[0][0], dtype=np.float64)
        normal = slice_normal(reference)
        if np.isfinite(normal).all():
            along = np.array([float(np.dot(s.position, normal)) for s in slices])  # type: ignore[arg-type]
            inst = np.array([s.instance_number if s.instance_number is not None else 0 for s in slices])
            return np.lexsort((inst, along)), reference
    if all(s.instance_number is not None for s in slices):
        log.warning("%s: no usable slice geometry; ordered by InstanceNumber", where)
        keys = [(s.instance_number, _natural_key(s.name)) for s in slices]
    else:
        log.warning("%s: no usable slice geometry or InstanceNumber; ordered by file name", where)
        keys = [(0, _natural_key(s.name)) for s in slices]
    order = np.array(sorted(range(len(slices)), key=lambda i: keys[i]), dtype=np.int64)
    return order, np.full(6, np.nan)


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


def decode_series(files: Sequence[tuple[str, bytes]], where: Path) -> SeriesVolume:
    """Decode ``(file name, file bytes)`` pairs of one series folder ``where`` into a volume."""
    if not files:
        raise DataError(f"{where}: empty series folder (no *.dcm files)")
    skipped: list[tuple[str, str]] = []
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
    slices = _drop_off_plane(slices, skipped)
    for name, reason in skipped:
        log.warning("%s: skipped (%s)", where / name, reason)
    if not slices:
        first = min(skipped, key=lambda item: _natural_key(item[0]))
        raise DataError(f"{where}: no readable DICOM slice in {len(files)} files ({first[0]}: {first[1]})")

    order, orientation = _order(slices, where)
    slices = [slices[i] for i in order]
    stack = np.stack([s.values for s in slices]).astype(np.float32, copy=False)
    positions = np.array(
        [s.position if s.position is not None else np.full(3, np.nan) for s in slices], dtype=np.float64
    )
    spacing = next((s.pixel_spacing for s in slices if s.pixel_spacing is not None), None)
    instances = [s.instance_number if s.instance_number is not None else -1 for s in slices]
    return SeriesVolume(
        pixels=normalise(stack),
        instance_numbers=np.asarray(instances, dtype=np.int64),
        positions=positions,
        orientation=orientation,
        pixel_spacing=spacing if spacing is not None else (float("nan"), float("nan")),
        slice_spacing=_slice_spacing(positions, slice_normal(orientation), slices[0]),
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
