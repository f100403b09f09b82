"""What ``predict`` measures on studies with coordinates, its warnings, and the contact sheet.

- ``localization/{sagittal_t2,sagittal_t1,axial}_error_mm``: mean distance in patient millimetres between each
  annotated point and the point found for the same label (sagittal T2/STIR: spinal; sagittal
  T1: foraminal; axial T2: subarticular);
- ``geometry/axial_level_accuracy``: the fraction of annotated subarticular coordinates whose
  axial slice gets the annotated level from the found level points;
- ``lsdc/crop_fallback``: the fraction of label slots without a crop (graded by the prior).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from lumbar_bench.approaches.context import RunContext
from lumbar_bench.approaches.lsdc25d import grader as gr
from lumbar_bench.approaches.lsdc25d import levels as lvl
from lumbar_bench.approaches.lsdc25d.study import AXIAL, Spot, StudySeries, truth_spots
from lumbar_bench.constants import GROUP_SERIES, LABEL_COLUMNS, SCORE_GROUPS, SEVERITIES, split_label
from lumbar_bench.data.rsna import RSNAData

log = logging.getLogger(__name__)
#: Series type -> its name in the ``localization/<name>_error_mm`` metrics.
METRIC_NAMES = {
    GROUP_SERIES["spinal"]: "sagittal_t2",
    GROUP_SERIES["foraminal"]: "sagittal_t1",
    AXIAL: "axial",
}


def warn_missing(study: StudySeries, valid: np.ndarray) -> None:
    """One warning per study whose slots fall back to the prior, naming the missing series types."""
    if valid.all():
        return
    missing = ", ".join(study.missing) or "none"
    log.warning(
        "study %s: %d of %d rows graded by the prior (missing series: %s)",
        study.study_id,
        int((~valid).sum()),
        len(valid),
        missing,
    )


def _errors(study: StudySeries, truth: list[Spot | None], found: list[Spot | None]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for lab, t, f in zip(LABEL_COLUMNS, truth, found, strict=True):
        if t is None or f is None:
            continue
        group = next(g for g, members in SCORE_GROUPS.items() if split_label(lab)[0] in members)
        d = float(np.linalg.norm(study.patient(t) - study.patient(f)))
        out.setdefault(GROUP_SERIES[group], []).append(d)
    return out


def _level_hits(study: StudySeries, truth: list[Spot | None], points: Mapping[str, np.ndarray]) -> list[bool]:
    if not points:
        return [False for t in truth if t is not None and t.series_id in study.by_type.get(AXIAL, [])]
    levels = {sid: lvl.slice_levels(study.geoms(sid), points) for sid in study.by_type.get(AXIAL, [])}
    return [
        levels[t.series_id][t.index] == split_label(lab)[1]
        for lab, t in zip(LABEL_COLUMNS, truth, strict=True)
        if t is not None and t.series_id in levels
    ]


def held_out_metrics(
    data: RSNAData,
    studies: Mapping[int, StudySeries],
    found: Mapping[int, tuple[list[Spot | None], dict[str, np.ndarray]]],
    valid: np.ndarray,
) -> dict[str, float]:
    """The module's metrics over the studies that have coordinates (NaN-free: absent when none)."""
    errors: dict[str, list[float]] = {}
    hits: list[bool] = []
    for s, study in studies.items():
        coords = data.coordinates[data.coordinates.study_id == s]
        if coords.empty:
            continue
        truth = truth_spots(study, coords)
        spots, points = found[s]
        for desc, values in _errors(study, truth, spots).items():
            errors.setdefault(desc, []).extend(values)
        hits += _level_hits(study, truth, points)
    metrics = {f"localization/{METRIC_NAMES[d]}_error_mm": float(np.mean(v)) for d, v in errors.items() if v}
    if hits:
        metrics["geometry/axial_level_accuracy"] = float(np.mean(hits))
    metrics["lsdc/crop_fallback"] = float(1 - valid.mean()) if valid.size else 0.0
    return metrics


def contact_sheet(
    crops: gr.CropSet, probs: np.ndarray, ids: Sequence[int], path: Path, studies: int = 4
) -> Path:
    """Middle slice of every crop of the first ``studies`` studies, titled label -> prediction."""
    n = min(studies, len(ids))
    slots = len(LABEL_COLUMNS)
    fig = Figure(figsize=(slots * 0.9, n * 1.15 + 0.4), dpi=100)
    mid = crops.crops.shape[3] // 2
    short = {"Normal/Mild": "N", "Moderate": "Mo", "Severe": "S", None: "?"}
    for r in range(n):
        for c, lab in enumerate(LABEL_COLUMNS):
            ax = fig.add_subplot(n, slots, r * slots + c + 1)
            ax.imshow(crops.crops[0, r, c, mid].astype(np.float32), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            code = int(crops.labels[r, c])
            truth = short[SEVERITIES[code] if code >= 0 else None]
            guess = short[SEVERITIES[int(np.argmax(probs[r, c]))]]
            colour = "black" if truth in (guess, "?") else "red"
            ax.set_title(f"{truth}>{guess}", fontsize=6, color=colour)
            if r == 0:
                cond, level = split_label(lab)
                ax.set_xlabel(f"{cond.split('_')[0][:5]} {level}", fontsize=5)
                ax.xaxis.set_label_position("top")
        fig.axes[r * slots].set_ylabel(str(ids[r])[-6:], fontsize=6)
    fig.suptitle(
        "held-out crops (middle slice): label > arg-max prediction, red when they differ", fontsize=8
    )
    fig.savefig(path)
    return path


def log_contact_sheet(
    crops: gr.CropSet, probs: np.ndarray, data: RSNAData, ids: list[int], ctx: RunContext
) -> None:
    """Draw :func:`contact_sheet` of the held-out crops (labels from ``data``) and log it as an artifact."""
    labelled = gr.CropSet(crops.crops, crops.valid, _codes(data, ids))
    path = contact_sheet(labelled, probs, ids, ctx.workdir / "contact_sheet.png")
    ctx.log_artifact(path, "lsdc")


def _codes(data: RSNAData, ids: list[int]) -> np.ndarray:
    codes = np.full((len(ids), len(LABEL_COLUMNS)), -1, dtype=np.int64)
    for i, s in enumerate(ids):
        if s in data.labels.index:
            codes[i] = data.labels.loc[s, list(LABEL_COLUMNS)].to_numpy(np.int64)
    return codes
