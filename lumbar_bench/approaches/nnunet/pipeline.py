"""Cached stage wiring shared by the nnU-Net approaches: vertebrae, pseudo-masks, nnU-Net datasets.

Each function builds one stage through :func:`~lumbar_bench.core.stage_cache.cached_stage` and
reports its runtime and whether the cache answered, so a second approach on the same
data, split and subset reuses the vertebra U-Net and the pseudo-masks.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from lumbar_bench.approaches.nnunet import dataset as nd
from lumbar_bench.approaches.nnunet import trainer as nt
from lumbar_bench.approaches.nnunet.painting import MaskConfig
from lumbar_bench.approaches.nnunet.pseudo_masks import axial_level_accuracy, build_pseudo_masks, load_case
from lumbar_bench.approaches.nnunet.schemes import ClassScheme
from lumbar_bench.approaches.nnunet.seg_eval import pseudo_mask_truth_by_type, pseudo_mask_truth_metrics
from lumbar_bench.approaches.nnunet.vertebrae import (
    VertebraConfig,
    load_vertebra_model,
    spider_digest,
    train_vertebra_model,
)
from lumbar_bench.constants import slug
from lumbar_bench.core.stage_cache import StageResult, cached_stage, stage_key
from lumbar_bench.data.rsna import RSNAData

log = logging.getLogger(__name__)

#: Bumped when a stage's code changes what it writes; part of every cache key.
#: pseudo_masks 3: each slice's own plane (tilted axial blocks), regions cut to their level; 4: metrics.json.
#: Part of each stage's key (vertebrae 2: the stage records its training FLOPs).
STAGE_VERSIONS: dict[str, int] = {"vertebrae": 2, "pseudo_masks": 4, "nnunet_data": 1}


@dataclass(frozen=True)
class PlanConfig:
    """The ``2d_tiny`` network nnU-Net trains (patch = working size)."""

    patch: int = 128
    batch_size: int = 8
    features: tuple[int, ...] = (16, 32, 64, 128, 256)


def spider_root(data: RSNAData, spider: str) -> Path:
    """``--set spider=DIR`` when given, else the phantom's ``spider/`` next to the RSNA layout."""
    root = Path(spider) if spider else Path(data.root) / "spider"
    if not (root / "images").is_dir():
        raise FileNotFoundError(f"{root}: no SPIDER-layout data (images/, masks/); pass --set spider=DIR")
    return root


def vertebra_stage(
    data: RSNAData,
    cfg: VertebraConfig,
    spider: str,
    cache_dir: Path,
    device: str,
    seed: int,
    progress: bool,
    deadline: float | None,
) -> tuple[StageResult, dict[str, float]]:
    """Train (or reuse) the vertebra U-Net; returns the stage and its validation Dice metrics."""
    root = spider_root(data, spider)
    payload = {
        "version": STAGE_VERSIONS["vertebrae"],
        "config": dataclasses.asdict(cfg),
        "spider": spider_digest(root),
        "seed": seed,
    }

    def build(out: Path) -> None:
        train_vertebra_model(root, cfg, out, device, seed, progress, deadline)

    result = cached_stage(cache_dir, "vertebrae", payload, build)
    return result, json.loads((result.path / "metrics.json").read_text())


def stage_flops(stage: StageResult) -> float | None:
    """The training FLOPs a stage recorded in ``work.json`` (None: it trained nothing or did not count)."""
    path = stage.path / "work.json"
    return float(json.loads(path.read_text())["flops"]) if path.is_file() else None


def mask_stage(
    data: RSNAData,
    study_ids: list[int],
    vert: StageResult,
    vcfg: VertebraConfig,
    mcfg: MaskConfig,
    cache_dir: Path,
    device: str,
    progress: bool,
) -> StageResult:
    """Build (or reuse) the pseudo-masks of ``study_ids`` with the vertebra model of ``vert``."""
    payload = {
        "version": STAGE_VERSIONS["pseudo_masks"],
        "vertebrae": vert.key,
        "config": dataclasses.asdict(mcfg),
        "data": data.data_digest(),
        "studies": sorted(int(s) for s in study_ids),
    }

    def build(out: Path) -> None:
        model = load_vertebra_model(vert.path, vcfg, device)
        build_pseudo_masks(data, sorted(study_ids), model, mcfg, out, device, progress)
        write_mask_metrics(out, Path(data.root) / "truth")

    return cached_stage(cache_dir, "pseudo_masks", payload, build)


