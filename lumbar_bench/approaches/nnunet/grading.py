"""Stage 5: predicted class probabilities on a study's relevant slices -> 25 x 3 grades.

Relevant slices are learnt from the training annotations: for every sagittal condition,
the median relative slice position of its annotated slices (mid-sagittal T2 for the
canal, one parasagittal T1 slice per side for the foramina). Levels come from the
discs the model itself predicts on the mid slice, counted from the bottom; each
pixel belongs to the level of its nearest disc. Axial slices are matched to levels by
projecting those discs into patient space, onto each slice's own plane (blocks tilted to
each disc included; :mod:`lumbar_bench.data.geometry`). Within a level's region, the mass of the
condition's three severity classes gives its distribution; where there is too little
mass or no anatomy, the row stays NaN and the caller falls back to the training prior.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from lumbar_bench.approaches.nnunet import anatomy as an
from lumbar_bench.approaches.nnunet.pseudo_masks import working_stack
from lumbar_bench.approaches.nnunet.schemes import ClassScheme
from lumbar_bench.constants import LABEL_COLUMNS, LEVELS, SCORE_GROUPS, condition_side
from lumbar_bench.core.errors import DataError
from lumbar_bench.data import geometry as geo
from lumbar_bench.data.rsna import RSNAData
from lumbar_bench.metrics.score import score_arrays

log = logging.getLogger(__name__)
_ROW = {lab: i for i, lab in enumerate(LABEL_COLUMNS)}
_GROUP = {cond: group for group, members in SCORE_GROUPS.items() for cond in members}


@dataclass(frozen=True)
class GradingConfig:
    """Where to look and how much evidence counts."""

    size: int = 128
    #: Slices on either side of the learnt position that are averaged.
    halfwidth: int = 1
    #: Minimum summed probability mass of a condition's classes in a region.
    min_mass: float = 2.0
    min_area: int = 6
    #: Weight of the segmentation estimate against the training prior (1 = segmentation only).
    blend: float = 0.6


@dataclass
class StudyGrades:
    """25 x 3 probabilities (NaN rows = nothing found) and why rows are missing."""

    probs: np.ndarray = field(default_factory=lambda: np.full((len(LABEL_COLUMNS), 3), np.nan))
    problems: list[str] = field(default_factory=list)


def slice_positions(coords: pd.DataFrame, schemes: dict[str, ClassScheme]) -> dict[str, float]:
    """Median relative slice position (0 = first, 1 = last) of each sagittal condition's annotations."""
    out = {}
    for desc, scheme in schemes.items():
        if not desc.startswith("Sagittal"):
            continue
        rows = coords[coords["series_type"] == desc]
        for cond in scheme.conditions:
            sel = rows[rows["condition"] == cond]
            rel = sel["slice_index"] / (sel["n_slices"] - 1).clip(lower=1)
            out[cond] = float(rel.median()) if len(rel) else 0.5
    return out


def level_regions(discs: dict[str, an.Structure], shape: tuple[int, int]) -> dict[str, np.ndarray]:
    """Pixels nearest each level's disc, within the median spacing of neighbouring discs."""
    if not discs:
        return {}
    pts = np.array([[d.row, d.col] for d in discs.values()])
    gaps = [np.hypot(*(a - b)) for a, b in zip(pts, pts[1:], strict=False)]
    reach = float(np.median(gaps)) if gaps else shape[0] / 6
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]]
    d2 = (rows[None] - pts[:, 0, None, None]) ** 2 + (cols[None] - pts[:, 1, None, None]) ** 2
    nearest = d2.argmin(0)
    close = d2.min(0) <= reach**2
    return {lv: (nearest == i) & close for i, lv in enumerate(discs)}


def _distribution(mass: np.ndarray, min_mass: float) -> np.ndarray | None:
    total = float(mass.sum())
    return mass / total if total >= min_mass else None


