"""One study through the stages: its series, its located points (true or found), its crops.

A located point is a :class:`Spot`: series, slice index and pixel ``(row, col)`` in that
series' own grid. :func:`truth_spots` reads them from the label coordinates (training crops,
the localisation errors); :func:`found_spots` runs the localisers (stages 1-3). Both give one
spot per label slot, in ``LABEL_COLUMNS`` order, or None where nothing is known.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
import torch

from lumbar_bench.approaches.lsdc25d import crops as cr
from lumbar_bench.approaches.lsdc25d import levels as lvl
from lumbar_bench.approaches.lsdc25d import localize as loc
from lumbar_bench.constants import (
    CONDITIONS,
    GROUP_SERIES,
    LABEL_COLUMNS,
    LEVELS,
    SERIES_TYPES,
    condition_side,
    split_label,
)
from lumbar_bench.core.errors import DataError
from lumbar_bench.data import geometry as geo
from lumbar_bench.data.dicom import SeriesVolume, sagittal_side
from lumbar_bench.data.rsna import RSNAData

log = logging.getLogger(__name__)
AXIAL = GROUP_SERIES["subarticular"]
#: The two subarticular points of an axial slice are found at least this far apart (mm).
SIDE_GAP_MM = 8.0
#: Disc candidates on a sagittal series are kept at least this far apart (mm).
DISC_GAP_MM = 15.0
#: Disc-to-disc spacings (mm) the level decoding tries, and how far (log ratio, one standard
#: deviation) a gap may stray from the spacing: the phantom's spread is 0.08, real spines vary more.
LEVEL_SPACINGS_MM = np.geomspace(20.0, 60.0, 32)
GAP_SPREAD = 0.15


@dataclass(frozen=True)
class Spot:
    """A point on one slice of one series: pixel ``(row, col)`` in the series' own grid."""

    series_id: int
    index: int
    row: float
    col: float


@dataclass
class StudySeries:
    """The readable series of one study by type (sagittal: the first; axial: all), with geometry."""

    study_id: int
    volumes: dict[int, SeriesVolume] = field(default_factory=dict)
    by_type: dict[str, list[int]] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    _geoms: dict[int, list[geo.SliceGeometry]] = field(default_factory=dict, repr=False, compare=False)

    def geoms(self, series_id: int) -> list[geo.SliceGeometry]:
        """Each slice's own geometry in the series' own pixels (built once per series)."""
        if series_id not in self._geoms:
            self._geoms[series_id] = geo.series_geometry(self.volumes[series_id])
        return self._geoms[series_id]

    def patient(self, spot: Spot) -> np.ndarray:
        """Patient point (mm) of a spot."""
        return self.geoms(spot.series_id)[spot.index].to_patient(spot.row, spot.col)


def load_series(data: RSNAData, study_id: int) -> StudySeries:
    """Read the study's series; an unreadable one is logged (naming it) and left out."""
    out = StudySeries(study_id)
    for desc in SERIES_TYPES:
        ids = data.series_of(study_id, desc)
        for series_id in ids if desc == AXIAL else ids[:1]:
            try:
                out.volumes[series_id] = data.volume(study_id, series_id)
                out.by_type.setdefault(desc, []).append(series_id)
            except DataError as exc:
                log.warning("study %s: %s series %s unreadable (%s)", study_id, desc, series_id, exc)
        if desc not in out.by_type:
            out.missing.append(desc)
    return out


def truth_spots(study: StudySeries, coords: pd.DataFrame) -> list[Spot | None]:
    """Spots of the study's label coordinates on the series it has read, per label slot."""
    spots: list[Spot | None] = [None] * len(LABEL_COLUMNS)
    for r in coords.itertuples(index=False):
        vol = study.volumes.get(int(r.series_id))
        if vol is None:
            continue
        hit = np.flatnonzero(np.asarray(vol.instance_numbers) == int(r.instance_number))
        label = f"{r.condition}_{r.level}"
        if len(hit) and label in LABEL_COLUMNS:
            spots[LABEL_COLUMNS.index(label)] = Spot(int(r.series_id), int(hit[0]), float(r.y), float(r.x))
    return spots


@dataclass(frozen=True)
class Localizers:
    """The three trained heatmap models, by series type, and their working size."""

    models: Mapping[str, torch.nn.Module]
    size: int
    device: str = "cpu"


def _heat(study: StudySeries, desc: str, models: Localizers) -> tuple | None:
    """``(series_id, maps (n, C, S, S), indices, scale)`` of the study's first series of type ``desc``."""
    if desc not in study.by_type:
        return None
    series_id = study.by_type[desc][0]
    vol = study.volumes[series_id]
    stack = loc.working_stack(vol, models.size)
    indices = list(range(len(stack)))
    scale = (vol.shape[1] / models.size, vol.shape[2] / models.size)
    return series_id, loc.heatmaps(models.models[desc], stack, indices, models.device), indices, scale


def _spot(series_id: int, point: loc.Point | None) -> Spot | None:
    return None if point is None else Spot(series_id, point.index, point.row, point.col)


