"""Stage 2: paint every labelled coordinate into a per-pixel pseudo-mask (automatic box labelling).

The class scheme of each series type is derived from where ``train_label_coordinates``
annotates each condition (:mod:`.schemes`). Study by study, the vertebra U-Net finds the
anatomy of each sagittal series (:func:`sagittal_anatomy`), the annotated coordinates are placed
in patient space, and every labelled slice of each series is painted (:mod:`.painting`: the
regions, their classes and the ignore label).

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
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from lumbar_bench.approaches.nnunet import anatomy as an
from lumbar_bench.approaches.nnunet.painting import (
    Anchors,
    LevelSlab,
    MaskConfig,
    Sagittal,
    SeriesAnatomy,
    StudyInputs,
    axial_facts,
    level_slab,
    paint_axial,
    paint_sagittal,
)
from lumbar_bench.approaches.nnunet.schemes import ClassScheme, derive_schemes, load_schemes, save_schemes
from lumbar_bench.approaches.nnunet.vertebrae import DISC, VERTEBRA, resize, segment
from lumbar_bench.constants import CONDITIONS, LEVELS
from lumbar_bench.core.errors import DataError
from lumbar_bench.core.progress import progress_bar
from lumbar_bench.data import geometry as geo
from lumbar_bench.data.dicom import SeriesVolume
from lumbar_bench.data.rsna import RSNAData

if TYPE_CHECKING:  # torch stays out of the stage's import (it is imported when the U-Net runs)
    from torch import nn

log = logging.getLogger(__name__)


def working_stack(volume: SeriesVolume, size: int) -> tuple[np.ndarray, list[geo.SliceGeometry]]:
    """Pixels resized to ``size`` and each slice's own geometry at that size."""
    return resize(volume.pixels, size), geo.series_geometry(volume, size)


def sagittal_anatomy(
    volume: SeriesVolume, model: nn.Module, cfg: MaskConfig, slices: set[int], device: str
) -> SeriesAnatomy:
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


def coordinate_anchors(coords: pd.DataFrame, sagittal: Sagittal) -> Anchors:
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
    data: RSNAData,
    study_id: int,
    coords: pd.DataFrame,
    descs: dict,
    schemes: dict,
    model: nn.Module,
    cfg: MaskConfig,
    device: str,
) -> Sagittal:
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
    vol: SeriesVolume,
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
    data: RSNAData,
    study_id: int,
    schemes: dict[str, ClassScheme],
    model: nn.Module,
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
    data: RSNAData,
    study_ids: list[int],
    model: nn.Module,
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
    "SeriesAnatomy",
    "StudyInputs",
    "axial_level_accuracy",
    "build_pseudo_masks",
    "derive_schemes",
    "level_slab",
    "load_case",
    "load_schemes",
    "paint_sagittal",
    "save_schemes",
    "working_stack",
]
