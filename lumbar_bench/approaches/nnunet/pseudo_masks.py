"""Stage 2: paint every labelled coordinate into a per-pixel pseudo-mask (automatic box labelling).

The class scheme of each series type is derived from where ``train_label_coordinates``
annotates each condition. A region is an ellipse centred on the coordinate, spanning
the gap between the two vertebrae of its level along the spine and a fraction of their
width across it; on axial slices its size comes from the same study's sagittal
vertebrae in millimetres. Vertebrae and discs found by the U-Net keep their own classes.
Blank labels and a ring around every region become nnU-Net's ``ignore`` label.

**A region belongs to its level.** On sagittal slices each region is cut to its level's
stretch of spine: halfway to the annotated coordinates of the neighbouring levels (the
same condition's, else any sagittal condition's), through patient space; the length of
that stretch also sizes the region. The vertebra U-Net's anatomy only sizes the region
where a study annotates a single level.

Every plane is the slice's own (:mod:`lumbar_bench.data.geometry`): an axial slice's level
is the disc nearest to its own plane, so blocks tilted to each disc get theirs. The discs are
placed by the study's annotated sagittal canal coordinates (:func:`level_points`), so a
vertebra U-Net that misses a disc does not renumber the axial slices.

Output folder: ``cases/<case>.npz`` (image, label), ``cases.csv``, ``coords.csv`` (one row
per coordinate with the anatomy's view of it, e.g. ``level_from_masks``) and ``series.csv``
(per-series anatomy facts), ``schemes.json``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from lumbar_bench.approaches.nnunet import anatomy as an
from lumbar_bench.approaches.nnunet.schemes import ClassScheme, derive_schemes, load_schemes, save_schemes
from lumbar_bench.approaches.nnunet.vertebrae import DISC, VERTEBRA, resize, segment
from lumbar_bench.constants import CONDITIONS, LEVELS
from lumbar_bench.core.errors import DataError
from lumbar_bench.core.progress import progress_bar
from lumbar_bench.data import geometry as geo

log = logging.getLogger(__name__)

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


@dataclass(frozen=True)
class StudyInputs:
    """What painting a study needs beyond one series: severities and sagittal context."""

    study_id: int
    severities: dict[str, int]
    descs: dict[int, str]
    sagittal: dict  # series_id -> (volume, SeriesAnatomy)
    anchors: Anchors
    ref: SeriesAnatomy | None  # the sagittal series with the most discs (places axial slices)


def working_stack(volume, size: int) -> tuple[np.ndarray, list[geo.SliceGeometry]]:  # noqa: ANN001
    """Pixels resized to ``size`` and each slice's own geometry at that size."""
    return resize(volume.pixels, size), geo.series_geometry(volume, size)


def sagittal_anatomy(volume, model, cfg: MaskConfig, slices: set[int], device: str) -> SeriesAnatomy:  # noqa: ANN001
    """Run the U-Net on the mid slice (and ``slices``) of a sagittal series; find its structures."""
    pixels, geoms = working_stack(volume, cfg.size)
    n = len(pixels)
    mid = n // 2
    wanted = sorted({mid, *(i for i in slices if 0 <= i < n)})
    seg = segment(model, pixels[wanted], device)
    labels = dict(zip(wanted, seg, strict=True))
    verts = an.structures(labels[mid], VERTEBRA, cfg.min_area)
    discs = an.structures(labels[mid], DISC, cfg.min_area)
    xs = np.array([g.position[0] for g in geoms])
    return SeriesAnatomy(
        pixels,
        np.asarray(volume.instance_numbers),
        geoms,
        mid,
        labels,
        verts,
        discs,
        an.disc_levels(discs, geoms[mid]),
        xs - np.median(xs),
    )


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


def disc_points(sa: SeriesAnatomy | None) -> dict[str, np.ndarray]:
    """Patient coordinates (mm) of each level's disc on a sagittal series' mid slice."""
    if sa is None:
        return {}
    geom = sa.geoms[sa.mid]
    return {lv: geom.to_patient(d.row, d.col) for lv, d in sa.levels.items()}


