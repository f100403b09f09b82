"""nnU-Net training schedules of the three approaches: single model, and out-of-fold self-refinement.

Every training gets an equal share of the compute budget left (minus a reserve for
prediction) as its soft deadline. Held-out evaluation (Dice against pseudo-masks and
against the phantom's truth) and label-vs-prediction overlays also live here.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd

from lumbar_bench.approaches.base import ReportBuilder
from lumbar_bench.approaches.context import RunContext
from lumbar_bench.approaches.nnunet import dataset as nd
from lumbar_bench.approaches.nnunet import overlays as ov
from lumbar_bench.approaches.nnunet import pipeline as pl
from lumbar_bench.approaches.nnunet import trainer as nt
from lumbar_bench.approaches.nnunet.configs import NnUNetConfig
from lumbar_bench.approaches.nnunet.epoch_metrics import EpochMetrics
from lumbar_bench.approaches.nnunet.pseudo_masks import load_case
from lumbar_bench.approaches.nnunet.schemes import ClassScheme
from lumbar_bench.approaches.nnunet.seg_eval import (
    DiceBook,
    LabelAudit,
    evaluate_cases,
    read_truth_labels,
    truth_label,
)
from lumbar_bench.constants import LABEL_COLUMNS, slug
from lumbar_bench.core.seeding import derived_seed, seed_everything
from lumbar_bench.core.stage_cache import StageResult, charge_reuse
from lumbar_bench.data.rsna import RSNAData

log = logging.getLogger(__name__)

Loader = Callable[[str], tuple[np.ndarray, np.ndarray]]


class MetricSink(Protocol):
    """Where held-out metrics go besides the fit report: a nested tracking run (``ctx.nested_run``)."""

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        """Log ``metrics``."""


#: ``evaluate(models, child)``: held-out evaluation of one stage's models, logged to ``child``.
Evaluator = Callable[[dict[str, Path], MetricSink], object]


class Trainer:
    """Trains and evaluates the nnU-Nets of one approach run."""

    def __init__(
        self,
        cfg: NnUNetConfig,
        schemes: dict[str, ClassScheme],
        ctx: RunContext,
        masks: StageResult,
        reserve: float,
        report: ReportBuilder,
    ) -> None:
        self.cfg, self.schemes, self.ctx, self.masks, self.reserve = cfg, schemes, ctx, masks, reserve
        #: Collects stage seconds, time to best and held-out metrics for the approach's fit report.
        self.report = report
        for key in ("nnunet_plan", "nnunet_train"):
            report.seconds(key, 0.0)

    def _deadline(self, remaining: int) -> float | None:
        if self.ctx.deadline is None:
            return None
        left = self.ctx.budget_left() - self.reserve
        return time.monotonic() + max(left, 0.0) / max(remaining, 1)

    def _schedule(self, remaining: int) -> nt.Schedule:
        """The config's epochs, iterations and optimiser, with this training's share of the budget."""
        cfg = self.cfg
        return nt.Schedule(
            cfg.epochs,
            cfg.iterations,
            cfg.val_iterations,
            initial_lr=cfg.lr,
            optimizer=cfg.optimizer,
            save_every=cfg.save_every,
            deadline=self._deadline(remaining),
        )

    def _epoch_logger(self, tag: str) -> EpochMetrics:
        """Per-epoch metrics ``nnunet/<tag>/<name>``, written off the training thread (``with`` block)."""
        return EpochMetrics(self.ctx.log_metric, f"nnunet/{tag}")

    def fit_type(
        self,
        desc: str,
        cases: pd.DataFrame,
        load: Loader,
        partitions: list[list[int]],
        fold_ids: list[int],
        dataset_id: int,
        upstream: dict,
        remaining: int,
    ) -> dict[int, Path]:
        """Export/plan (cached) and train ``fold_ids`` of one series type; fold -> output folder."""
        scheme = self.schemes[desc]
        studies = dict(zip(cases["case_id"], cases["study_id"].astype(int), strict=True))
        if len(studies) < 2:
            log.warning(
                "nnunet: %d %s cases; no model for this series type (prior for its rows)", len(studies), desc
            )
            return {}
        folds = pl.fold_entries(studies, partitions)
        ds = pl.dataset_stage(
            self.ctx.cache_dir,
            dataset_id,
            scheme,
            lambda: (nd.Case(c, s, *load(c)) for c, s in studies.items()),
            studies,
            folds,
            self.cfg.plan(),
            upstream,
        )
        self.report.seconds("nnunet_plan", ds.seconds)
        charge_reuse(ds, self.ctx, self.report)
        paths = pl.nnunet_paths(ds, self.ctx.workdir / "nnunet")
        out = {}
        for i, fold in enumerate(fold_ids):
            if (n_train := len(folds[fold]["train"])) < 2:
                log.warning("nnunet: %s fold %d has %d training cases; not trained", desc, fold, n_train)
                continue
            schedule = self._schedule(remaining - i)
            # cold or warm cache alike
            seed_everything(derived_seed(self.ctx.seed, "nnunet", dataset_id, fold))
            t0 = time.monotonic()
            with self._epoch_logger(f"{dataset_id}_{slug(desc)}/f{fold}") as on_epoch:
                out[fold] = nt.train(
                    dataset_id,
                    paths,
                    fold,
                    schedule,
                    self.ctx.device,
                    on_epoch,
                    checkpointed=self.ctx.checkpointed,
                    resumed=self.ctx.resumed,
                    num_gpus=self.cfg.num_gpus,
                )
            self.report.seconds("nnunet_train", time.monotonic() - t0)
            self._note_work(out[fold])
        return out

    def _note_work(self, fold_dir: Path) -> None:
        """Charge the training work recorded beside a fold's model (trained now or earlier)."""
        flops = _harness_info(fold_dir).get("train_flops")
        if flops is not None:
            self.report.flops("nnunet_train", float(flops))

    def single(
        self, cases: pd.DataFrame, rest: list[int], val: list[int], load: Loader, base_id: int
    ) -> dict[str, Path]:
        """One nnU-Net per series type on ``cases``, fold 0 = train on ``rest``, validate on ``val``."""
        models, types = {}, [d for d in self.schemes if d in set(cases["series_type"])]
        for i, desc in enumerate(types):
            sub = cases[cases["series_type"] == desc]
            trained = self.fit_type(
                desc,
                sub,
                load,
                [val, rest],
                [0],
                base_id + i,
                {"masks": self.masks.key, "variant_cases": len(sub)},
                len(types) - i,
            )
            if 0 in trained:
                models[desc] = trained[0]
                self._note_best(trained[0])
        return models

    def _note_best(self, fold_dir: Path) -> None:
        self.report.time_to_best(float(_harness_info(fold_dir).get("time_to_best_s") or 0.0))

    def refined(
        self,
        cases: pd.DataFrame,
        keep: set[int],
        rest: list[int],
        val: list[int],
        evaluate: Evaluator,
        truth_root: Path | None = None,
    ) -> dict[str, Path]:
        """Stage 1 on QC'd masks (k folds over ``rest``), out-of-fold merge, stage 2 on the merged masks.

        On the phantom (``truth_root`` with a ``truth/`` folder) the merged labels are judged
        against truth: ``refine/labels_truth_dice_before`` (the pseudo-masks),
        ``refine/labels_truth_dice_after`` (what stage 2 trains on) and
        ``refine/labels_changed_fraction``.
        """
        parts = nd.kfold_studies(rest, max(self.cfg.refine_folds, 2), self.ctx.seed + 1)
        types = [d for d in self.schemes if d in set(cases["series_type"])]
        merged_dir = self.ctx.workdir / "merged"
        merged_dir.mkdir(parents=True, exist_ok=True)
        truth = read_truth_labels(truth_root) if truth_root is not None else None
        with self.ctx.nested_run("stage1") as child:
            book, audit = DiceBook(self.schemes), LabelAudit(self.schemes)
            t_merge = 0.0
            for i, desc in enumerate(types):
                sub = cases[(cases["series_type"] == desc)]
                kept = sub[sub["series_id"].isin(keep) & sub["study_id"].isin(rest)]
                folds = self.fit_type(
                    desc,
                    kept,
                    self._load_masks,
                    parts,
                    list(range(len(parts))),
                    501 + i,
                    {"masks": self.masks.key, "stage": 1},
                    (len(types) - i) * (len(parts) + 1),
                )
                t0 = time.monotonic()
                for fold, fold_dir in folds.items():
                    held = sub[sub["study_id"].isin(parts[fold])]
                    self._merge_fold(desc, held, fold_dir, book, audit, (truth_root, truth))
                t_merge += time.monotonic() - t0
            stage1 = {f"stage1/{k_}": v for k_, v in book.metrics().items()}
            stage1.update(audit.metrics())
            child.log_metrics({k_.split("/", 1)[1]: v for k_, v in stage1.items() if np.isfinite(v)})
            self.report.metrics(stage1)
        self.report.seconds("nnunet_oof_merge", t_merge)
        return self._stage2(cases, types, rest, val, evaluate)

    def _merge_fold(
        self,
        desc: str,
        held: pd.DataFrame,
        fold_dir: Path,
        book: DiceBook,
        audit: LabelAudit,
        truth: tuple[Path | None, pd.DataFrame | None],
    ) -> None:
        """Predict one stage-1 fold's held-out cases; write each merged label (audited against truth)."""
        from lumbar_bench.approaches.nnunet.predictor import Predictor  # lazy: imports torch and nnunetv2

        predict, scheme = Predictor(fold_dir, self.ctx.device).probabilities, self.schemes[desc]
        root, labels = truth
        for case in held.itertuples(index=False):
            image, label = self._load_masks(case.case_id)
            pred = predict(image).argmax(0).astype(np.uint8)
            book.add(desc, pred, label, None)
            merged = merge(label, pred, scheme)
            true = None
            if labels is not None and case.study_id in labels.index:
                severities = labels.loc[case.study_id, list(LABEL_COLUMNS)]
                args = (case.study_id, case.series_id, case.instance_number, scheme, severities, len(label))
                true = truth_label(root, *args)
            audit.add(desc, label, merged, true)
            np.savez_compressed(
                self.ctx.workdir / "merged" / f"{case.case_id}.npz", image=image, label=merged
            )

    def _stage2(
        self,
        cases: pd.DataFrame,
        types: list[str],
        rest: list[int],
        val: list[int],
        evaluate: Evaluator,
    ) -> dict[str, Path]:
        """One nnU-Net per series type on the merged labels (the pseudo-mask where no merge exists)."""
        merged_dir = self.ctx.workdir / "merged"
        models = {}
        with self.ctx.nested_run("stage2") as child:
            for i, desc in enumerate(types):
                sub = cases[cases["series_type"] == desc]
                have = {p.stem for p in merged_dir.glob("*.npz")}
                # cases without an out-of-fold prediction (no stage-1 model) keep their pseudo-mask
                train = sub[sub["study_id"].isin(rest)]
                both = pd.concat([train, sub[sub["study_id"].isin(val)]])
                merged = sorted(c for c in train["case_id"] if c in have)
                digest = hashlib.sha256(
                    b"".join((merged_dir / f"{c}.npz").read_bytes() for c in merged)
                ).hexdigest()[:16]
                trained = self.fit_type(
                    desc,
                    both,
                    self._load_merged,
                    [val, rest],
                    [0],
                    511 + i,
                    {"masks": self.masks.key, "stage": 2, "merged": digest},
                    len(types) - i,
                )
                if 0 in trained:
                    models[desc] = trained[0]
                    self._note_best(trained[0])
            evaluate(models, child)
        return models

    def _load_masks(self, case_id: str) -> tuple[np.ndarray, np.ndarray]:
        return load_case(self.masks.path, case_id)

    def _load_merged(self, case_id: str) -> tuple[np.ndarray, np.ndarray]:
        path = self.ctx.workdir / "merged" / f"{case_id}.npz"
        if not path.exists():
            return self._load_masks(case_id)
        with np.load(path) as z:
            return z["image"], z["label"]

    def evaluate(
        self,
        data: RSNAData,
        val_cases: pd.DataFrame,
        models: dict[str, Path],
        mask_dir: Path,
        child: MetricSink | None = None,
    ) -> dict[str, float]:
        """Held-out Dice (pseudo-masks, truth) and overlays for a few held-out studies."""
        from lumbar_bench.approaches.nnunet.predictor import Predictor  # lazy: imports torch and nnunetv2

        ctx = self.ctx
        fns = {d: Predictor(p, ctx.device).probabilities for d, p in models.items()}
        book = DiceBook(self.schemes)
        truth = read_truth_labels(data.root)
        done = evaluate_cases(
            book, val_cases, lambda c: load_case(mask_dir, c), fns, data.root, truth, self.cfg.size
        )
        metrics = book.metrics()
        self.report.metrics(metrics)
        if child is not None:
            child.log_metrics({k: v for k, v in metrics.items() if np.isfinite(v)})
        shown = sorted(val_cases["study_id"].unique())[: self.cfg.overlays]
        for desc, scheme in self.schemes.items():
            sel = val_cases[(val_cases["series_type"] == desc) & val_cases["study_id"].isin(shown)]
            items = [(str(c), *done[c]) for c in sel["case_id"] if c in done][:8]
            if items:
                path = ov.label_vs_prediction(
                    ctx.workdir / "overlays" / f"{slug(desc)}.png",
                    items,
                    scheme.names,
                    f"{desc}: pseudo-mask vs nnU-Net",
                )
                ctx.log_artifact(path, "overlays")
        log.info(
            "nnunet: held-out dice_mean %.3f, truth_dice_mean %.3f",
            metrics.get("dice_mean", np.nan),
            metrics.get("truth_dice_mean", np.nan),
        )
        return metrics


def merge(label: np.ndarray, pred: np.ndarray, scheme: ClassScheme) -> np.ndarray:
    """Anatomy from the prediction, lesion classes and ignore pixels from the annotated pseudo-mask."""
    n_anat = 1 + len(scheme.anatomy)
    out = np.where(pred < n_anat, pred, 0).astype(np.uint8)
    annotated = label >= n_anat
    out[annotated] = label[annotated]
    return out


def _harness_info(fold_dir: Path) -> dict:
    """The ``harness.json`` nnU-Net training left in ``fold_dir`` (empty when there is none)."""
    path = Path(fold_dir) / "harness.json"
    return json.loads(path.read_text()) if path.exists() else {}
