"""Draw a whole slice stack from the analytic spine: classes, SPIDER labels, lesion zones."""

from __future__ import annotations

import numpy as np

from lumbar_bench.data.phantom.anatomy import SPIDER_PARTIAL_OFFSET, Spine, local_coords
from lumbar_bench.data.phantom.drawing import Maps, paint
from lumbar_bench.data.phantom.geometry import Stack

#: Pixels evaluated at once; bounds the temporaries at large image sizes.
CHUNK_PIXELS = 1_500_000


def draw_stack(spine: Spine, stack: Stack) -> Maps:
    """Painted maps ``(n, H, W)`` of every slice of ``stack`` (spatial order)."""
    rows, cols = stack.shape
    step = max(1, CHUNK_PIXELS // (rows * cols))
    parts = []
    for lo in range(0, stack.n, step):
        x, y, z = stack.grid(lo, min(lo + step, stack.n))
        parts.append(paint(spine, *local_coords(spine, x, y, z)))
    return Maps(*(np.concatenate([p[i] for p in parts]) for i in range(3)))


def partial_vertebrae(spine: Spine, stack: Stack) -> list[int]:
    """SPIDER labels of vertebral bodies cut by the edge of a sagittal stack's field of view."""
    k, _ = stack.nearest(spine.point(float(spine.vert_center[2]), 0.0, 0.0))
    out = []
    for i, label in enumerate(spine.vert_label):
        lo = spine.vert_center[i] - spine.vert_half[i]
        hi = spine.vert_center[i] + spine.vert_half[i]
        corners = [
            spine.point(float(s), 0.0, float(v))
            for s in (lo, hi)
            for v in (-spine.vert_b[i], spine.vert_b[i])
        ]
        inside = [stack.inside(k, c) for c in corners]
        if any(inside) and not all(inside):
            out.append(int(label))
    return out


def mark_partial(anat: np.ndarray, labels: list[int]) -> np.ndarray:
    """Move the given vertebra labels to their partially-visible values (label + 100)."""
    if not labels:
        return anat
    return np.where(np.isin(anat, labels), anat + SPIDER_PARTIAL_OFFSET, anat).astype(np.uint16)
