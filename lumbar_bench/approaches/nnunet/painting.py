"""Painting one slice's pseudo-mask: each labelled coordinate's region, its class, an ignore ring.

A region is an ellipse centred on the coordinate, spanning the gap between the two vertebrae
of its level along the spine and a fraction of their width across it; on axial slices its
size comes from the same study's sagittal vertebrae in millimetres. Vertebrae and discs found
by the U-Net keep their own classes. Blank labels and a ring around every region become
nnU-Net's ``ignore`` label.

**A region belongs to its level.** On sagittal slices each region is cut to its level's
stretch of spine: halfway to the annotated coordinates of the neighbouring levels (the
same condition's, else any sagittal condition's), through patient space; the length of
that stretch also sizes the region. The vertebra U-Net's anatomy only sizes the region
where a study annotates a single level.

What a slice is painted from (:class:`SeriesAnatomy`, :class:`StudyInputs`) is built, and the
stage is driven study by study, in :mod:`.pseudo_masks`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from lumbar_bench.approaches.nnunet import anatomy as an
from lumbar_bench.approaches.nnunet.schemes import ClassScheme
from lumbar_bench.approaches.nnunet.vertebrae import DISC, VERTEBRA
from lumbar_bench.constants import LEVELS
from lumbar_bench.data import geometry as geo
from lumbar_bench.data.dicom import SeriesVolume

#: condition -> level -> patient point (mm) of a study's annotated sagittal coordinates.
Anchors = dict[str, dict[str, np.ndarray]]


@dataclass(frozen=True)
class MaskConfig:
    """Working size and the shape of painted regions."""

    size: int = 128
    along: float = 0.5
    across: float = 0.2
    ignore_ring: int = 1
    min_area: int = 6
    #: Axial region radius as a fraction of the sagittal vertebra width (in mm).
    axial_radius: float = 0.1
    #: One set of classes per left/right pair of conditions (see :class:`ClassScheme`).
    merge_sides: bool = True


@dataclass
class SeriesAnatomy:
    """A sagittal series at working size with U-Net anatomy on its reference (mid) slice."""

    pixels: np.ndarray  # (n, S, S)
    instance_numbers: np.ndarray
    geoms: list[geo.SliceGeometry]
    mid: int
    labels: dict[int, np.ndarray]  # slice index -> anatomy classes
    vertebrae: list[an.Structure]
    discs: list[an.Structure]
    levels: dict[str, an.Structure]
    side_x: np.ndarray  # patient x of each slice minus the series median (left > 0)


@dataclass(frozen=True)
class LevelSlab:
    """A level's stretch of spine on a slice: pixels with ``lo <= (p - centre) . axis <= hi``.

    ``axis`` is a unit ``(row, col)`` vector pointing to the next level up; ``lo < 0 < hi``.
    """

    axis: np.ndarray
    lo: float
    hi: float

    @property
    def length(self) -> float:
        """Length of the stretch along the spine (pixels)."""
        return self.hi - self.lo

    def mask(self, shape: tuple[int, int], centre: tuple[float, float]) -> np.ndarray:
        """Boolean map of the pixels within the stretch."""
        rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]]
        u = (rows - centre[0]) * self.axis[0] + (cols - centre[1]) * self.axis[1]
        return (u >= self.lo) & (u <= self.hi)


#: series_id -> (volume, anatomy) of a study's sagittal series.
Sagittal = dict[int, tuple[SeriesVolume, SeriesAnatomy]]


@dataclass(frozen=True)
class StudyInputs:
    """What painting a study needs beyond one series: severities and sagittal context."""

    study_id: int
    severities: dict[str, int]
    descs: dict[int, str]
    sagittal: Sagittal
    anchors: Anchors
    ref: SeriesAnatomy | None  # the sagittal series with the most discs (places axial slices)


def level_slab(
    centre: tuple[float, float], level: str, neighbours: dict[str, tuple[float, float]]
) -> LevelSlab | None:
    """The stretch of ``level`` around ``centre``: halfway to the neighbouring levels' points.

    ``neighbours`` maps levels to pixel ``(row, col)`` on the same slice. A missing neighbour
    (the end of the lumbar spine, a blank label) mirrors the other one; None without either.
    """
    i = LEVELS.index(level)
    c = np.asarray(centre, dtype=np.float64)
    up = neighbours.get(LEVELS[i - 1]) if i > 0 else None
    down = neighbours.get(LEVELS[i + 1]) if i + 1 < len(LEVELS) else None
    vec_up = np.asarray(up, dtype=np.float64) - c if up is not None else None
    vec_down = np.asarray(down, dtype=np.float64) - c if down is not None else None
    if vec_up is not None and vec_down is not None:
        axis = vec_up - vec_down
    else:
        axis = vec_up if vec_up is not None else -vec_down if vec_down is not None else None
    if axis is None or np.hypot(*axis) < 1e-6:
        return None
    axis = axis / np.hypot(*axis)
    hi = float(vec_up @ axis) / 2 if vec_up is not None else None
    lo = float(vec_down @ axis) / 2 if vec_down is not None else None
    hi = hi if hi is not None else -lo  # type: ignore[operator]
    lo = lo if lo is not None else -hi
    return LevelSlab(axis, lo, hi) if lo < 0 < hi else None


def _neighbours(anchors: Anchors, condition: str, geom: geo.SliceGeometry) -> dict[str, tuple[float, float]]:
    """Pixel ``(row, col)`` on this slice of each level's anchor: the condition's own, else any's."""
    points: dict[str, np.ndarray] = {}
    for cond, levels in anchors.items():
        if cond != condition:
            points.update(levels)
    points.update(anchors.get(condition, {}))
    return {lv: geom.to_pixel(pt) for lv, pt in points.items()}