def level_points(study: StudyInputs) -> dict[str, np.ndarray]:
    """Patient point of each level's disc, to give axial slices their level.

    The study's annotated canal coordinates (sagittal, midline, at the disc) where it has at
    least two, a missing level fitted on a straight line through them; else the discs the
    U-Net found on the reference sagittal series (:func:`disc_points`).
    """
    canal = study.anchors.get(CONDITIONS[0], {})
    if len(canal) < 2:
        return disc_points(study.ref)
    index = np.array([LEVELS.index(lv) for lv in canal], dtype=np.float64)
    points = np.array(list(canal.values()))
    fit = [np.polyfit(index, points[:, j], 1) for j in range(3)]
    return {
        lv: canal[lv] if lv in canal else np.array([np.polyval(f, k) for f in fit])
        for k, lv in enumerate(LEVELS)
    }


def vertebra_width_mm(sa: SeriesAnatomy | None) -> float:
    """Median vertebra width on the mid slice in mm (NaN when none was found)."""
    if sa is None or not sa.vertebrae:
        return float("nan")
    geom = sa.geoms[sa.mid]
    widths = [an.width_across(v, np.array([1.0, 0.0])) for v in sa.vertebrae]
    return float(np.median(widths)) * geom.spacing[1]


def coordinate_anchors(coords: pd.DataFrame, sagittal: dict) -> Anchors:
    """Patient point of each annotated sagittal coordinate of a study (see :data:`Anchors`)."""
    out: Anchors = {}
    for series_id, (vol, sa) in sagittal.items():
        index = {int(n): i for i, n in enumerate(sa.instance_numbers)}
        h, w = vol.shape[1:]
        size = sa.pixels.shape[1]
        for r in coords[coords["series_id"] == series_id].itertuples(index=False):
            k = index.get(int(r.instance_number))
            if k is not None:
                point = sa.geoms[k].to_patient(r.y * size / h, r.x * size / w)
                out.setdefault(r.condition, {})[r.level] = point
    return out


def _sagittal_first(coords: pd.DataFrame, descs: dict) -> list:
    """The study's annotated series, sagittal ones first (in order of first annotation)."""
    return sorted(
        coords["series_id"].unique(), key=lambda s: not str(descs.get(s, "")).startswith("Sagittal")
    )


def _sagittal_anatomies(
    data,  # noqa: ANN001
    study_id: int,
    coords: pd.DataFrame,
    descs: dict,
    schemes: dict,
    model,  # noqa: ANN001
    cfg: MaskConfig,
    device: str,
) -> dict:
    """``series_id -> (volume, SeriesAnatomy)`` of a study's sagittal series.

    A series whose own discs give fewer than three levels borrows the levels of the
    study's best sagittal series, projected through patient space.
    """
    out = {}
    for series_id in _sagittal_first(coords, descs):
        desc = descs.get(series_id, "")
        if not desc.startswith("Sagittal") or desc not in schemes:
            continue
        try:
            vol = data.volume(study_id, series_id)
        except DataError as exc:
            log.warning("study %s series %s: %s; no pseudo-mask", study_id, series_id, exc)
            continue
        index = {int(n): i for i, n in enumerate(vol.instance_numbers)}
        rows = coords[coords["series_id"] == series_id]
        slices = {index.get(int(i), -1) for i in rows.instance_number}
        out[series_id] = (vol, sagittal_anatomy(vol, model, cfg, slices, device))
    if out:
        best = max(out.values(), key=lambda t: len(t[1].levels))[1]
        for _, sa in out.values():
            if len(sa.levels) < 3 and len(best.levels) > len(sa.levels):
                sa.levels = an.project_levels(disc_points(best), sa.geoms[sa.mid])
    return out


