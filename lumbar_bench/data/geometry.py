"""Patient-space geometry of DICOM series, one plane per slice (DICOM LPS, millimetres).

Every slice carries its own ImagePositionPatient (the centre of the top-left pixel) and
ImageOrientationPatient (row direction, then column direction). Axial series are often
stacks of blocks, each tilted to its disc, so nothing here assumes one orientation per
series: a plane, a projection or a level always comes from the slice's own geometry.

- :class:`SliceGeometry` maps pixels ``(row, col)`` of one slice to patient points and back.
  PixelSpacing is rows first: ``spacing[0]`` is the distance between rows (along the
  column direction), ``spacing[1]`` the distance between columns (along the row direction).
- :func:`series_geometry` gives the geometry of every slice of a series, optionally for the
  pixels resized to a square working size.
- :func:`project` finds the slice of a series a patient point lies on, and its pixel.
- :func:`assign_levels` gives each (axial) slice the level whose disc lies closest to its plane.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

#: Used where a slice has no usable orientation: sagittal, rows running down the spine.
DEFAULT_ORIENTATION = np.array([0.0, 1.0, 0.0, 0.0, 0.0, -1.0])


class HasSliceGeometry(Protocol):
    """What :func:`series_geometry` needs of a volume (a :class:`~lumbar_bench.data.dicom.SeriesVolume`)."""

    @property
    def positions(self) -> np.ndarray: ...  # (n, 3)

    @property
    def orientations(self) -> np.ndarray: ...  # (n, 6)

    @property
    def pixel_spacing(self) -> tuple[float, float]: ...

    @property
    def shape(self) -> tuple[int, int, int]: ...  # (n, H, W)


def unit_normal(orientation: np.ndarray) -> np.ndarray:
    """Unit normal ``cross(row_dir, col_dir)`` of one (6,) or many (n, 6) orientations; NaN if degenerate."""
    o = np.asarray(orientation, dtype=np.float64)
    n = np.cross(o[..., :3], o[..., 3:6])
    norm = np.linalg.norm(n, axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norm > 0, n / np.where(norm > 0, norm, 1.0), np.nan)


@dataclass(frozen=True, eq=False)
class SliceGeometry:
    """The plane of one slice and the pixel grid on it.

    ``position`` is the patient point of pixel ``(0, 0)``; ``row_dir`` the unit direction in
    which the column index grows, ``col_dir`` the one in which the row index grows (DICOM's
    naming); ``spacing`` is ``(row, col)`` mm per pixel.
    """

    position: np.ndarray
    row_dir: np.ndarray
    col_dir: np.ndarray
    spacing: tuple[float, float]

    @property
    def normal(self) -> np.ndarray:
        """Unit normal ``cross(row_dir, col_dir)`` of the slice plane."""
        return unit_normal(np.concatenate([self.row_dir, self.col_dir]))

    def to_patient(self, row: float, col: float) -> np.ndarray:
        """Patient coordinates (mm) of pixel ``(row, col)``."""
        return self.position + col * self.spacing[1] * self.row_dir + row * self.spacing[0] * self.col_dir

    def to_pixel(self, point: np.ndarray) -> tuple[float, float]:
        """Pixel ``(row, col)`` of the orthogonal projection of a patient point onto the slice plane."""
        d = np.asarray(point, dtype=np.float64) - self.position
        return float(d @ self.col_dir) / self.spacing[0], float(d @ self.row_dir) / self.spacing[1]

    def distance(self, point: np.ndarray) -> float:
        """Signed distance (mm) of a patient point from the slice plane, along :attr:`normal`."""
        return float((np.asarray(point, dtype=np.float64) - self.position) @ self.normal)

    def superior(self, row: float, col: float) -> float:
        """Height along the patient's head direction (+z) of a pixel."""
        return float(self.to_patient(row, col)[2])

    @classmethod
    def of(
        cls,
        position: np.ndarray,
        orientation: np.ndarray,
        pixel_spacing: tuple[float, float],
        shape: tuple[int, int],
        size: int | None = None,
    ) -> SliceGeometry:
        """Geometry of a slice of original ``shape``, resized to ``size`` x ``size`` when given.

        A missing orientation becomes :data:`DEFAULT_ORIENTATION`, a missing position the origin.
        """
        orient = np.asarray(orientation, dtype=np.float64)
        if orient.shape != (6,) or not np.isfinite(orient).all():
            orient = DEFAULT_ORIENTATION
        pos = np.asarray(position, dtype=np.float64)
        pos = np.where(np.isfinite(pos), pos, 0.0)
        rows, cols = (shape[0], shape[1]) if size is None else (size, size)
        spacing = (float(pixel_spacing[0]) * shape[0] / rows, float(pixel_spacing[1]) * shape[1] / cols)
        return cls(pos, orient[:3].copy(), orient[3:].copy(), spacing)


