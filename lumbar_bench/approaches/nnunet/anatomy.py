"""Geometry of spine anatomy on one slice: structures, levels from the bottom, lesion regions.

Levels are counted from the bottom: the lowest intervertebral disc is L5/S1, the next
one up L4/L5, and so on. "Up" is measured in patient coordinates (superior = +z), so
it does not depend on how the image rows are ordered. Slice planes
(:class:`~lumbar_bench.data.geometry.SliceGeometry`) live in :mod:`lumbar_bench.data.geometry`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from lumbar_bench.constants import LEVELS
from lumbar_bench.data.geometry import SliceGeometry


@dataclass(frozen=True)
class Structure:
    """One connected component: centroid ``(row, col)`` in pixels, area, and its pixels."""

    row: float
    col: float
    area: int
    coords: np.ndarray  # (n, 2) row, col


def structures(label: np.ndarray, cls: int, min_area: int) -> list[Structure]:
    """Find the connected components of class ``cls`` with at least ``min_area`` pixels."""
    comp, n = ndimage.label(label == cls)
    out = []
    for i in range(1, n + 1):
        coords = np.argwhere(comp == i)
        if len(coords) >= min_area:
            r, c = coords.mean(axis=0)
            out.append(Structure(float(r), float(c), len(coords), coords))
    return out


def bottom_up(items: list[Structure], geom: SliceGeometry) -> list[Structure]:
    """``items`` sorted from the most inferior to the most superior."""
    return sorted(items, key=lambda s: geom.superior(s.row, s.col))


def disc_levels(discs: list[Structure], geom: SliceGeometry) -> dict[str, Structure]:
    """Map the lowest five discs to levels: ``{level: disc}``, L5/S1 first from the bottom."""
    ordered = bottom_up(discs, geom)
    return {LEVELS[len(LEVELS) - 1 - i]: d for i, d in enumerate(ordered[: len(LEVELS)])}


def vertebra_gap_levels(vertebrae: list[Structure], geom: SliceGeometry) -> dict[str, Structure]:
    """Derive levels from vertebrae alone (no discs found): gaps between neighbours, L5/S1 below the lowest.

    The lowest vertebra is taken as L5 (SPIDER does not label the sacrum as a vertebra), so
    L5/S1 sits half a vertebra spacing below it.
    """
    ordered = bottom_up(vertebrae, geom)
    if len(ordered) < 2:
        return {}
    pts = [np.array([v.row, v.col]) for v in ordered]
    gaps = [pts[0] - (pts[1] - pts[0]) / 2] + [(a + b) / 2 for a, b in zip(pts, pts[1:], strict=False)]
    out = {}
    for i, g in enumerate(gaps[: len(LEVELS)]):
        out[LEVELS[len(LEVELS) - 1 - i]] = Structure(float(g[0]), float(g[1]), 1, np.array([g]))
    return out


def project_levels(points: dict[str, np.ndarray], geom: SliceGeometry) -> dict[str, Structure]:
    """Levels of another series (patient points) projected onto this slice as point structures."""
    out = {}
    for lv, pt in points.items():
        r, c = geom.to_pixel(pt)
        out[lv] = Structure(r, c, 1, np.array([[r, c]]))
    return out


def nearest_level(levels: dict[str, Structure], row: float, col: float) -> str | None:
    """Return the level whose disc centroid is closest to ``(row, col)``; None without discs."""
    if not levels:
        return None
    return min(levels, key=lambda lv: (levels[lv].row - row) ** 2 + (levels[lv].col - col) ** 2)


def bracketing(
    vertebrae: list[Structure], disc: Structure, geom: SliceGeometry
) -> tuple[Structure | None, ...]:
    """Find the vertebra just below and just above ``disc`` (None where there is none)."""
    z = geom.superior(disc.row, disc.col)
    below = [v for v in vertebrae if geom.superior(v.row, v.col) < z]
    above = [v for v in vertebrae if geom.superior(v.row, v.col) > z]

    def dist(v: Structure) -> float:
        return (v.row - disc.row) ** 2 + (v.col - disc.col) ** 2

    return (min(below, key=dist) if below else None, min(above, key=dist) if above else None)


def width_across(v: Structure, axis: np.ndarray) -> float:
    """Extent of a structure perpendicular to the unit ``axis`` (row, col), in pixels."""
    perp = np.array([-axis[1], axis[0]])
    proj = v.coords @ perp
    return float(proj.max() - proj.min() + 1)


def region_axes(
    disc: Structure | None,
    below: Structure | None,
    above: Structure | None,
    along: float,
    across: float,
    fallback: float,
    cap: float | None = None,
) -> tuple[np.ndarray, float, float]:
    """Spine axis (unit, row/col), semi-axis along it and across it, sized by the neighbouring vertebrae.

    Along the spine the region spans ``along`` x the distance between the two vertebra
    centroids (the disc gap and a little of each endplate); across it spans ``across``
    x the vertebrae's width. ``fallback`` (pixels) stands in where no vertebra was found;
    ``cap`` bounds both semi-axes (merged or fragmented vertebrae give absurd sizes).
    """
    pair = [v for v in (below, above) if v is not None]
    if len(pair) == 2:
        vec = np.array([above.row - below.row, above.col - below.col])
        gap = float(np.hypot(*vec))
    elif pair and disc is not None:
        vec = np.array([disc.row - pair[0].row, disc.col - pair[0].col]) * (1 if pair[0] is below else -1)
        gap = 2 * float(np.hypot(*vec))
    else:
        return np.array([-1.0, 0.0]), fallback, fallback
    axis = vec / max(np.hypot(*vec), 1e-6)
    width = float(np.mean([width_across(v, axis) for v in pair]))
    a, b = along * gap / 2, across * width / 2
    if cap is not None:
        a, b = min(a, cap), min(b, cap)
    return axis, max(a, 1.0), max(b, 1.0)


def ellipse(
    shape: tuple[int, int],
    center: tuple[float, float],
    axis: np.ndarray,
    semi_along: float,
    semi_across: float,
) -> np.ndarray:
    """Boolean mask of an ellipse centred at ``(row, col)`` with its long axis along ``axis``."""
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]]
    dr, dc = rows - center[0], cols - center[1]
    u = dr * axis[0] + dc * axis[1]
    v = -dr * axis[1] + dc * axis[0]
    return (u / semi_along) ** 2 + (v / semi_across) ** 2 <= 1.0


def ring(mask: np.ndarray, width: int) -> np.ndarray:
    """Pixels within ``width`` of ``mask`` but outside it."""
    if width <= 0 or not mask.any():
        return np.zeros_like(mask, dtype=bool)
    return ndimage.binary_dilation(mask, iterations=width) & ~mask


def order_ok(vertebrae: list[Structure], discs: list[Structure], geom: SliceGeometry) -> bool:
    """Check that every disc lies between two vertebrae (vertebra, disc, vertebra, ... from the bottom)."""
    if len(discs) < 1 or len(vertebrae) < 2:
        return False
    seq = [("v", geom.superior(v.row, v.col)) for v in vertebrae] + [
        ("d", geom.superior(d.row, d.col)) for d in discs
    ]
    kinds = [k for k, _ in sorted(seq, key=lambda t: t[1])]
    return all(not (a == "d" and b == "d") for a, b in zip(kinds, kinds[1:], strict=False))
