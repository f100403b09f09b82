"""Stage 2: paint every labelled coordinate into a per-pixel pseudo-mask (automatic box labelling).

The class scheme of each series type is derived from where ``train_label_coordinates``
annotates each condition. A region is an ellipse centred on the coordinate, spanning
the gap between the two vertebrae of its level along the spine and a fraction of their
width across it; on axial slices its size comes from the same study's sagittal
vertebrae in millimetres. Vertebrae and discs found by the U-Net keep their own classes.
Blank labels and a ring around every region become nnU-Net's ``ignore`` label.

Output folder: ``cases/<case>.npz`` (image, label), ``cases.csv``, ``coords.csv`` (one row
per coordinate with the anatomy's view of it) and ``series.csv`` (per-series anatomy facts),
``schemes.json``.
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
from lumbar_bench.errors import DataError
from lumbar_bench.progress import progress_bar

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MaskConfig:
    """Working size and the shape of painted regions."""

    size: int = 128
    along: float = 0.5
    across: float = 0.45
    ignore_ring: int = 1
    min_area: int = 6
    #: Axial region radius as a fraction of the sagittal vertebra width (in mm).
    axial_radius: float = 0.25


@dataclass
class SeriesAnatomy:
    """A sagittal series at working size with U-Net anatomy on its reference (mid) slice."""

    pixels: np.ndarray  # (n, S, S)
    instance_numbers: np.ndarray
    geoms: list[an.SliceGeometry]
    mid: int
    labels: dict[int, np.ndarray]  # slice index -> anatomy classes
    vertebrae: list[an.Structure]
    discs: list[an.Structure]
    levels: dict[str, an.Structure]
    side_x: np.ndarray  # patient x of each slice minus the series median (left > 0)


def working_stack(volume, size: int) -> tuple[np.ndarray, list[an.SliceGeometry]]:  # noqa: ANN001
    """Pixels resized to ``size`` and the geometry of each slice."""
    shape = volume.pixels.shape[1:]
    geoms = [
        an.SliceGeometry.of(p, volume.orientation, volume.pixel_spacing, shape, size)
        for p in volume.positions
    ]
    return resize(volume.pixels, size), geoms


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


def paint_sagittal(
    sa: SeriesAnatomy,
    index: int,
    rows: pd.DataFrame,
    severities: dict[str, int],
    scheme: ClassScheme,
    cfg: MaskConfig,
    scale: tuple[float, float],
) -> tuple[np.ndarray, list]:
    """Label map of slice ``index`` and one fact dict per coordinate painted on it."""
    size = cfg.size
    label = np.zeros((size, size), dtype=np.uint8)
    anat = sa.labels[index]
    label[anat == VERTEBRA] = scheme.anatomy_index("vertebra")
    label[anat == DISC] = scheme.anatomy_index("disc")
    verts = an.structures(anat, VERTEBRA, cfg.min_area)
    discs = an.structures(anat, DISC, cfg.min_area)
    geom = sa.geoms[index]
    if len(verts) < 2:  # parasagittal slices show little bone: borrow the mid slice's in-plane anatomy
        verts, discs = sa.vertebrae, sa.discs
    levels = an.disc_levels(discs, geom)
    if len(levels) < 3:  # too few discs found here: the series' (possibly borrowed) levels
        levels = sa.levels
    # typical vertebra size (sqrt of the median body area) bounds the region
    cap = 0.6 * float(np.sqrt(np.median([v.area for v in verts]))) if verts else size * 0.05
    lesion, ignore = np.zeros_like(label), np.zeros(label.shape, dtype=bool)
    facts = []
    for r in rows.itertuples(index=False):
        row, col = r.y * scale[0], r.x * scale[1]
        found = an.nearest_level(levels, row, col)
        disc = levels.get(r.level) or (levels.get(found) if found else None)
        below, above = an.bracketing(verts, disc, geom) if disc is not None else (None, None)
        axis, a, b = an.region_axes(disc, below, above, cfg.along, cfg.across, fallback=size * 0.05, cap=cap)
        region = an.ellipse(label.shape, (row, col), axis, a, b)
        sev = severities.get(f"{r.condition}_{r.level}", -1)
        if sev < 0 or r.condition not in scheme.conditions:
            ignore |= region
        else:
            lesion[region] = scheme.lesion(r.condition, sev)
        ignore |= an.ring(region, cfg.ignore_ring)
        side = "left" if sa.side_x[index] > 0 else "right" if sa.side_x[index] < 0 else "mid"
        facts.append(
            {
                "condition": r.condition,
                "level": r.level,
                "instance_number": r.instance_number,
                "level_from_masks": found or "",
                "side_from_slice": side,
                "inside": bool(0 <= row < size and 0 <= col < size),
                "slice_index": index,
                "n_slices": len(sa.pixels),
                "region_area": int(region.sum()),
                "vertebra_area": float(np.median([v.area for v in verts])) if verts else 0.0,
            }
        )
    label[ignore] = scheme.ignore
    label[lesion > 0] = lesion[lesion > 0]
    return label, facts


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
        sev = severities.get(f"{r.condition}_{r.level}", -1)
        if sev < 0 or r.condition not in scheme.conditions:
            ignore |= region
        else:
            lesion[region] = scheme.lesion(r.condition, sev)
        ignore |= an.ring(region, cfg.ignore_ring)
    label[ignore] = scheme.ignore
    label[lesion > 0] = lesion[lesion > 0]
    return label


def disc_points(sa: SeriesAnatomy | None) -> dict[str, np.ndarray]:
    """Patient coordinates (mm) of each level's disc on a sagittal series' mid slice."""
    if sa is None:
        return {}
    geom = sa.geoms[sa.mid]
    return {lv: geom.to_patient(d.row, d.col) for lv, d in sa.levels.items()}


def axial_level(points: dict[str, np.ndarray], geom: an.SliceGeometry) -> str:
    """Return the level whose disc lies closest to the axial slice's plane ("" when unknown)."""
    if not points:
        return ""
    normal = np.cross(geom.row_dir, geom.col_dir)
    return min(points, key=lambda lv: abs(float(np.dot(points[lv] - geom.position, normal))))


