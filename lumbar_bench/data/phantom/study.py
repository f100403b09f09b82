"""One synthetic study: patient, series, DICOM files, truth masks and label coordinates."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lumbar_bench.constants import CONDITION_TITLES, CONDITIONS, LABEL_COLUMNS, LEVEL_TITLES, LEVELS
from lumbar_bench.data.phantom import geometry, imaging, pathology
from lumbar_bench.data.phantom.anatomy import Spine, sample_spine
from lumbar_bench.data.phantom.cohort import StudyLabels
from lumbar_bench.data.phantom.dicom_writer import SeriesInfo, uid, write_series
from lumbar_bench.data.phantom.drawing import (
    C_CANAL,
    C_LEFT_FORAMEN,
    C_LEFT_RECESS,
    C_RIGHT_FORAMEN,
    C_RIGHT_RECESS,
)
from lumbar_bench.data.phantom.render import draw_stack, mark_partial, partial_vertebrae

HARD_KINDS: tuple[str, ...] = ("low_snr", "ghosting", "transitional", "tilt", "partial_fov")
PART_CODES = {"train": 0, "test": 1, "spider": 2}


@dataclass(frozen=True)
class StudyPlan:
    """What to generate for one study, fixed before any image is drawn.

    ``layout`` is one of ``cohort.LAYOUT_KINDS`` or ``""`` (one series of each type);
    ``labels`` come from the cohort draw ``cohort_draw``.
    """

    part: str
    index: int
    study_id: int
    series_ids: tuple[int, ...]
    labels: StudyLabels
    layout: str = ""
    hard: str = ""
    cohort_draw: int = 0


@dataclass(frozen=True)
class StudyResult:
    """What one generated study contributes to the CSV files."""

    study_id: int
    true_codes: np.ndarray
    observed: np.ndarray
    observation_probs: np.ndarray
    series: list[tuple[int, str]]
    coordinates: list[tuple[int, int, int, str, str, float, float]]
    images: int
    hard: str
    layout: str


@dataclass(frozen=True)
class Series:
    """One series to draw: its id, geometry and contrast."""

    series_id: int
    stack: geometry.Stack
    contrast: str


def make_study(out: Path, truth: Path | None, plan: StudyPlan, *, seed: int, size: int) -> StudyResult:
    """Generate one study under ``out/{part}_images`` (and its masks under ``truth``)."""
    rng = np.random.default_rng([seed, PART_CODES[plan.part], plan.index])
    labels = plan.labels
    transitional = str(rng.choice(["sacralised", "lumbarised"])) if plan.hard == "transitional" else ""
    spine = sample_spine(
        rng,
        pathology.severity_grid(labels.amounts),
        labels.degeneration,
        transitional=transitional,
        scoliosis=plan.hard == "tilt",
    )
    series = _plan_series(rng, spine, plan, size)
    images = 0
    for number, ser in enumerate(series, start=1):
        images += _write(
            out / f"{plan.part}_images" / str(plan.study_id),
            truth,
            rng,
            spine,
            ser,
            plan,
            seed=seed,
            series_number=number,
        )
    observed = labels.observed
    coords = _coordinates(rng, spine, series, plan.study_id, observed) if plan.part == "train" else []
    series_rows = [(s.series_id, s.stack.description) for s in series]
    return StudyResult(
        plan.study_id,
        labels.true_codes,
        observed,
        labels.observation_probs,
        series_rows,
        coords,
        images,
        plan.hard,
        plan.layout,
    )


def _plan_series(rng: np.random.Generator, spine: Spine, plan: StudyPlan, size: int) -> list[Series]:
    """Geometry of each series of the study (before the irregular ones are dropped)."""
    fov = rng.uniform(230.0, 300.0)
    l3 = float(spine.vert_center[2])
    centre = spine.point(l3, 0.0, 0.6 * spine.canal_v) + rng.uniform([-3, -15, -15], [3, 15, 15])
    if plan.hard == "partial_fov":
        top = spine.point(float(spine.vert_center[4]), 0.0, 0.0)[2] + rng.uniform(-3.0, 5.0)
        centre[2] = top - 0.5 * fov
    sagittal_types = ["Sagittal T1", "Sagittal T2/STIR"] + ["Sagittal T1"] * (
        plan.layout == "two_sagittal_t1"
    )
    stacks = [_sagittal(rng, d, centre, fov, size, repeat=i >= 2) for i, d in enumerate(sagittal_types)]
    contrasts = ["T1", "STIR" if rng.random() < 0.25 else "T2"] + ["T1"] * (len(stacks) - 2)
    axial = _axial_series(rng, spine, size, plan.layout)
    stacks += axial
    contrasts += ["T2"] * len(axial)
    if plan.layout == "missing_series":
        drop = int(rng.choice(3, p=[0.4, 0.3, 0.3]))
        drop = drop if drop < 2 else len(stacks) - len(axial)
        del stacks[drop], contrasts[drop]
    ids = plan.series_ids[: len(stacks)]
    return [Series(i, st, c) for i, st, c in zip(ids, stacks, contrasts, strict=True)]


def _sagittal(
    rng: np.random.Generator, description: str, centre: np.ndarray, fov: float, size: int, repeat: bool
) -> geometry.Stack:
    """One sagittal series around ``centre`` (moved a little for a repeated series)."""
    spacing = rng.uniform(3.5, 4.5)
    n = max(int(rng.integers(12, 21)), int(np.ceil(44.0 / spacing)) + 1)
    if repeat:
        centre = centre + rng.uniform([-2, -8, -8], [2, 8, 8])
    return geometry.sagittal(rng, description, centre, fov=fov, shape=_shape(rng, size), n=n, spacing=spacing)


def _axial_series(rng: np.random.Generator, spine: Spine, size: int, layout: str) -> list[geometry.Stack]:
    """The study's axial stacks: one, or several as the layout says.

    ``two_axial_repeat`` repeats the whole stack with the other geometry (blocks tilted to
    each disc, or one untilted stack); ``two_axial_ranges`` splits the levels into two
    ranges that overlap by one level; ``per_disc`` is three or four tilted stacks, each
    over its own discs.
    """
    continuous = bool(rng.random() < 0.4)
    if layout == "two_axial_repeat":
        return [
            _axial(rng, spine, size, continuous=continuous),
            _axial(rng, spine, size, continuous=not continuous),
        ]
    if layout == "two_axial_ranges":
        overlap = int(rng.integers(1, len(LEVELS) - 1))
        groups = [list(range(overlap + 1)), list(range(overlap, len(LEVELS)))]
        return [_axial(rng, spine, size, continuous=False, levels=g) for g in groups]
    if layout == "per_disc":
        groups = np.array_split(np.arange(len(LEVELS)), int(rng.choice([3, 4])))
        return [_axial(rng, spine, size, continuous=False, levels=g.tolist(), tilted=True) for g in groups]
    return [_axial(rng, spine, size, continuous=continuous)]


def _shape(rng: np.random.Generator, size: int) -> tuple[int, int]:
    """``(size, size)`` mostly, sometimes ``(size, size +/- 16)``."""
    if rng.random() < 0.15 and size >= 48:
        return size, size + int(rng.choice([-16, 16]))
    return size, size


def _axial(
    rng: np.random.Generator,
    spine: Spine,
    size: int,
    continuous: bool,
    levels: list[int] | None = None,
    tilted: bool | None = None,
) -> geometry.Stack:
    """Make a per-level axial block series (over ``levels``, default all) or a continuous stack."""
    fov = rng.uniform(160.0, 220.0)
    shift = np.array([rng.uniform(-8, 8), rng.uniform(-8, 8), 0.0])
    centre_v = 0.5 * spine.canal_v
    if continuous:
        return geometry.axial_continuous(
            rng, spine, centre_v, shift, fov=fov, shape=(size, size), n=int(rng.integers(20, 29))
        )
    per_level = [int(k) for k in rng.integers(3, 6, len(LEVELS))]
    per_level = [k if levels is None or lv in levels else 0 for lv, k in enumerate(per_level)]
    tilt = rng.random() < 0.75
    return geometry.axial_blocks(
        rng,
        spine,
        centre_v,
        shift,
        fov=fov,
        shape=(size, size),
        per_level=per_level,
        spacing=rng.uniform(3.5, 4.5),
        tilted=tilt if tilted is None else tilted,
    )


def _write(
    folder: Path,
    truth: Path | None,
    rng: np.random.Generator,
    spine: Spine,
    ser: Series,
    plan: StudyPlan,
    *,
    seed: int,
    series_number: int,
) -> int:
    """Draw, render and write one series; its truth masks too when ``truth`` is given."""
    maps = draw_stack(spine, ser.stack)
    sagittal = ser.stack.description.startswith("Sagittal")
    low_snr = plan.hard == "low_snr"
    acq = imaging.Acquisition(
        contrast=ser.contrast,
        noise=rng.uniform(0.10, 0.16) if low_snr else rng.uniform(0.02, 0.05),
        ghost=rng.uniform(0.12, 0.25) if plan.hard == "ghosting" else 0.0,
        blur=rng.uniform(0.4, 0.8),
        posterior_axis=1 if sagittal else 0,
    )
    img = imaging.render(maps.cls, imaging.lookup(rng, spine, ser.contrast), acq, rng)
    info = SeriesInfo(
        study_id=plan.study_id,
        series_id=ser.series_id,
        series_number=series_number,
        study_uid=uid("study", seed, plan.study_id),
        frame_uid=uid("frame", seed, plan.study_id),
        contrast=ser.contrast,
        slope=float(rng.choice([1.0, 1.0, 2.0])),
        intercept=float(rng.choice([0.0, 0.0, -100.0])),
        bits_stored=int(rng.choice([12, 16])),
        field_strength=float(rng.choice([1.5, 3.0])),
    )
    stored = imaging.to_stored(img, rng.uniform(500.0, 1500.0), info.slope, info.intercept, info.bits_stored)
    n = write_series(folder / str(ser.series_id), ser.stack, stored, info)
    if truth is not None:
        anat = mark_partial(maps.anat, partial_vertebrae(spine, ser.stack)) if sagittal else maps.anat
        target = truth / "masks" / str(plan.study_id)
        target.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(
            target / f"{ser.series_id}.npz",
            instance_numbers=ser.stack.instance_numbers,
            anatomy=anat,
            lesion=maps.les,
        )
    return n


def _coordinates(
    rng: np.random.Generator, spine: Spine, series: list[Series], study_id: int, observed: np.ndarray
) -> list[tuple[int, int, int, str, str, float, float]]:
    """One ``train_label_coordinates.csv`` row per labelled condition x level with its series."""
    by_desc: dict[str, list[Series]] = {}
    for ser in series:
        by_desc.setdefault(ser.stack.description, []).append(ser)
    rows = []
    for j in range(len(LABEL_COLUMNS)):
        if observed[j] < 0:
            continue
        c, lv = divmod(j, len(LEVELS))
        point, desc = _target(spine, c, lv)
        candidates = by_desc.get(desc, [])
        if not candidates:
            continue
        ser, k = min(((s, *s.stack.nearest(point)) for s in candidates), key=lambda t: t[2])[:2]
        x, y = ser.stack.project(k, point)
        jx, jy = np.clip(rng.normal(0.0, 0.8, 2), -2.0, 2.0)
        rows_, cols_ = ser.stack.shape
        x, y = float(np.clip(x + jx, 0, cols_ - 1)), float(np.clip(y + jy, 0, rows_ - 1))
        rows.append(
            (
                study_id,
                ser.series_id,
                int(ser.stack.instance_numbers[k]),
                CONDITION_TITLES[CONDITIONS[c]],
                LEVEL_TITLES[LEVELS[lv]],
                round(x, 3),
                round(y, 3),
            )
        )
    return rows


def _target(spine: Spine, condition: int, level: int) -> tuple[np.ndarray, str]:
    """Return the point a radiologist clicks for a condition at a level, and its series type."""
    d = spine.level_disc(level)
    s = float(spine.disc_center[d])
    if condition == C_CANAL:
        return spine.point(s, 0.0, spine.canal_v), "Sagittal T2/STIR"
    if condition in (C_LEFT_FORAMEN, C_RIGHT_FORAMEN):
        side = 1.0 if condition == C_LEFT_FORAMEN else -1.0
        sc, _, vc, _ = spine.foramen_centre(d)
        return spine.point(sc, side * (spine.canal_a + 6.0), vc), "Sagittal T1"
    side = 1.0 if condition == C_LEFT_RECESS else -1.0
    assert condition in (C_LEFT_RECESS, C_RIGHT_RECESS)
    cu, cv = spine.recess_centre()
    return spine.point(s, side * cu, cv), "Axial T2"
