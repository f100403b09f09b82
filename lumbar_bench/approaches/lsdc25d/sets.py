"""Training data of the stages: localiser annotations, crop sets, and the label-noise filter."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from scipy.special import softmax

from lumbar_bench.approaches.lsdc25d import grader as gr
from lumbar_bench.approaches.lsdc25d import localize as loc
from lumbar_bench.approaches.lsdc25d.config import Lsdc25dConfig
from lumbar_bench.approaches.lsdc25d.study import AXIAL, Spot, StudySeries
from lumbar_bench.constants import GROUP_SERIES, LABEL_COLUMNS, LEVELS, SCORE_GROUPS, split_label


def _working(spot: Spot, study: StudySeries, size: int) -> tuple[int, float, float]:
    h, w = study.volumes[spot.series_id].shape[1:]
    return spot.index, spot.row * size / h, spot.col * size / w


def annotations(
    studies: Mapping[int, StudySeries], truths: Mapping[int, list[Spot | None]], desc: str, size: int
) -> list[loc.Annotation]:
    """The annotated points of series type ``desc`` in working pixels, channel = level on sagittal series.

    One annotation per sagittal series, each point also on the last, level-agnostic channel
    (:data:`.localize.DISC`); one per (axial series, level), since each axial level lies on its
    own slice. Left and right share their channel (see :mod:`.localize`).
    """
    groups = {g for g, series in GROUP_SERIES.items() if series == desc}
    out = []
    for s, spots in truths.items():
        study = studies[s]
        by_key: dict[tuple[int, str], list[tuple[int, int, float, float]]] = {}
        for lab, spot in zip(LABEL_COLUMNS, spots, strict=True):
            condition, level = split_label(lab)
            if spot is None or spot.series_id not in study.by_type.get(desc, []):
                continue
            if not any(condition in SCORE_GROUPS[g] for g in groups):
                continue
            channel = 0 if desc == AXIAL else LEVELS.index(level)
            key = (spot.series_id, level if desc == AXIAL else "")
            where = _working(spot, study, size)
            by_key.setdefault(key, []).append((channel, *where))
            if desc != AXIAL:
                by_key[key].append((len(LEVELS), *where))
        for (series_id, _), points in by_key.items():
            out.append(loc.Annotation(loc.working_stack(study.volumes[series_id], size), points))
    return out


def crop_set(
    crops: Sequence[np.ndarray], valid: Sequence[np.ndarray], labels: pd.DataFrame | None, ids: Sequence[int]
) -> gr.CropSet:
    """A :class:`~.grader.CropSet` from per-study ``(V, 25, Z, S, S)`` crops; labels -1 when unknown."""
    stacked = np.stack(crops, axis=1).astype(np.float16)
    codes = np.full((len(ids), len(LABEL_COLUMNS)), -1, dtype=np.int64)
    if labels is not None:
        known = [s for s in ids if s in labels.index]
        rows = [list(ids).index(s) for s in known]
        codes[rows] = labels.loc[known, list(LABEL_COLUMNS)].to_numpy(np.int64)
    return gr.CropSet(stacked, np.stack(valid), codes)


def _subset(data: gr.CropSet, rows: np.ndarray) -> gr.CropSet:
    return gr.CropSet(data.crops[:, rows], data.valid[rows], data.labels[rows])


def out_of_fold_probs(data: gr.CropSet, cfg: Lsdc25dConfig, seed: int, device: str) -> np.ndarray:
    """Probabilities ``(n, 25, 3)`` of each study from a grader trained on the other half of the studies."""
    n = data.valid.shape[0]
    halves = np.array_split(np.random.default_rng(seed).permutation(n), 2)
    probs = np.zeros((n, len(LABEL_COLUMNS), 3))
    for k, held in enumerate(halves):
        rest = np.setdiff1d(np.arange(n), held)
        torch.manual_seed(seed + k)
        model = gr.Grader(cfg.encoder, cfg.weights).to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
        rng = np.random.default_rng(seed + k)
        for _ in range(cfg.noise_epochs):
            gr.train_epoch(
                model, opt, _subset(data, rest), cfg.studies_per_batch, cfg.any_weight, rng, device
            )
        probs[held] = softmax(gr.logits_of(model, _subset(data, held), device), axis=-1)
    return probs


def drop_unlikely(data: gr.CropSet, probs: np.ndarray, threshold: float) -> tuple[gr.CropSet, float]:
    """``data`` with labels of out-of-fold probability below ``threshold`` blanked; the fraction dropped."""
    known = (data.labels >= 0) & data.valid
    p_label = np.take_along_axis(probs, np.clip(data.labels, 0, 2)[..., None], axis=-1)[..., 0]
    drop = known & (p_label < threshold)
    labels = np.where(drop, -1, data.labels)
    return gr.CropSet(data.crops, data.valid, labels), float(drop.sum() / max(known.sum(), 1))


__all__ = ["annotations", "crop_set", "drop_unlikely", "out_of_fold_probs"]