def _series_info(study: StudyInputs, series_id: int, desc: str, sa: SeriesAnatomy | None) -> dict:
    """``series.csv`` row: the anatomy facts QC scores."""
    info: dict = {"study_id": study.study_id, "series_id": int(series_id), "series_type": desc}
    if sa is not None:
        areas = [v.area for v in sa.vertebrae]
        n_frag = len(an.structures(sa.labels[sa.mid], VERTEBRA, 1)) - len(sa.vertebrae)
        return {
            **info,
            "n_vertebrae": len(sa.vertebrae),
            "n_discs": len(sa.discs),
            "order_ok": an.order_ok(sa.vertebrae, sa.discs, sa.geoms[sa.mid]),
            "n_fragments": n_frag,
            "area_cv": float(np.std(areas) / np.mean(areas)) if len(areas) > 1 else float("nan"),
        }
    points = disc_points(study.ref)
    return {
        **info,
        "n_vertebrae": len(study.ref.vertebrae) if study.ref else 0,
        "n_discs": len(points),
        "order_ok": bool(points),
        "n_fragments": 0,
        "area_cv": float("nan"),
    }


def _paint_axial_slice(
    study: StudyInputs,
    pixels: np.ndarray,
    geoms: list[geo.SliceGeometry],
    idx: int,
    rows: pd.DataFrame,
    scheme: ClassScheme,
    cfg: MaskConfig,
    scale: tuple[float, float],
) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Image, label and facts of one labelled axial slice."""
    geom, width = geoms[idx], vertebra_width_mm(study.ref)
    radius = cfg.axial_radius * width / geom.spacing[1] if np.isfinite(width) else cfg.size * 0.05
    label = paint_axial((cfg.size, cfg.size), rows, study.severities, scheme, cfg, scale, max(radius, 1))
    area = int((label != 0).sum())
    facts = axial_facts(rows, geom, level_points(study), idx, len(pixels), area, cfg, scale)
    return pixels[idx], label, facts


def build_series(
    study: StudyInputs,
    vol,  # noqa: ANN001
    sa: SeriesAnatomy | None,
    series_id: int,
    rows: pd.DataFrame,
    scheme: ClassScheme,
    cfg: MaskConfig,
    out: Path,
) -> tuple[list[dict], list[dict], dict]:
    """Paint every labelled slice of one series: (case rows, coordinate facts, series facts)."""
    desc = study.descs.get(series_id, "")
    info = _series_info(study, series_id, desc, sa)
    inst_index = {int(n): i for i, n in enumerate(vol.instance_numbers)}
    h, w = vol.shape[1:]
    scale = (cfg.size / h, cfg.size / w)
    pixels, geoms = (sa.pixels, sa.geoms) if sa is not None else working_stack(vol, cfg.size)
    cases, facts = [], []
    for inst, slice_rows in rows.groupby("instance_number"):
        idx = inst_index.get(int(inst))
        if idx is None:
            log.warning(
                "study %s series %s: instance %s not found; coordinate skipped",
                study.study_id,
                series_id,
                inst,
            )
            continue
        if sa is not None:
            label, slice_facts = paint_sagittal(sa, idx, slice_rows, study, scheme, cfg, scale)
            image = sa.pixels[idx]
        else:
            image, label, slice_facts = _paint_axial_slice(
                study, pixels, geoms, idx, slice_rows, scheme, cfg, scale
            )
        case_id = f"{study.study_id}_{series_id}_{int(inst)}"
        np.savez_compressed(out / "cases" / f"{case_id}.npz", image=image.astype(np.float32), label=label)
        cases.append({"case_id": case_id, **info, "instance_number": int(inst)})
        facts.extend({**info, **f} for f in slice_facts)
    return cases, facts, info


def build_study(
    data,  # noqa: ANN001
    study_id: int,
    schemes: dict[str, ClassScheme],
    model,  # noqa: ANN001
    cfg: MaskConfig,
    device: str,
    out: Path,
) -> tuple[list[dict], list[dict], list[dict]]:
    """Pseudo-masks of one study: (case rows, coordinate facts, series facts)."""
    coords = data.coordinates[data.coordinates["study_id"] == study_id]
    descs = data.series.set_index("series_id")["series_description"].to_dict()
    sag = _sagittal_anatomies(data, study_id, coords, descs, schemes, model, cfg, device)
    study = StudyInputs(
        study_id,
        {k: int(v) for k, v in data.labels.loc[study_id].items()},
        descs,
        sag,
        coordinate_anchors(coords, sag),
        max((sa for _, sa in sag.values()), key=lambda sa: len(sa.discs)) if sag else None,
    )
    cases, facts, series_rows = [], [], []
    for series_id in _sagittal_first(coords, descs):
        desc, scheme = descs.get(series_id, ""), schemes.get(descs.get(series_id, ""))
        if scheme is None or (desc.startswith("Sagittal") and series_id not in sag):
            continue
        try:
            vol, sa = sag[series_id] if series_id in sag else (data.volume(study_id, series_id), None)
        except DataError as exc:
            log.warning("study %s series %s: %s; no pseudo-mask", study_id, series_id, exc)
            continue
        rows = coords[coords["series_id"] == series_id]
        c, f, info = build_series(study, vol, sa, int(series_id), rows, scheme, cfg, out)
        cases += c
        facts += f
        series_rows.append(info)
    return cases, facts, series_rows


def build_pseudo_masks(
    data,  # noqa: ANN001
    study_ids: list[int],
    model,  # noqa: ANN001
    cfg: MaskConfig,
    out: Path,
    device: str = "cpu",
    progress: bool = False,
) -> None:
    """Write the pseudo-mask stage for ``study_ids`` into ``out``."""
    train_coords = data.coordinates[data.coordinates["study_id"].isin(study_ids)]
    schemes = derive_schemes(train_coords, data.series, cfg.merge_sides)
    save_schemes(schemes, out / "schemes.json")
    (out / "cases").mkdir()
    cases, facts, series_rows = [], [], []
    for study_id in progress_bar(study_ids, "pseudo-masks", progress):
        try:
            c, f, s = build_study(data, int(study_id), schemes, model, cfg, device, out)
        except (DataError, ValueError, IndexError) as exc:
            log.warning(
                "study %s: pseudo-masks failed (%s); study left out of segmentation training", study_id, exc
            )
            continue
        cases += c
        facts += f
        series_rows += s
    pd.DataFrame(cases).to_csv(out / "cases.csv", index=False)
    pd.DataFrame(facts).to_csv(out / "coords.csv", index=False)
    pd.DataFrame(series_rows).to_csv(out / "series.csv", index=False)
    log.info("pseudo-masks: %d cases from %d studies", len(cases), len(study_ids))


def axial_level_accuracy(coords: pd.DataFrame) -> float:
    """Fraction of subarticular coordinates on axial series whose slice got the labelled level.

    ``coords`` is a stage's ``coords.csv``; NaN when it holds no such coordinate.
    """
    if coords.empty or "series_type" not in coords.columns:
        return float("nan")
    axial = coords[
        coords["series_type"].astype(str).str.startswith("Axial")
        & coords["condition"].astype(str).str.contains("subarticular")
    ]
    if axial.empty:
        return float("nan")
    return float((axial["level_from_masks"].fillna("").astype(str) == axial["level"].astype(str)).mean())


def load_case(stage_dir: Path, case_id: str) -> tuple[np.ndarray, np.ndarray]:
    """``(image, label)`` of one case of a pseudo-mask stage folder."""
    with np.load(Path(stage_dir) / "cases" / f"{case_id}.npz") as z:
        return z["image"], z["label"]


__all__ = [
    "ClassScheme",
    "LevelSlab",
    "MaskConfig",
    "axial_level_accuracy",
    "build_pseudo_masks",
    "derive_schemes",
    "level_slab",
    "load_case",
    "load_schemes",
    "save_schemes",
]
