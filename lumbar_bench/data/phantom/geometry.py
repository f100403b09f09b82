"""Slice stacks: where each slice of a series lies in patient space (DICOM LPS, mm).

A :class:`Stack` holds, per slice, ImagePositionPatient (the centre of the top-left pixel)
and the row/column directions of ImageOrientationPatient, all in spatial order, plus the
InstanceNumber that slice gets in its file. Builders make the three RSNA series types:
sagittal stacks stepped along x, per-level axial blocks tilted to each disc, and
continuous axial stacks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lumbar_bench.constants import LEVELS
from lumbar_bench.data.phantom.anatomy import Spine

SAGITTAL_ROW = np.array([0.0, 1.0, 0.0])
SAGITTAL_COL = np.array([0.0, 0.0, -1.0])
AXIAL_ROW = np.array([1.0, 0.0, 0.0])
AXIAL_COL = np.array([0.0, 1.0, 0.0])
#: Largest tilt of a per-level axial block off the true axial plane (radians).
MAX_TILT = np.deg2rad(20.0)


@dataclass(frozen=True, eq=False)
class Stack:
    """Geometry of one series; arrays are in spatial order, one row per slice."""

    description: str
    positions: np.ndarray
    row_dirs: np.ndarray
    col_dirs: np.ndarray
    pixel_spacing: float
    shape: tuple[int, int]
    thickness: float
    spacing: float
    instance_numbers: np.ndarray

    @property
    def n(self) -> int:
        """Number of slices."""
        return len(self.positions)

    def normal(self, k: int) -> np.ndarray:
        """Return the unit normal ``cross(row_dir, col_dir)`` of slice ``k``."""
        return np.cross(self.row_dirs[k], self.col_dirs[k])

    def grid(self, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Patient ``(x, y, z)`` of every pixel of slices ``lo:hi``, float32 ``(m, H, W)``."""
        r = (np.arange(self.shape[0], dtype=np.float64) * self.pixel_spacing)[None, :, None]
        c = (np.arange(self.shape[1], dtype=np.float64) * self.pixel_spacing)[None, None, :]
        out = []
        for axis in range(3):
            p = self.positions[lo:hi, axis][:, None, None]
            rd = self.row_dirs[lo:hi, axis][:, None, None]
            cd = self.col_dirs[lo:hi, axis][:, None, None]
            out.append((p + c * rd + r * cd).astype(np.float32))
        return out[0], out[1], out[2]

    def project(self, k: int, point: np.ndarray) -> tuple[float, float]:
        """Pixel ``(x, y)`` = (column, row) of a patient ``point`` on slice ``k``."""
        d = np.asarray(point, dtype=np.float64) - self.positions[k]
        return float(d @ self.row_dirs[k] / self.pixel_spacing), float(
            d @ self.col_dirs[k] / self.pixel_spacing
        )

    def nearest(self, point: np.ndarray) -> tuple[int, float]:
        """Slice whose plane is closest to ``point``, and that distance (mm)."""
        normals = np.cross(self.row_dirs, self.col_dirs)
        dist = np.abs(np.einsum("ij,ij->i", np.asarray(point)[None, :] - self.positions, normals))
        k = int(np.argmin(dist))
        return k, float(dist[k])

    def inside(self, k: int, point: np.ndarray, margin: float = 0.0) -> bool:
        """Whether ``point`` projects inside slice ``k``'s image (``margin`` pixels in)."""
        x, y = self.project(k, point)
        rows, cols = self.shape
        return margin <= x <= cols - 1 - margin and margin <= y <= rows - 1 - margin


def _top_left(
    centre: np.ndarray, row: np.ndarray, col: np.ndarray, ps: float, shape: tuple[int, int]
) -> np.ndarray:
    """ImagePositionPatient of an image whose centre lies at ``centre``."""
    rows, cols = shape
    return centre - (cols - 1) / 2 * ps * row - (rows - 1) / 2 * ps * col


def _numbering(
    rng: np.random.Generator, n: int, reverse_p: float, shuffle_p: float
) -> tuple[np.ndarray, str]:
    """InstanceNumbers for slices in spatial order: forward, reversed or shuffled."""
    draw = rng.random()
    if draw < shuffle_p:
        return rng.permutation(n) + 1, "shuffled"
    if draw < shuffle_p + reverse_p:
        return np.arange(n, 0, -1), "reversed"
    return np.arange(1, n + 1), "forward"


