"""Stage 2: from sagittal points to axial slices, through each axial slice's own plane.

The level points are the spinal-canal points found on sagittal T2/STIR (or, without that
series, the middle of the left and right foraminal points on sagittal T1), in patient
millimetres. Every slice of every axial series gets the level whose point lies closest to its
own plane (:func:`lumbar_bench.data.geometry.assign_levels`), so tilted per-disc blocks keep
their levels; per level the slice of that level closest to the point, over all axial series,
is the one graded. A level with no slice of its own in any axial stack has no axial slot.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from lumbar_bench.constants import CONDITIONS, LEVELS
from lumbar_bench.data import geometry as geo


@dataclass(frozen=True)
class AxialSlot:
    """The axial slice chosen for one level: series, slice index, distance (mm) of its plane to the point."""

    series_id: int
    index: int
    distance: float


def level_points(
    spinal: Mapping[str, np.ndarray], foraminal: Mapping[tuple[str, str], np.ndarray]
) -> dict[str, np.ndarray]:
    """Patient point per level: the spinal point, else the mean of the two foraminal points there."""
    out = {lv: np.asarray(p, dtype=np.float64) for lv, p in spinal.items()}
    for lv in LEVELS:
        sides = [foraminal[(c, lv)] for c in CONDITIONS[1:3] if (c, lv) in foraminal]
        if lv not in out and sides:
            out[lv] = np.mean(sides, axis=0)
    return out


def axial_slots(
    axial: Mapping[int, Sequence[geo.SliceGeometry]], points: Mapping[str, np.ndarray]
) -> dict[str, AxialSlot]:
    """Per level, the slice of that level closest to its point over every axial series."""
    best: dict[str, AxialSlot] = {}
    for series_id, geoms in axial.items():
        for lv, k in geo.level_slices(geoms, points).items():
            d = abs(geoms[k].distance(points[lv]))
            if lv not in best or d < best[lv].distance:
                best[lv] = AxialSlot(series_id, k, d)
    return best


def slice_levels(geoms: Sequence[geo.SliceGeometry], points: Mapping[str, np.ndarray]) -> list[str]:
    """The level the harness gives each slice of one axial series ("" without level points)."""
    return geo.assign_levels(geoms, points)
