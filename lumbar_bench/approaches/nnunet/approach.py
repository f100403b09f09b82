"""``nnunet-raw``, ``nnunet-qc`` and ``nnunet-refined``: the original study's segmentation route.

A vertebra U-Net learnt from SPIDER finds the anatomy on the RSNA sagittal slices, the
label coordinates are painted into pseudo-masks, mask QC scores them, and an nnU-Net v2
per series type learns them; its probabilities are turned into grades. The variants
differ only in their config: ``raw`` trains on every mask, ``qc`` on those passing QC,
``refined`` adds a second nnU-Net trained on out-of-fold predictions merged with the
annotated lesions. Stages are cached (see :mod:`lumbar_bench.approaches.nnunet.pipeline`).
The configs are in :mod:`.configs` and importable from here too.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from lumbar_bench.approaches.base import Approach, FitReport, ReportBuilder
from lumbar_bench.approaches.context import RunContext
from lumbar_bench.approaches.nnunet import dataset as nd
from lumbar_bench.approaches.nnunet import grading as gr
from lumbar_bench.approaches.nnunet import overlays as ov
from lumbar_bench.approaches.nnunet import pipeline as pl
from lumbar_bench.approaches.nnunet import qc
from lumbar_bench.approaches.nnunet.configs import (
    VARIANTS,
    NnUNetConfig,
    NnUNetQCConfig,
    NnUNetRefinedConfig,
)
from lumbar_bench.approaches.nnunet.pseudo_masks import load_case
from lumbar_bench.approaches.nnunet.schemes import ClassScheme, load_schemes, save_schemes
from lumbar_bench.approaches.nnunet.seg_eval import pseudo_mask_truth_dice
from lumbar_bench.approaches.nnunet.trainer import require_gpus
from lumbar_bench.approaches.nnunet.training import Trainer
from lumbar_bench.approaches.prior import fit_prior
from lumbar_bench.constants import LABEL_COLUMNS, PROB_COLUMNS, SCORE_GROUPS, row_id, slug
from lumbar_bench.core.errors import ConfigError, DataError
from lumbar_bench.core.progress import progress_bar
from lumbar_bench.core.seeding import torch_threads
from lumbar_bench.core.stage_cache import StageResult, charge_reuse
from lumbar_bench.data.rsna import RSNAData

if TYPE_CHECKING:  # the predictor imports torch and nnunetv2
    from lumbar_bench.approaches.nnunet.predictor import Predictor

log = logging.getLogger(__name__)


class NnUNetApproach(Approach):
    """Segmentation route; the registered classes below fix the variant through their config."""

    name = "nnunet"
    Config = NnUNetConfig

    def __init__(self, config: NnUNetConfig) -> None:
        if config.variant not in VARIANTS:
            raise ConfigError(f"variant={config.variant!r}: choose one of {', '.join(VARIANTS)}")
        super().__init__(config)
        config.qc()  # ConfigError on a qc_series that names no series type
        self.schemes: dict[str, ClassScheme] = {}
        self.positions: dict[str, float] = {}
        self.prior: np.ndarray | None = None
        self.models: dict[str, Path] = {}
        self.blend: dict[str, float] = {}
        self._predictors: dict[str, Predictor] = {}

    # ------------------------------------------------------------------ fit
    def fit(self, data: RSNAData, study_ids: Sequence[int], ctx: RunContext) -> FitReport:
        """Run every stage on the training studies; only ``study_ids`` are ever looked at."""
        require_gpus(self.config.num_gpus, ctx.device)  # before any stage: fails in a second, not an hour
        self._report = ReportBuilder()
        with torch_threads(self.config.threads):
            self._fit(data, study_ids, ctx)
        return self._report.build()

    def _fit(self, data: RSNAData, study_ids: Sequence[int], ctx: RunContext) -> None:
        cfg, ids = self.config, sorted(int(s) for s in study_ids)
        self.prior = fit_prior(data.labels.loc[ids])
        start_left = ctx.budget_left()
        vdeadline = None if ctx.deadline is None else time.monotonic() + 0.25 * start_left
        vert, vmetrics = pl.vertebra_stage(
            data, cfg.vertebra(), cfg.spider, ctx.cache_dir, ctx.device, ctx.seed, ctx.progress, vdeadline
        )
        self._stage(ctx, "vertebrae", vert)
        if (flops := pl.stage_flops(vert)) is not None:  # the work the U-Net carries, built here or not
            self._report.flops("vertebrae", flops)
        self._report.metrics(vmetrics)
        masks = pl.mask_stage(
            data, ids, vert, cfg.vertebra(), cfg.masks(), ctx.cache_dir, ctx.device, ctx.progress
        )
        self._stage(ctx, "pseudo_masks", masks)
        self._report.metrics(pl.mask_metrics(masks))  # geometry/axial_level_accuracy, pseudo_masks/truth_dice
        self.schemes = load_schemes(masks.path / "schemes.json")
        coords = pd.read_csv(masks.path / "coords.csv")
        self.positions = gr.slice_positions(coords, self.schemes) if len(coords) else {}
        cases = pl.read_cases(masks.path)
        t0 = time.monotonic()
        report = self._qc(masks.path, cases, ctx, Path(data.root) / "truth")
        self._report.seconds("qc", time.monotonic() - t0)
        keep = (
            set(report.loc[report["keep"], "series_id"]) if cfg.variant != "raw" else set(cases["series_id"])
        )
        studies = sorted(int(s) for s in cases["study_id"].unique())
        if not studies:
            log.warning("nnunet: no pseudo-masks could be built; every study gets the prior")
            return
        val = nd.kfold_studies(studies, max(cfg.val_folds, 2), ctx.seed)[0]
        rest = [s for s in studies if s not in set(val)]
        reserve = cfg.predict_reserve * start_left if np.isfinite(start_left) else 0.0
        trainer = Trainer(cfg, self.schemes, ctx, masks, reserve, self._report)
        val_cases = cases[cases["study_id"].isin(val)]
        if cfg.variant == "refined":
            self.models = trainer.refined(
                cases,
                keep,
                rest,
                val,
                lambda models, child: trainer.evaluate(data, val_cases, models, masks.path, child),
                truth_root=Path(data.root),
            )
        else:
            self.models = trainer.single(
                cases[cases["series_id"].isin(keep)],
                rest,
                val,
                lambda cid: load_case(masks.path, cid),
                base_id=501,
            )
            trainer.evaluate(data, val_cases, self.models, masks.path)
        self._calibrate(data, val, ctx)

    def _calibrate(self, data: RSNAData, val: list[int], ctx: RunContext) -> None:
        """Blend weights per score group, fitted on held-out training studies (never the evaluated ones)."""
        cfg = self.config
        self.blend = dict.fromkeys(SCORE_GROUPS, cfg.blend)
        if cfg.calibrate and self.models and val:
            grader = self._grader(ctx)
            raw = np.stack([self._grade(grader, data, s)[0] for s in val])
            codes = data.labels.loc[val, list(LABEL_COLUMNS)].to_numpy(np.int64)
            self.blend = gr.calibrate_blend(
                raw, codes, self.prior, cfg.blend, per_group=cfg.calibrate_per_group
            )
        self._report.metrics({f"grading/blend_{k}": v for k, v in self.blend.items()})
        log.info("nnunet: blend weights with the prior %s", self.blend)

    def _grader(self, ctx: RunContext) -> gr.StudyGrader:
        fns = {}
        for desc in self.models:
            try:
                fns[desc] = self.predictor(desc, ctx.device).probabilities
            except (OSError, KeyError, RuntimeError) as exc:
                log.warning("nnunet: the %s model cannot be loaded (%s); its rows use the prior", desc, exc)
        return gr.StudyGrader(fns, self.schemes, self.positions, self.config.grading())

    @staticmethod
    def _grade(grader: gr.StudyGrader, data: RSNAData, study: int) -> tuple[np.ndarray, list[str]]:
        try:
            grades = grader.grade(data, int(study))
        except (DataError, ValueError, IndexError, RuntimeError) as exc:
            grades = gr.StudyGrades(problems=[f"grading failed: {exc}"])
        return grades.probs, grades.problems

    def _stage(self, ctx: RunContext, name: str, result: StageResult) -> None:
        self._report.seconds(name, result.seconds)
        self._report.metrics({f"cache/{name}_hit": float(result.hit)})
        charge_reuse(result, ctx, self._report)

    def _qc(self, mask_dir: Path, cases: pd.DataFrame, ctx: RunContext, truth_dir: Path) -> pd.DataFrame:
        report = qc.run_qc(mask_dir, self.config.qc())
        self._report.metrics(qc.summarise(report))
        out = ctx.workdir / "qc"
        out.mkdir(parents=True, exist_ok=True)
        report.to_csv(out / "qc_report.csv", index=False)
        ctx.log_artifact(out / "qc_report.csv", "qc")
        self._qc_vs_truth(report, mask_dir, truth_dir, ctx)
        panels = []
        for r in report.head(12).itertuples(index=False):
            first = cases[cases["series_id"] == r.series_id].head(1)
            scheme = self.schemes.get(r.series_type)
            if first.empty or scheme is None:
                continue
            image, label = load_case(mask_dir, first.case_id.iloc[0])
            panels.append(
                (f"{r.series_id} {r.score:.2f}\n{r.reasons[:40]}", ov.overlay(image, label, scheme.names))
            )
        if panels:
            ov.save_grid(out / "qc_worst.png", panels, columns=4, title="QC: lowest-scoring pseudo-masks")
            ctx.log_artifact(out / "qc_worst.png", "qc")
        return report

    def _qc_vs_truth(self, report: pd.DataFrame, mask_dir: Path, truth_dir: Path, ctx: RunContext) -> None:
        """On the phantom: ``qc/truth_spearman``, ``qc/hard_case_auroc`` and ``qc/qc_vs_truth.csv``."""
        if report.empty or not (truth_dir / "train.csv").is_file():
            return  # real data: nothing to judge QC against
        dice = pseudo_mask_truth_dice(mask_dir, truth_dir)
        table = qc.truth_table(report, dice, qc.read_hard_cases(truth_dir))
        path = ctx.workdir / "qc" / "qc_vs_truth.csv"
        table.to_csv(path, index=False)
        ctx.log_artifact(path, "qc")
        metrics = qc.truth_metrics(table)
        self._report.metrics(metrics)
        log.info(
            "QC vs truth: Spearman %.3f, hard-case AUROC %.3f over %d series",
            metrics.get("qc/truth_spearman", np.nan),
            metrics.get("qc/hard_case_auroc", np.nan),
            len(table),
        )

    # -------------------------------------------------------------- predict
    def predictor(self, desc: str, device: str) -> Predictor:
        """Return the loaded nnU-Net of one series type (cached)."""
        from lumbar_bench.approaches.nnunet.predictor import Predictor  # lazy: imports torch and nnunetv2

        if desc not in self._predictors:
            self._predictors[desc] = Predictor(self.models[desc], device)
        return self._predictors[desc]

    def predict(self, data: RSNAData, study_ids: Sequence[int], ctx: RunContext) -> pd.DataFrame:
        """Grades from the segmentation where it finds something, the training prior elsewhere."""
        with torch_threads(self.config.threads):
            return self._predict(data, study_ids, ctx)

    def _predict(self, data: RSNAData, study_ids: Sequence[int], ctx: RunContext) -> pd.DataFrame:
        if self.prior is None:
            raise RuntimeError("nnunet: predict() before fit()")
        t0 = time.monotonic()
        grader = self._grader(ctx)
        weights = gr.group_weights(self.blend or dict.fromkeys(SCORE_GROUPS, self.config.blend))
        out, fallback = [], 0
        for study in progress_bar(list(study_ids), "nnunet: grading", ctx.progress):
            probs, problems = self._grade(grader, data, study)
            missing = int((~np.isfinite(probs).all(axis=1)).sum())
            if missing:
                why = "; ".join(problems) or "too little lesion probability in some regions"
                log.warning("study %s: prior fallback for %d of 25 rows (%s)", study, missing, why)
            fallback += missing
            out.append(gr.blend_with_prior(probs, self.prior, weights))
        self._predict_report = FitReport(
            metrics={"grading/prior_fallback_fraction": fallback / max(1, 25 * len(study_ids))},
            stage_seconds={"nnunet_predict": time.monotonic() - t0},
        )
        flat = np.concatenate(out) if out else np.zeros((0, 3))
        rows = [row_id(s, lab) for s in study_ids for lab in LABEL_COLUMNS]
        return pd.DataFrame({"row_id": rows, **{c: flat[:, i] for i, c in enumerate(PROB_COLUMNS)}})

    # ------------------------------------------------------------ save/load
    def save(self, directory: Path) -> None:
        """Write each series type's nnU-Net (plans, dataset.json, final checkpoint) and the grading state."""
        for desc, fold_dir in self.models.items():
            target = directory / "nnunet" / slug(desc)
            (target / "fold_0").mkdir(parents=True, exist_ok=True)
            for name in ("plans.json", "dataset.json"):
                shutil.copy2(Path(fold_dir).parent / name, target / name)
            shutil.copy2(Path(fold_dir) / "checkpoint_final.pth", target / "fold_0" / "checkpoint_final.pth")
        save_schemes(self.schemes, directory / "schemes.json")
        state = {
            "blend": self.blend,
            "positions": self.positions,
            "prior": None if self.prior is None else self.prior.tolist(),
            "models": {d: slug(d) for d in self.models},
        }
        (directory / "grading.json").write_text(json.dumps(state, indent=1))

    @classmethod
    def load(cls, directory: Path, config: NnUNetConfig) -> NnUNetApproach:
        """Rebuild from what :meth:`save` wrote."""
        approach = cls(config)
        state = json.loads((directory / "grading.json").read_text())
        approach.schemes = load_schemes(directory / "schemes.json")
        approach.positions = state["positions"]
        approach.blend = state.get("blend", {})
        approach.prior = None if state["prior"] is None else np.asarray(state["prior"])
        approach.models = {d: directory / "nnunet" / s / "fold_0" for d, s in state["models"].items()}
        return approach


class NnUNetRawApproach(NnUNetApproach):
    """``nnunet-raw``: nnU-Net on every pseudo-mask (original study, run 1)."""

    name = "nnunet-raw"
    Config = NnUNetConfig


class NnUNetQCApproach(NnUNetApproach):
    """``nnunet-qc``: nnU-Net on the pseudo-masks that pass QC (original study, run 2)."""

    name = "nnunet-qc"
    Config = NnUNetQCConfig


class NnUNetRefinedApproach(NnUNetApproach):
    """``nnunet-refined``: a second nnU-Net on out-of-fold predictions merged with the annotations."""

    name = "nnunet-refined"
    Config = NnUNetRefinedConfig


__all__ = [
    "VARIANTS",
    "NnUNetApproach",
    "NnUNetConfig",
    "NnUNetQCApproach",
    "NnUNetRawApproach",
    "NnUNetRefinedApproach",
]