def _slice_anatomy(sa: SeriesAnatomy, index: int, cfg: MaskConfig) -> tuple[list, dict, float]:
    """Vertebrae, levels and the region size cap of one slice (borrowing the mid slice's where thin)."""
    anat = sa.labels[index]
    verts = an.structures(anat, VERTEBRA, cfg.min_area)
    discs = an.structures(anat, DISC, cfg.min_area)
    if len(verts) < 2:  # parasagittal slices show little bone: borrow the mid slice's in-plane anatomy
        verts, discs = sa.vertebrae, sa.discs
    levels = an.disc_levels(discs, sa.geoms[index])
    if len(levels) < 3:  # too few discs found here: the series' (possibly borrowed) levels
        levels = sa.levels
    # typical vertebra size (sqrt of the median body area) bounds the region
    cap = 0.6 * float(np.sqrt(np.median([v.area for v in verts]))) if verts else cfg.size * 0.05
    return verts, levels, cap


def unet_axes(
    disc: an.Structure | None, verts: list[an.Structure], geom: geo.SliceGeometry, cfg: MaskConfig, cap: float
) -> tuple[np.ndarray, float, float] | None:
    """Spine axis and semi-axes from the vertebrae around ``disc`` (None where there are none)."""
    if disc is None:
        return None
    below, above = an.bracketing(verts, disc, geom)
    if below is None and above is None:
        return None
    return an.region_axes(disc, below, above, cfg.along, cfg.across, fallback=cfg.size * 0.05, cap=cap)


def sagittal_region(
    centre: tuple[float, float],
    slab: LevelSlab | None,
    axes: tuple[np.ndarray, float, float] | None,
    cfg: MaskConfig,
    cap: float,
) -> np.ndarray:
    """The painted ellipse of one coordinate, cut to its level's stretch when that is known.

    With a ``slab`` the ellipse follows its axis and spans ``cfg.along`` of its length along
    the spine, and across it the U-Net's vertebra width (``axes``) or, without one,
    ``cfg.across`` of the length. Without a slab it is the U-Net's ``(axis, semi_along,
    semi_across)``, or a small circle when the U-Net found nothing either.
    """
    shape = (cfg.size, cfg.size)
    if slab is None:
        axis, a, b = axes if axes is not None else (np.array([-1.0, 0.0]), cfg.size * 0.05, cfg.size * 0.05)
        return an.ellipse(shape, centre, axis, a, b)
    a = max(cfg.along * slab.length / 2, 1.0)
    b = axes[2] if axes is not None else max(min(cfg.across * slab.length / 2, cap), 1.0)
    return an.ellipse(shape, centre, slab.axis, a, b) & slab.mask(shape, centre)