def _px(mm: float, geom: geo.SliceGeometry, scale: tuple[float, float]) -> float:
    """``mm`` in working pixels (rows) of a series whose pixels ``scale`` times smaller are ``geom``'s."""
    return mm / (geom.spacing[0] * scale[0])


def _level_centres(maps: np.ndarray, geom: geo.SliceGeometry, scale: tuple[float, float]) -> list:
    """Per level (head to foot), the working-pixel centre ``(row, col)`` of its disc.

    Disc candidates are the peaks of the level-agnostic :data:`.localize.DISC` map at least
    :data:`DISC_GAP_MM` apart; the levels take them in head-to-foot order, evenly spaced
    (:func:`.localize.regular_assignment`), scored by the disc map there and by each level's own
    map near it, so two levels never share a disc, their order holds, and a peak between two
    discs is not taken for one. With fewer candidates than levels, each level's own peak.
    """
    radius = _px(DISC_GAP_MM, geom, scale)
    levels, disc = maps[:, : len(LEVELS)], maps[:, len(LEVELS) :]
    found = loc.candidates(disc, radius, 3 * len(LEVELS))
    if len(found) < len(LEVELS):
        own = [levels[:, ch].max(0) for ch in range(len(LEVELS))]
        return [np.unravel_index(int(np.argmax(m)), m.shape) for m in own]
    found.sort(key=lambda rc: -geom.superior(rc[0] * scale[0], rc[1] * scale[1]))
    near = np.array(
        [[loc.value_near(levels[:, ch], r, c, radius) for r, c in found] for ch in range(len(LEVELS))]
    )
    sharp = np.array([loc.value_near(disc[:, 0], r, c, 1.0) for r, c in found])
    mm = np.array(found, dtype=np.float64) * np.multiply(geom.spacing, scale)
    scores = np.log(near + 1e-4) + np.log(sharp + 1e-4)
    return [found[k] for k in loc.regular_assignment(scores, mm, LEVEL_SPACINGS_MM, GAP_SPREAD)]


