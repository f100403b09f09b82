"""Stage 4: crops around each point, ``z +/- depth`` slices, a window sized in millimetres.

The in-plane window is ``window`` times the study's level spacing (the median distance
between neighbouring level points), sampled bilinearly onto ``size`` x ``size`` pixels
(zeros outside the image). Sagittal neighbours are taken in patient-x order (right to left),
so a crop's slices always run the same way. With ``flip`` the right-side crops are mirrored
onto the left: a sagittal crop by reversing its slices, an axial crop by reversing its columns
(the axial column direction runs to the patient's left), so one model grades both sides.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from lumbar_bench.data.dicom import SeriesVolume, sagittal_side

#: Used when a study has fewer than two level points.
DEFAULT_LEVEL_SPACING_MM = 35.0


@dataclass(frozen=True)
class CropSpec:
    """Where to crop: slice index, pixel in the series' own grid, half window (mm), which mirror."""

    index: int
    row: float
    col: float
    half_mm: float
    mirror: bool = False


def level_spacing(points: dict[str, np.ndarray]) -> float:
    """Median distance (mm) between neighbouring level points; a default with fewer than two."""
    ordered = [points[lv] for lv in sorted(points)]
    gaps = [float(np.linalg.norm(b - a)) for a, b in zip(ordered, ordered[1:], strict=False)]
    return float(np.median(gaps)) if gaps else DEFAULT_LEVEL_SPACING_MM


def slice_order(volume: SeriesVolume, sagittal: bool) -> np.ndarray:
    """Slice indices in crop order: by patient x on sagittal series, as stored on axial ones."""
    if sagittal:
        x = sagittal_side(volume)
        if np.isfinite(x).all():
            return np.argsort(x, kind="stable")
    return np.arange(volume.n_slices)


def crop(
    volume: SeriesVolume, order: np.ndarray, spec: CropSpec, depth: int, size: int, sagittal: bool
) -> np.ndarray:
    """Float32 ``(2 * depth + 1, size, size)`` around ``spec``; edge slices repeat past the stack's end."""
    pos = int(np.flatnonzero(order == spec.index)[0])
    idx = order[np.clip(np.arange(pos - depth, pos + depth + 1), 0, len(order) - 1)]
    half_r = spec.half_mm / volume.pixel_spacing[0]
    half_c = spec.half_mm / volume.pixel_spacing[1]
    rows = spec.row + np.linspace(-half_r, half_r, size)
    cols = spec.col + np.linspace(-half_c, half_c, size)
    grid = np.stack(np.meshgrid(rows, cols, indexing="ij"))
    pixels = volume.slice_pixels(idx)
    out = np.stack([ndimage.map_coordinates(p, grid, order=1, cval=0.0) for p in pixels]).astype(np.float32)
    if spec.mirror:
        out = out[::-1] if sagittal else out[:, :, ::-1]
    return np.ascontiguousarray(out)