def paint_sagittal(
    sa: SeriesAnatomy,
    index: int,
    rows: pd.DataFrame,
    study: StudyInputs,
    scheme: ClassScheme,
    cfg: MaskConfig,
    scale: tuple[float, float],
) -> tuple[np.ndarray, list]:
    """Label map of slice ``index`` and one fact dict per coordinate painted on it."""
    size, geom = cfg.size, sa.geoms[index]
    label = np.zeros((size, size), dtype=np.uint8)
    label[sa.labels[index] == VERTEBRA] = scheme.anatomy_index("vertebra")
    label[sa.labels[index] == DISC] = scheme.anatomy_index("disc")
    verts, levels, cap = _slice_anatomy(sa, index, cfg)
    lesion, ignore = np.zeros_like(label), np.zeros(label.shape, dtype=bool)
    facts = []
    for r in rows.itertuples(index=False):
        row, col = r.y * scale[0], r.x * scale[1]
        found = an.nearest_level(levels, row, col)
        disc = levels.get(r.level) or (levels.get(found) if found else None)
        axes = unet_axes(disc, verts, geom, cfg, cap)
        slab = level_slab((row, col), r.level, _neighbours(study.anchors, r.condition, geom))
        region = sagittal_region((row, col), slab, axes, cfg, cap)
        _paint(label, lesion, ignore, region, r, study.severities, scheme, cfg)
        side = "left" if sa.side_x[index] > 0 else "right" if sa.side_x[index] < 0 else "mid"
        facts.append(
            {
                **_fact(r, found or "", side, (row, col), index, len(sa.pixels), int(region.sum()), cfg),
                "vertebra_area": float(np.median([v.area for v in verts])) if verts else 0.0,
            }
        )
    return _finish(label, lesion, ignore, scheme), facts


def _paint(
    label: np.ndarray,
    lesion: np.ndarray,
    ignore: np.ndarray,
    region: np.ndarray,
    r: object,
    severities: dict[str, int],
    scheme: ClassScheme,
    cfg: MaskConfig,
) -> None:
    """Paint one coordinate's region: its lesion class, or ignore when unlabelled; a ring of ignore."""
    sev = severities.get(f"{r.condition}_{r.level}", -1)  # type: ignore[attr-defined]
    if sev < 0 or r.condition not in scheme.conditions:  # type: ignore[attr-defined]
        ignore |= region
    else:
        lesion[region] = scheme.lesion(r.condition, sev)  # type: ignore[attr-defined]
    ignore |= an.ring(region, cfg.ignore_ring)


def _finish(label: np.ndarray, lesion: np.ndarray, ignore: np.ndarray, scheme: ClassScheme) -> np.ndarray:
    """Ignore, then lesions, over the anatomy."""
    label[ignore] = scheme.ignore
    label[lesion > 0] = lesion[lesion > 0]
    return label


def _fact(
    r: object,
    level: str,
    side: str,
    pixel: tuple[float, float],
    index: int,
    n: int,
    area: int,
    cfg: MaskConfig,
) -> dict:
    """One ``coords.csv`` row (without the series columns)."""
    return {
        "condition": r.condition,  # type: ignore[attr-defined]
        "level": r.level,  # type: ignore[attr-defined]
        "instance_number": int(r.instance_number),  # type: ignore[attr-defined]
        "level_from_masks": level,
        "side_from_slice": side,
        "inside": bool(0 <= pixel[0] < cfg.size and 0 <= pixel[1] < cfg.size),
        "slice_index": index,
        "n_slices": n,
        "region_area": area,
        "vertebra_area": float("nan"),
    }


def paint_axial(
    pixels_shape: tuple[int, int],
    rows: pd.DataFrame,
    severities: dict[str, int],
    scheme: ClassScheme,
    cfg: MaskConfig,
    scale: tuple[float, float],
    radius: float,
) -> np.ndarray:
    """Label map of one axial slice: a disc of ``radius`` pixels per coordinate, ignore ring around."""
    label = np.zeros(pixels_shape, dtype=np.uint8)
    lesion, ignore = np.zeros_like(label), np.zeros(pixels_shape, dtype=bool)
    for r in rows.itertuples(index=False):
        region = an.ellipse(
            pixels_shape, (r.y * scale[0], r.x * scale[1]), np.array([1.0, 0.0]), radius, radius
        )
        _paint(label, lesion, ignore, region, r, severities, scheme, cfg)
    return _finish(label, lesion, ignore, scheme)


def axial_facts(
    rows: pd.DataFrame,
    geom: geo.SliceGeometry,
    points: dict[str, np.ndarray],
    index: int,
    n: int,
    area: int,
    cfg: MaskConfig,
    scale: tuple[float, float],
) -> list[dict]:
    """``coords.csv`` rows of one axial slice: its level from its own plane, each coordinate's side."""
    level = geo.slice_level(geom, points)
    centre_x = geom.to_patient(cfg.size / 2, cfg.size / 2)[0]
    out = []
    for r in rows.itertuples(index=False):
        pixel = (r.y * scale[0], r.x * scale[1])
        side = "left" if geom.to_patient(*pixel)[0] > centre_x else "right"
        out.append(_fact(r, level, side, pixel, index, n, area, cfg))
    return out