def vertebra_width_mm(sa: SeriesAnatomy | None) -> float:
    """Median vertebra width on the mid slice in mm (NaN when none was found)."""
    if sa is None or not sa.vertebrae:
        return float("nan")
    geom = sa.geoms[sa.mid]
    widths = [an.width_across(v, np.array([1.0, 0.0])) for v in sa.vertebrae]
    return float(np.median(widths)) * geom.spacing[1]


def _sagittal_anatomies(
    data,
    study_id: int,
    order: list,
    descs: dict,
    coords: pd.DataFrame,  # noqa: ANN001
    schemes: dict,
    model,
    cfg: MaskConfig,
    device: str,
) -> dict:  # noqa: ANN001
    """``series_id -> (volume, SeriesAnatomy)`` of a study's sagittal series.

    A series whose own discs give fewer than three levels borrows the levels of the
    study's best sagittal series, projected through patient space.
    """
    out = {}
    for series_id in order:
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


def build_study(
    data,
    study_id: int,
    schemes: dict[str, ClassScheme],
    model,
    cfg: MaskConfig,  # noqa: ANN001
    device: str,
    out: Path,
) -> tuple[list[dict], list[dict], list[dict]]:
    """Pseudo-masks of one study: (case rows, coordinate facts, series facts)."""
    coords = data.coordinates[data.coordinates["study_id"] == study_id]
    sev_row = data.labels.loc[study_id]
    severities = {k: int(v) for k, v in sev_row.items()}
    descs = data.series.set_index("series_id")["series_description"].to_dict()
    cases, facts, series_rows = [], [], []
    order = sorted(
        coords["series_id"].unique(), key=lambda s: not str(descs.get(s, "")).startswith("Sagittal")
    )
    sag = _sagittal_anatomies(data, study_id, order, descs, coords, schemes, model, cfg, device)
    ref = max(sag.values(), key=lambda t: len(t[1].discs))[1] if sag else None
    for series_id in order:
        desc = descs.get(series_id, "")
        scheme = schemes.get(desc)
        rows = coords[coords["series_id"] == series_id]
        if scheme is None:
            continue
        try:
            vol, sa = sag[series_id] if series_id in sag else (data.volume(study_id, series_id), None)
        except DataError as exc:
            log.warning("study %s series %s: %s; no pseudo-mask", study_id, series_id, exc)
            continue
        if desc.startswith("Sagittal") and sa is None:
            continue
        inst_index = {int(n): i for i, n in enumerate(vol.instance_numbers)}
        h, w = vol.pixels.shape[1:]
        scale = (cfg.size / h, cfg.size / w)
        info = {"study_id": study_id, "series_id": int(series_id), "series_type": desc}
        if desc.startswith("Sagittal"):
            geom = sa.geoms[sa.mid]
            areas = [v.area for v in sa.vertebrae]
            n_frag = len(an.structures(sa.labels[sa.mid], VERTEBRA, 1)) - len(sa.vertebrae)
            info.update(
                n_vertebrae=len(sa.vertebrae),
                n_discs=len(sa.discs),
                order_ok=an.order_ok(sa.vertebrae, sa.discs, geom),
                n_fragments=n_frag,
                area_cv=float(np.std(areas) / np.mean(areas)) if len(areas) > 1 else float("nan"),
            )
        else:
            pixels, geoms = working_stack(vol, cfg.size)
            width = vertebra_width_mm(ref)
            points = disc_points(ref)
            info.update(
                n_vertebrae=len(ref.vertebrae) if ref else 0,
                n_discs=len(points),
                order_ok=bool(points),
                n_fragments=0,
                area_cv=float("nan"),
            )
        series_rows.append(info)
        for inst, slice_rows in rows.groupby("instance_number"):
            idx = inst_index.get(int(inst))
            if idx is None:
                log.warning(
                    "study %s series %s: instance %s not found; coordinate skipped", study_id, series_id, inst
                )
                continue
            if desc.startswith("Sagittal"):
                label, slice_facts = paint_sagittal(sa, idx, slice_rows, severities, scheme, cfg, scale)
                image = sa.pixels[idx]
            else:
                geom = geoms[idx]
                radius = cfg.axial_radius * width / geom.spacing[1] if np.isfinite(width) else cfg.size * 0.05
                label = paint_axial(
                    (cfg.size, cfg.size), slice_rows, severities, scheme, cfg, scale, max(radius, 1)
                )
                image = pixels[idx]
                lv = axial_level(points, geom)
                centre_x = geom.to_patient(cfg.size / 2, cfg.size / 2)[0]
                slice_facts = [
                    {
                        "condition": r.condition,
                        "level": r.level,
                        "instance_number": int(inst),
                        "level_from_masks": lv,
                        "side_from_slice": "left"
                        if geom.to_patient(r.y * scale[0], r.x * scale[1])[0] > centre_x
                        else "right",
                        "inside": bool(0 <= r.y * scale[0] < cfg.size and 0 <= r.x * scale[1] < cfg.size),
                        "slice_index": idx,
                        "n_slices": len(pixels),
                        "region_area": int((label != 0).sum()),
                        "vertebra_area": float("nan"),
                    }
                    for r in slice_rows.itertuples(index=False)
                ]
            case_id = f"{study_id}_{series_id}_{int(inst)}"
            np.savez_compressed(out / "cases" / f"{case_id}.npz", image=image.astype(np.float32), label=label)
            cases.append({"case_id": case_id, **info, "instance_number": int(inst)})
            facts.extend({**info, **f} for f in slice_facts)
    return cases, facts, series_rows


def build_pseudo_masks(
    data,
    study_ids: list[int],
    model,
    cfg: MaskConfig,
    out: Path,  # noqa: ANN001
    device: str = "cpu",
    progress: bool = False,
) -> None:
    """Write the pseudo-mask stage for ``study_ids`` into ``out``."""
    train_coords = data.coordinates[data.coordinates["study_id"].isin(study_ids)]
    schemes = derive_schemes(train_coords, data.series)
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


def load_case(stage_dir: Path, case_id: str) -> tuple[np.ndarray, np.ndarray]:
    """``(image, label)`` of one case of a pseudo-mask stage folder."""
    with np.load(Path(stage_dir) / "cases" / f"{case_id}.npz") as z:
        return z["image"], z["label"]


__all__ = [
    "ClassScheme",
    "MaskConfig",
    "build_pseudo_masks",
    "derive_schemes",
    "load_case",
    "load_schemes",
    "save_schemes",
]