class StudyGrader:
    """Grades studies with one probability function per series type."""

    def __init__(
        self, predict: dict, schemes: dict[str, ClassScheme], positions: dict[str, float], cfg: GradingConfig
    ) -> None:
        self.predict = predict  # series type -> callable(image (S, S)) -> probs (C, S, S)
        self.schemes = schemes
        self.positions = positions
        self.cfg = cfg

    def grade(self, data: RSNAData, study_id: int) -> StudyGrades:
        """Grades of every row the study's series can tell something about."""
        out = StudyGrades()
        stacks = {}
        for desc in self.schemes:
            series = data.series_of(study_id, desc)
            if not series or desc not in self.predict:
                out.problems.append(f"no {desc} series")
                continue
            try:
                stacks[desc] = working_stack(data.volume(study_id, series[0]), self.cfg.size)
            except DataError as exc:
                out.problems.append(f"{desc} unreadable ({exc})")
        sag = {d: self._levels(d, *stacks[d]) for d in stacks if d.startswith("Sagittal")}
        best = max(sag, key=lambda d: len(sag[d][0]), default=None)
        disc_pts = {}
        if best is not None and sag[best][0]:
            mid = len(stacks[best][0]) // 2
            disc_pts = {lv: stacks[best][1][mid].to_patient(d.row, d.col) for lv, d in sag[best][0].items()}
        for desc, (levels, cache) in sag.items():
            pixels, geoms = stacks[desc]
            if len(levels) < 3 and len(disc_pts) > len(levels):  # borrow the best series' levels
                levels = an.project_levels(disc_pts, geoms[len(pixels) // 2])
            if not levels:
                out.problems.append(f"no vertebrae/discs found on {desc}")
                continue
            self._sagittal(out, desc, self.schemes[desc], pixels, levels, cache)
        for desc in stacks:
            if not desc.startswith("Sagittal"):
                self._axial(out, desc, self.schemes[desc], *stacks[desc], disc_pts)
        return out

    def _probs(self, desc: str, pixels: np.ndarray, indices: list[int], cache: dict) -> list[np.ndarray]:
        for i in indices:
            if i not in cache:
                cache[i] = self.predict[desc](pixels[i])
        return [cache[i] for i in indices]

    def _levels(self, desc: str, pixels: np.ndarray, geoms: list[an.SliceGeometry]) -> tuple[dict, dict]:
        """Levels found on the predicted mid slice (discs, else gaps between vertebrae) and the cache."""
        scheme, cache = self.schemes[desc], {}
        mid = len(pixels) // 2
        seg = self._probs(desc, pixels, [mid], cache)[0].argmax(0)
        discs = an.structures(seg, scheme.anatomy_index("disc"), self.cfg.min_area) if scheme.anatomy else []
        levels = an.disc_levels(discs, geoms[mid])
        if len(levels) < 3 and "vertebra" in scheme.anatomy:
            verts = an.structures(seg, scheme.anatomy_index("vertebra"), self.cfg.min_area)
            levels = an.vertebra_gap_levels(verts, geoms[mid]) or levels
        return levels, cache

    def _sagittal(
        self, out: StudyGrades, desc: str, scheme: ClassScheme, pixels: np.ndarray, levels: dict, cache: dict
    ) -> None:
        n = len(pixels)
        regions = level_regions(levels, pixels.shape[1:])
        for cond in scheme.conditions:
            centre = int(round(self.positions.get(cond, 0.5) * (n - 1)))
            lo, hi = centre - self.cfg.halfwidth, centre + self.cfg.halfwidth + 1
            probs = self._probs(desc, pixels, [i for i in range(lo, hi) if 0 <= i < n], cache)
            first = scheme.lesion(cond, 0)
            for lv, region in regions.items():
                mass = np.array([sum(float(p[first + s][region].sum()) for p in probs) for s in range(3)])
                dist = _distribution(mass, self.cfg.min_mass)
                if dist is not None:
                    out.probs[_ROW[f"{cond}_{lv}"]] = dist

    def _axial(
        self,
        out: StudyGrades,
        desc: str,
        scheme: ClassScheme,
        pixels: np.ndarray,
        geoms: list[geo.SliceGeometry],
        disc_pts: dict[str, np.ndarray],
    ) -> None:
        if not disc_pts:
            out.problems.append(f"{desc}: no sagittal discs to place the axial slices")
            return
        cache: dict = {}
        size = pixels.shape[1]
        for lv, best in geo.level_slices(geoms, disc_pts).items():
            probs = self._probs(desc, pixels, [best], cache)[0]
            centre_x = geoms[best].to_patient(size / 2, size / 2)[0]
            cols = np.arange(size)
            left_cols = np.array([geoms[best].to_patient(size / 2, c)[0] > centre_x for c in cols])
            halves = {"left": left_cols, "right": ~left_cols, "": None}
            for cond in scheme.conditions:
                keep = halves[condition_side(cond)]
                first = scheme.lesion(cond, 0)
                mass = np.array(
                    [
                        float(probs[first + s][:, keep].sum() if keep is not None else probs[first + s].sum())
                        for s in range(3)
                    ]
                )
                d = _distribution(mass, self.cfg.min_mass)
                if d is not None:
                    out.probs[_ROW[f"{cond}_{lv}"]] = d


def blend_with_prior(probs: np.ndarray, prior: np.ndarray, weight: float | np.ndarray) -> np.ndarray:
    """Segmentation rows blended with the prior (one weight, or one per row); NaN rows take the prior."""
    found = np.isfinite(probs).all(axis=1)
    w = np.broadcast_to(np.asarray(weight, dtype=np.float64), (len(prior),))[:, None]
    out = prior.copy()
    out[found] = (w * np.nan_to_num(probs) + (1 - w) * prior)[found]
    return out / out.sum(axis=1, keepdims=True)


def group_weights(weights: dict[str, float]) -> np.ndarray:
    """Per-row blend weights ``(25,)`` from one weight per score group."""
    return np.array([weights[_GROUP[lab[:-6]]] for lab in LABEL_COLUMNS])


def calibrate_blend(
    raw: np.ndarray,
    codes: np.ndarray,
    prior: np.ndarray,
    default: float,
    grid: tuple[float, ...] = tuple(np.linspace(0, 1, 11)),
    per_group: bool = False,
) -> dict[str, float]:
    """Blend weight minimising the official score on held-out *training* studies.

    ``raw`` is ``(studies, 25, 3)`` segmentation grades (NaN rows = nothing found), ``codes``
    their labels. One weight shared by every score group (few held-out studies make
    per-group weights noisy), or with ``per_group`` one pass of coordinate descent over
    the groups. ``default`` stays where there is no segmentation evidence at all.
    """

    def total(w: dict[str, float]) -> float:
        rows = group_weights(w)
        return score_arrays(codes, np.stack([blend_with_prior(r, prior, rows) for r in raw])).score

    if not np.isfinite(raw).all(axis=2).any():
        return dict.fromkeys(SCORE_GROUPS, float(default))
    if not per_group:
        best = min(grid, key=lambda w: total(dict.fromkeys(SCORE_GROUPS, float(w))))
        return dict.fromkeys(SCORE_GROUPS, float(best))
    weights = dict.fromkeys(SCORE_GROUPS, float(default))
    for group in SCORE_GROUPS:
        cols = [i for i, lab in enumerate(LABEL_COLUMNS) if _GROUP[lab[:-6]] == group]
        if np.isfinite(raw[:, cols]).all(axis=2).any():
            weights[group] = float(min(grid, key=lambda w: total({**weights, group: float(w)})))
    return weights


__all__ = ["LEVELS", "GradingConfig", "StudyGrader", "StudyGrades", "blend_with_prior", "slice_positions"]