def _locate_spinal(study: StudySeries, models: Localizers) -> dict[tuple[str, str], Spot | None]:
    """Stage 1 on sagittal T2/STIR: each level's spinal point, the disc-map peak its level took."""
    if (t2 := _heat(study, GROUP_SERIES["spinal"], models)) is None:
        return {}
    series_id, maps, indices, scale = t2
    geom = study.geoms(series_id)[len(indices) // 2]
    disc = maps[:, len(LEVELS)]
    return {
        (CONDITIONS[0], lv): _spot(series_id, loc.peak_near(disc, indices, scale, r, c, 1.0))
        for lv, (r, c) in zip(LEVELS, _level_centres(maps, geom, scale), strict=True)
    }


def _locate_sagittal(study: StudySeries, models: Localizers) -> dict[tuple[str, str], Spot | None]:
    """Stage 1: spinal points on sagittal T2/STIR, foraminal points on T1 split into sides by patient x.

    Each level's foramina are searched within half a level spacing of its spinal point, projected
    into the T1 series; without spinal points, the T1 levels are decoded in order like the T2 ones.
    """
    out = _locate_spinal(study, models)
    if (t1 := _heat(study, GROUP_SERIES["foraminal"], models)) is None:
        return out
    series_id, maps, indices, scale = t1
    geom = study.geoms(series_id)[len(indices) // 2]
    x = sagittal_side(study.volumes[series_id])
    spinal = {lv: study.patient(s) for (_, lv), s in out.items() if s is not None}
    midline = float(np.mean([p[0] for p in spinal.values()])) if spinal else float(np.nanmedian(x))
    if len(spinal) == len(LEVELS):
        radius = _px(cr.level_spacing(spinal) / 2, geom, scale)
        centres = [np.divide(geom.to_pixel(spinal[lv]), scale) for lv in LEVELS]
    else:
        radius = _px(DISC_GAP_MM, geom, scale)
        centres = _level_centres(maps, geom, scale)
    for ch, (lv, (r, c)) in enumerate(zip(LEVELS, centres, strict=True)):
        left, right = loc.split_sides(maps[:, ch], indices, x, midline, scale, near=(r, c, radius))
        out[(CONDITIONS[1], lv)], out[(CONDITIONS[2], lv)] = _spot(series_id, left), _spot(series_id, right)
    return out


def level_points(
    study: StudySeries, sagittal: Mapping[tuple[str, str], Spot | None]
) -> dict[str, np.ndarray]:
    """Patient point per level from the found sagittal spots (see :func:`.levels.level_points`)."""
    found = {k: study.patient(s) for k, s in sagittal.items() if s is not None}
    spinal = {lv: p for (c, lv), p in found.items() if c == CONDITIONS[0]}
    foraminal = {k: p for k, p in found.items() if k[0] != CONDITIONS[0]}
    return lvl.level_points(spinal, foraminal)


def _locate_axial(
    study: StudySeries, points: dict[str, np.ndarray], models: Localizers
) -> dict[tuple[str, str], Spot]:
    """Stages 2 and 3: each level's axial slice by geometry, then its two subarticular points.

    The two highest peaks at least :data:`SIDE_GAP_MM` apart; the one further to the patient's
    left (larger patient x) is the left point.
    """
    geoms = {sid: study.geoms(sid) for sid in study.by_type.get(AXIAL, [])}
    stacks: dict[int, np.ndarray] = {}
    out: dict[tuple[str, str], Spot] = {}
    for lv, slot in lvl.axial_slots(geoms, points).items():
        vol = study.volumes[slot.series_id]
        if slot.series_id not in stacks:
            stacks[slot.series_id] = loc.working_stack(vol, models.size)
        heat = loc.heatmaps(models.models[AXIAL], stacks[slot.series_id], [slot.index], models.device)[0, 0]
        scale = (vol.shape[1] / models.size, vol.shape[2] / models.size)
        radius = SIDE_GAP_MM / (vol.pixel_spacing[1] * scale[1])
        spots = [
            Spot(slot.series_id, slot.index, r * scale[0], c * scale[1])
            for r, c, _ in loc.two_peaks(heat, radius)
        ]
        spots.sort(key=lambda sp: -geoms[slot.series_id][slot.index].to_patient(sp.row, sp.col)[0])
        out[(CONDITIONS[3], lv)], out[(CONDITIONS[4], lv)] = spots
    return out


def found_spots(study: StudySeries, models: Localizers) -> tuple[list[Spot | None], dict[str, np.ndarray]]:
    """Stages 1-3 for one study: a spot per label slot (None where none was found) and the level points."""
    sagittal = _locate_sagittal(study, models)
    points = level_points(study, sagittal)
    found = {**sagittal, **_locate_axial(study, points, models)}
    return [found.get(split_label(lab)) for lab in LABEL_COLUMNS], points


def spot_points(study: StudySeries, spots: list[Spot | None]) -> dict[str, np.ndarray]:
    """Level points from the spinal slots of ``spots`` (the true ones, for training crops)."""
    sagittal = {split_label(lab): s for lab, s in zip(LABEL_COLUMNS, spots, strict=True) if s is not None}
    return level_points(study, {k: v for k, v in sagittal.items() if k[0] in CONDITIONS[:3]})


def study_crops(
    study: StudySeries,
    spots: list[Spot | None],
    spacing_mm: float,
    window: float,
    depth: int,
    size: int,
    flip: bool,
    move: Jitter | Shift | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Stage 4: ``(crops (25, Z, S, S), valid (25,))`` around ``spots``, each moved by ``move`` if given."""
    z = 2 * depth + 1
    out = np.zeros((len(LABEL_COLUMNS), z, size, size), dtype=np.float32)
    valid = np.zeros(len(LABEL_COLUMNS), dtype=bool)
    for i, (lab, spot) in enumerate(zip(LABEL_COLUMNS, spots, strict=True)):
        if spot is None:
            continue
        vol = study.volumes[spot.series_id]
        sagittal = spot.series_id not in study.by_type.get(AXIAL, [])
        order = cr.slice_order(vol, sagittal)
        right = condition_side(split_label(lab)[0]) == "right"
        spec = cr.CropSpec(spot.index, spot.row, spot.col, window * spacing_mm / 2, mirror=flip and right)
        if move is not None:
            spec = move.move(spec, order, vol.pixel_spacing)
        out[i] = cr.crop(vol, order, spec, depth, size, sagittal)
        valid[i] = True
    return out, valid


@dataclass(frozen=True)
class Shift:
    """Move each crop in its plane by ``rows_mm`` along the rows and ``cols_mm`` along the columns."""

    rows_mm: float
    cols_mm: float

    def move(self, spec: cr.CropSpec, order: np.ndarray, spacing: tuple[float, float]) -> cr.CropSpec:
        """``spec`` moved in its plane (``order`` unused: the slice stays)."""
        row, col = spec.row + self.rows_mm / spacing[0], spec.col + self.cols_mm / spacing[1]
        return replace(spec, row=row, col=col)


def shifts(mm: float) -> list[Shift]:
    """Test-time augmentation: the 8 in-plane neighbours ``mm`` away (none for 0)."""
    steps = (-mm, 0.0, mm)
    return [Shift(r, c) for r in steps for c in steps if (r, c) != (0.0, 0.0)] if mm > 0 else []


@dataclass(frozen=True)
class Jitter:
    """A training aid: move each crop by up to ``slices`` slices and ``mm`` millimetres in plane."""

    slices: int
    mm: float
    rng: np.random.Generator

    def move(self, spec: cr.CropSpec, order: np.ndarray, spacing: tuple[float, float]) -> cr.CropSpec:
        """``spec`` moved by a random slice offset and a random in-plane offset."""
        pos = int(np.flatnonzero(order == spec.index)[0]) + int(
            self.rng.integers(-self.slices, self.slices + 1)
        )
        index = int(order[np.clip(pos, 0, len(order) - 1)])
        shift = Shift(*self.rng.uniform(-self.mm, self.mm, size=2))
        return shift.move(replace(spec, index=index), order, spacing)