def series_geometry(volume: HasSliceGeometry, size: int | None = None) -> list[SliceGeometry]:
    """Geometry of every slice of ``volume``, each its own plane (resized to ``size`` x ``size`` if given)."""
    shape = tuple(volume.shape[1:3])
    return [
        SliceGeometry.of(p, o, volume.pixel_spacing, shape, size)  # type: ignore[arg-type]
        for p, o in zip(volume.positions, volume.orientations, strict=True)
    ]


def constant_orientation(geoms: Sequence[SliceGeometry], k: int = 0) -> list[SliceGeometry]:
    """The same slices with slice ``k``'s orientation for all: one orientation per series.

    This is the simplification the module avoids; it exists to measure what it costs.
    """
    ref = geoms[k]
    return [SliceGeometry(g.position, ref.row_dir, ref.col_dir, g.spacing) for g in geoms]


def plane_distances(geoms: Sequence[SliceGeometry], point: np.ndarray) -> np.ndarray:
    """Absolute distance (mm) of ``point`` from each slice's own plane, ``(n,)``."""
    return np.array([abs(g.distance(point)) for g in geoms], dtype=np.float64)


def stack_reach(geoms: Sequence[SliceGeometry]) -> float:
    """Median gap (mm) between the planes of neighbouring slices, measured at each slice's origin.

    A point further than this from every plane lies between blocks or outside the stack.
    NaN for fewer than two slices.
    """
    gaps = [abs(b.distance(a.position)) for a, b in zip(geoms, geoms[1:], strict=False)]
    gaps = [g for g in gaps if g > 1e-6]
    return float(np.median(gaps)) if gaps else float("nan")


@dataclass(frozen=True)
class Projection:
    """Where a patient point falls in a series: slice index, pixel and distance from that slice's plane."""

    index: int
    row: float
    col: float
    distance: float


def project(
    geoms: Sequence[SliceGeometry],
    point: np.ndarray,
    shape: tuple[int, int],
    max_distance: float | None = None,
) -> Projection | None:
    """Project ``point`` into the series: the nearest slice (own plane) whose image contains it.

    Only slices whose ``shape`` (rows, cols) image contains the in-plane projection count.
    None when no slice does, or when the nearest plane is further than ``max_distance`` mm
    (default: :func:`stack_reach`, one slice gap; no limit for a single slice).
    """
    if not geoms:
        return None
    limit = stack_reach(geoms) if max_distance is None else max_distance
    best: Projection | None = None
    for k, g in enumerate(geoms):
        row, col = g.to_pixel(point)
        if not (-0.5 <= row <= shape[0] - 0.5 and -0.5 <= col <= shape[1] - 0.5):
            continue
        d = abs(g.distance(point))
        if best is None or d < best.distance:
            best = Projection(k, row, col, d)
    if best is None or (np.isfinite(limit) and best.distance > limit):
        return None
    return best


def slice_level(geom: SliceGeometry, points: Mapping[str, np.ndarray]) -> str:
    """The level whose point (a disc centre, patient mm) lies closest to this slice's plane; "" if none."""
    if not points:
        return ""
    return min(points, key=lambda lv: abs(geom.distance(points[lv])))


def assign_levels(geoms: Sequence[SliceGeometry], points: Mapping[str, np.ndarray]) -> list[str]:
    """Level of each slice (see :func:`slice_level`): the disc nearest to the slice's own plane."""
    return [slice_level(g, points) for g in geoms]


def level_slices(geoms: Sequence[SliceGeometry], points: Mapping[str, np.ndarray]) -> dict[str, int]:
    """For each level, the slice of that level whose plane passes closest to its disc point.

    A level none of whose slices is assigned to it (no block through that disc) is left out.
    """
    levels = assign_levels(geoms, points)
    out: dict[str, int] = {}
    for lv, pt in points.items():
        own = [k for k, got in enumerate(levels) if got == lv]
        if own:
            out[lv] = min(own, key=lambda k: abs(geoms[k].distance(pt)))
    return out


__all__ = [
    "DEFAULT_ORIENTATION",
    "Projection",
    "SliceGeometry",
    "assign_levels",
    "constant_orientation",
    "level_slices",
    "plane_distances",
    "project",
    "series_geometry",
    "slice_level",
    "stack_reach",
    "unit_normal",
]