def sagittal(
    rng: np.random.Generator,
    description: str,
    centre: np.ndarray,
    *,
    fov: float,
    shape: tuple[int, int],
    n: int,
    spacing: float,
) -> Stack:
    """Make a sagittal stack centred on ``centre``, slices stepped along +x (right to left).

    InstanceNumber runs left to right (1 = most leftward, largest x) for most series,
    right to left for about 30%, shuffled for about 5%.
    """
    ps = fov / shape[0]
    offsets = (np.arange(n) - (n - 1) / 2) * spacing
    tl = _top_left(centre, SAGITTAL_ROW, SAGITTAL_COL, ps, shape)
    positions = tl[None, :] + offsets[:, None] * np.array([1.0, 0.0, 0.0])
    numbers, _ = _numbering(rng, n, reverse_p=0.30, shuffle_p=0.05)
    numbers = n + 1 - numbers  # forward = left to right = descending x
    return Stack(
        description,
        positions,
        np.tile(SAGITTAL_ROW, (n, 1)),
        np.tile(SAGITTAL_COL, (n, 1)),
        ps,
        shape,
        spacing - rng.uniform(0.0, 0.5),
        spacing,
        numbers,
    )


def axial_blocks(
    rng: np.random.Generator,
    spine: Spine,
    centre_v: float,
    shift: np.ndarray,
    *,
    fov: float,
    shape: tuple[int, int],
    per_level: list[int],
    spacing: float,
    tilted: bool,
) -> Stack:
    """Per-level axial blocks through each disc (L1/L2 first), tilted to the disc when ``tilted``."""
    positions, rows, cols = [], [], []
    ps = fov / shape[0]
    for level, m in zip(range(len(LEVELS)), per_level, strict=True):
        d = spine.level_disc(level)
        s = float(spine.disc_center[d])
        t = spine.tangent(s)
        angle = float(np.clip(np.arctan2(t[1], t[2]), -MAX_TILT, MAX_TILT)) if tilted else 0.0
        normal = np.array([0.0, np.sin(angle), np.cos(angle)])
        col = np.array([0.0, normal[2], -normal[1]])
        centre = spine.point(s, 0.0, centre_v) + shift
        for i in range(m):
            off = ((m - 1) / 2 - i) * spacing  # superior first
            positions.append(_top_left(centre + off * normal, AXIAL_ROW, col, ps, shape))
            rows.append(AXIAL_ROW), cols.append(col)
    n = len(positions)
    numbers, _ = _numbering(rng, n, reverse_p=0.15, shuffle_p=0.0)
    return Stack(
        "Axial T2", np.array(positions), np.array(rows), np.array(cols), ps, shape, spacing, spacing, numbers
    )


def axial_continuous(
    rng: np.random.Generator,
    spine: Spine,
    centre_v: float,
    shift: np.ndarray,
    *,
    fov: float,
    shape: tuple[int, int],
    n: int,
) -> Stack:
    """One untilted axial stack from above L1/L2 to below L5/S1, superior first."""
    top = spine.point(float(spine.disc_center[spine.level_disc(0)]) + 7.0, 0.0, centre_v)
    bottom = spine.point(float(spine.disc_center[spine.level_disc(len(LEVELS) - 1)]) - 7.0, 0.0, centre_v)
    spacing = float(top[2] - bottom[2]) / (n - 1)
    centre = 0.5 * (top + bottom) + shift
    ps = fov / shape[0]
    positions = []
    for i in range(n):
        p = np.array([centre[0], centre[1], top[2] - i * spacing])
        positions.append(_top_left(p, AXIAL_ROW, AXIAL_COL, ps, shape))
    numbers, _ = _numbering(rng, n, reverse_p=0.15, shuffle_p=0.0)
    return Stack(
        "Axial T2",
        np.array(positions),
        np.tile(AXIAL_ROW, (n, 1)),
        np.tile(AXIAL_COL, (n, 1)),
        ps,
        shape,
        spacing,
        spacing,
        numbers,
    )