def write_mask_metrics(stage_dir: Path, truth_dir: Path) -> dict[str, float]:
    """Judge a pseudo-mask stage; writes ``metrics.json`` (and ``truth_dice.csv``) into it.

    ``geometry/axial_level_accuracy`` comes from ``coords.csv`` (subarticular coordinates on
    axial series whose slice got the labelled level). On the phantom, ``pseudo_masks/truth_dice``
    and its per-series-type values come from ``truth_dice.csv``; without ``truth/`` (real
    data) they are left out.
    """
    try:
        coords = pd.read_csv(stage_dir / "coords.csv", keep_default_na=False, na_values=[])
    except (FileNotFoundError, pd.errors.EmptyDataError):
        coords = pd.DataFrame()
    metrics = {"geometry/axial_level_accuracy": axial_level_accuracy(coords)}
    table = pseudo_mask_truth_by_type(stage_dir, truth_dir)
    if len(table):
        table.to_csv(stage_dir / "truth_dice.csv", index=False)
        metrics.update(pseudo_mask_truth_metrics(table))
    metrics = {k: float(v) for k, v in metrics.items() if np.isfinite(v)}
    (stage_dir / "metrics.json").write_text(json.dumps(metrics, indent=1, sort_keys=True))
    log.info(
        "pseudo-masks: axial level accuracy %.3f, truth Dice %.3f",
        metrics.get("geometry/axial_level_accuracy", float("nan")),
        metrics.get("pseudo_masks/truth_dice", float("nan")),
    )
    return metrics


def mask_metrics(stage: StageResult) -> dict[str, float]:
    """The metrics a pseudo-mask stage wrote (:func:`write_mask_metrics`); {} for an older stage."""
    path = stage.path / "metrics.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def read_cases(mask_dir: Path) -> pd.DataFrame:
    """``cases.csv`` of a pseudo-mask stage (empty frame with the columns when there are none)."""
    path = Path(mask_dir) / "cases.csv"
    cols = ["case_id", "study_id", "series_id", "series_type", "instance_number"]
    try:
        return pd.read_csv(path)
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return pd.DataFrame(columns=cols)


def pseudo_cases(mask_dir: Path, case_ids: Iterable[str], studies: dict[str, int]) -> Iterable[nd.Case]:
    """Pseudo-mask cases read lazily from a mask stage folder."""
    for cid in case_ids:
        image, label = load_case(mask_dir, cid)
        yield nd.Case(cid, studies[cid], image, label)


def fold_entries(case_studies: dict[str, int], partitions: list[list[int]]) -> list[dict]:
    """``splits_final.json`` entries: fold f holds out the studies of ``partitions[f]``."""
    all_studies = sorted({s for part in partitions for s in part})
    return [
        nd.study_folds(case_studies, [s for s in all_studies if s not in set(part)], part)
        for part in partitions
    ]


def dataset_stage(
    cache_dir: Path,
    dataset_id: int,
    scheme: ClassScheme,
    cases: Callable[[], Iterable[nd.Case]],
    case_studies: dict[str, int],
    folds: list[dict],
    plan: PlanConfig,
    upstream: dict,
) -> StageResult:
    """Export, fingerprint, plan and preprocess one nnU-Net dataset (cached); writes ``splits_final.json``."""
    payload = {
        "version": STAGE_VERSIONS["nnunet_data"],
        "upstream": upstream,
        "dataset_id": dataset_id,
        "scheme": dataclasses.asdict(scheme),
        "cases": sorted(case_studies),
        "folds": stage_key(folds),
        "plan": dataclasses.asdict(plan),
    }

    def build(out: Path) -> None:
        paths = nt.NnUNetPaths(out / "raw", out / "preprocessed", out / "results")
        nd.export_dataset(paths.raw, dataset_id, slug(scheme.series_type), cases(), scheme.names, ignore=True)
        nt.plan_and_preprocess(dataset_id, paths, plan.patch, plan.batch_size, plan.features)
        nt.write_splits(paths, dataset_id, folds)

    return cached_stage(cache_dir, "nnunet_data", payload, build)


def nnunet_paths(data_stage: StageResult, results: Path) -> nt.NnUNetPaths:
    """Raw and preprocessed from the cached dataset stage; results private to the run."""
    return nt.NnUNetPaths(data_stage.path / "raw", data_stage.path / "preprocessed", results / data_stage.key)
