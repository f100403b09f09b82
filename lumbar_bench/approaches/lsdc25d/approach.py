"""``lsdc-2.5d``: localise each level, crop around it, grade the crop in 2.5D.

``fit`` trains the three localisers (a cached stage shared by every grader config), cuts
training crops at the annotated points (jittered when ``jitter`` is on, to match the
localisers' error), optionally drops training labels far from their out-of-fold prediction
(``noise_filter``), and trains the grader, fitting its temperature on an inner validation part
whose crops are cut where the localisers point, as at prediction time. ``predict`` runs all
stages and averages the grader's logits over each crop and its in-plane shifts (``tta_mm``);
a slot without a crop (a missing series, a level outside every axial stack) gets the
training prior and a warning naming what was missing. On studies with coordinates it also
measures the localisers and the level assignment, and draws a contact sheet of the crops.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.special import softmax

from lumbar_bench.approaches.base import Approach, FitReport, ReportBuilder
from lumbar_bench.approaches.context import RunContext
from lumbar_bench.approaches.lsdc25d import evaluate as ev
from lumbar_bench.approaches.lsdc25d import grader as gr
from lumbar_bench.approaches.lsdc25d import localize as loc
from lumbar_bench.approaches.lsdc25d import sets
from lumbar_bench.approaches.lsdc25d import study as st
from lumbar_bench.approaches.lsdc25d.config import Lsdc25dConfig
from lumbar_bench.approaches.lsdc25d.crops import level_spacing
from lumbar_bench.approaches.prior import fit_prior
from lumbar_bench.approaches.resnet18 import best_temperature
from lumbar_bench.approaches.work import FlopBook
from lumbar_bench.config import config_hash
from lumbar_bench.constants import LABEL_COLUMNS, PROB_COLUMNS, SERIES_TYPES, row_id, slug
from lumbar_bench.core import distributed
from lumbar_bench.core.progress import progress_bar
from lumbar_bench.core.stage_cache import cached_stage, charge_reuse
from lumbar_bench.data.rsna import RSNAData
from lumbar_bench.data.splits import subset_studies
from lumbar_bench.metrics.score import score_arrays

log = logging.getLogger(__name__)


class Lsdc25dApproach(Approach):
    """Localise, crop, grade in 2.5D (the RSNA 2024 winners' shape)."""

    name = "lsdc-2.5d"
    Config = Lsdc25dConfig
    supports_ddp = True

    def __init__(self, config: Lsdc25dConfig) -> None:
        super().__init__(config)
        self.localizers: dict[str, torch.nn.Module] = {}
        self.grader = gr.Grader(config.encoder, config.weights)
        self.temperature = 1.0
        self.prior = np.full((len(LABEL_COLUMNS), 3), 1 / 3)
        self._localizer_key = ""

    # ---- fit -------------------------------------------------------------------------------

    def fit(self, data: RSNAData, study_ids: Sequence[int], ctx: RunContext) -> FitReport:
        """Localisers (cached stage), training crops, optional noise filter, grader with early stopping."""
        cfg, report = self.config, ReportBuilder()
        torch.manual_seed(ctx.seed)
        n_val = max(1, round(len(study_ids) * cfg.val_fraction))
        val_ids = subset_studies(list(study_ids), n_val)
        held = set(val_ids)
        train_ids = [s for s in study_ids if s not in held]
        self.prior = fit_prior(data.labels.loc[list(study_ids)])
        t0 = time.monotonic()
        studies = {
            s: st.load_series(data, s) for s in progress_bar(study_ids, "lsdc-2.5d: series", ctx.progress)
        }
        truths = {
            s: st.truth_spots(studies[s], data.coordinates[data.coordinates.study_id == s]) for s in train_ids
        }
        report.seconds("read", time.monotonic() - t0)
        self._fit_localizers(data, train_ids, studies, truths, ctx, report)
        t0 = time.monotonic()
        val = self._found_set(data, val_ids, studies, ctx) if ctx.dist.is_main else None  # rank 0 validates
        train = self._truth_set(data, train_ids, studies, truths, ctx.seed)
        report.seconds("crops", time.monotonic() - t0)
        if cfg.noise_filter:
            train = self._filter_noise(train, ctx, report)
        report.add(self._fit_grader(train, val, ctx))
        return report.build()

    def _fit_localizers(
        self,
        data: RSNAData,
        train_ids: list[int],
        studies: dict[int, st.StudySeries],
        truths: dict[int, list[st.Spot | None]],
        ctx: RunContext,
        report: ReportBuilder,
    ) -> None:
        settings = {desc: self.config.localizer(desc) for desc in SERIES_TYPES}
        payload = {
            "version": loc.VERSION,
            "settings": {desc: dataclasses.asdict(s) for desc, s in settings.items()},
            "studies": train_ids,
            "data": data.data_digest(),
            "seed": ctx.seed,
            "device": ctx.device,
        }

        book = FlopBook(ctx.cache_dir)

        def build(out: Path) -> None:
            states, losses, flops = {}, {}, 0
            for desc in SERIES_TYPES:
                annotations = sets.annotations(studies, truths, desc, settings[desc].size)
                model, losses[desc], samples = loc.train_localizer(
                    annotations, desc, settings[desc], ctx.seed, ctx.device, ctx.over_budget
                )
                states[desc] = model.state_dict()
                flops += samples * book.step(
                    f"lsdc-2.5d-localizer-{slug(desc)}", model, [(1, *loc.sample_shape(settings[desc]))]
                )
            torch.save({"states": states, "losses": losses, "flops": flops}, out / "localizers.pt")

        with distributed.main_first(ctx.dist):  # rank 0 trains them, the other ranks read its cache
            stage = cached_stage(ctx.cache_dir, "lsdc25d-localizers", payload, build)
        self._localizer_key = stage.key
        report.seconds("localizers", stage.seconds)
        charge_reuse(stage, ctx, report)
        saved = torch.load(stage.path / "localizers.pt", map_location="cpu", weights_only=True)
        report.flops("localizers", float(saved["flops"]))  # the work they carry, built here or not
        self.localizers = self._build_localizers(saved["states"])
        for desc, losses in saved["losses"].items():
            if losses:
                report.metrics({f"localizer/{slug(desc)}_loss": float(losses[-1])})

    def _build_localizers(self, states: dict[str, dict]) -> dict[str, torch.nn.Module]:
        out = {}
        for desc, state in states.items():
            s = self.config.localizer(desc)
            model = loc.build_model(len(loc.CHANNELS[desc]), s.depth, s.decoder)
            model.load_state_dict(state)
            out[desc] = model.eval()
        return out

    def _models(self, device: str) -> st.Localizers:
        return st.Localizers(
            {d: m.to(device) for d, m in self.localizers.items()}, self.config.loc_size, device
        )

    def _crops(
        self, study: st.StudySeries, spots: list, points: dict, move: st.Jitter | st.Shift | None = None
    ) -> tuple:
        cfg = self.config
        return st.study_crops(
            study, spots, level_spacing(points), cfg.window, cfg.crop_depth, cfg.crop_size, cfg.flip, move
        )

    def _tta_crops(self, study: st.StudySeries, spots: list, points: dict) -> tuple[np.ndarray, np.ndarray]:
        """``(crops (V, 25, Z, S, S), valid (25,))``: the crops, then their test-time shifts."""
        crops, valid = self._crops(study, spots, points)
        moved = [self._crops(study, spots, points, shift)[0] for shift in st.shifts(self.config.tta_mm)]
        return np.stack([crops, *moved]), valid

    def _truth_set(
        self, data: RSNAData, ids: list[int], studies: dict, truths: dict, seed: int
    ) -> gr.CropSet:
        """Crops at the annotated points; with ``jitter``, moved copies as extra variants."""
        cfg, rng = self.config, np.random.default_rng(seed)
        variants = 1 + (cfg.jitter_variants if cfg.jitter else 0)
        crops, valid = [], []
        for s in ids:
            points = st.spot_points(studies[s], truths[s])
            per = [self._crops(studies[s], truths[s], points)]
            jitter = st.Jitter(cfg.jitter_slices, cfg.jitter_mm, rng)
            per += [self._crops(studies[s], truths[s], points, jitter) for _ in range(variants - 1)]
            crops.append(np.stack([c for c, _ in per]))
            valid.append(per[0][1])
        return sets.crop_set(crops, valid, data.labels, ids)

    def _found_set(self, data: RSNAData, ids: list[int], studies: dict, ctx: RunContext) -> gr.CropSet:
        """Crops where the localisers point, with their test-time shifts (what prediction sees)."""
        models = self._models(ctx.device)
        per_study = [self._tta_crops(studies[s], *st.found_spots(studies[s], models)) for s in ids]
        return sets.crop_set([c for c, _ in per_study], [v for _, v in per_study], data.labels, ids)

    def _probs(self, logits: np.ndarray, valid: np.ndarray, temperature: float) -> np.ndarray:
        """Softmax of ``logits / temperature``; the training prior where a slot has no crop."""
        probs = softmax(logits / temperature, axis=-1)
        return np.where(valid[..., None], probs, self.prior[None])

    def _validate(
        self, model: torch.nn.Module, val: gr.CropSet, device: str, tta: bool = False
    ) -> tuple[float, float]:
        """Score and temperature on ``val``: the plain crops, or (``tta``) the mean over every variant."""
        logits = gr.mean_logits(model, val, device) if tta else gr.logits_of(model, val, device)
        temperature = 1.0
        if self.config.calibrate:
            temperature = best_temperature(
                lambda t: score_arrays(val.labels, self._probs(logits, val.valid, t)).score
            )
        return score_arrays(val.labels, self._probs(logits, val.valid, temperature)).score, temperature

    def _fit_grader(self, train: gr.CropSet, val: gr.CropSet | None, ctx: RunContext) -> FitReport:
        t0 = time.monotonic()
        self.grader.to(ctx.device)

        def on_epoch(epoch: int, loss: float, score: float) -> None:
            ctx.log_metric("train/loss", loss, epoch)
            ctx.log_metric("val/rsna_score", score, epoch)
            log.info("lsdc-2.5d epoch %d: loss %.4f val score %.4f", epoch, loss, score)

        hooks = gr.EpochHooks(on_epoch, ctx.over_budget, ctx.checkpointed, lambda done: ctx.resumed(done))
        state = gr.train_grader(
            self.grader,
            train,
            self.config.schedule(),
            lambda model: self._validate(model, val, ctx.device),
            ctx.workdir / "grader_latest.pt",
            ctx.seed,
            ctx.device,
            hooks,
            key=f"{config_hash(self.name, self.config)}-{self._localizer_key}-d{loc.DECODE_VERSION}",
            dist=ctx.dist,
        )
        if not ctx.dist.is_main:
            return FitReport()
        kept = state["best_state"] if self.config.keep_best else state["final_state"]
        if kept is not None:
            self.grader.load_state_dict(kept)
        kept_score, self.temperature = self._validate(
            self.grader, val, ctx.device, tta=self.config.tta_mm > 0
        )
        seconds = time.monotonic() - t0
        metrics = {
            "val/kept_rsna_score": kept_score,
            "val/best_rsna_score": float(state["best"]),
            "best_epoch": float(state["best_epoch"]),
            "val/temperature": self.temperature,
            "train/crops": float(train.valid.sum()),
        }
        crop_flops = FlopBook(ctx.cache_dir).step(
            "lsdc-2.5d-grader", self.grader, [(1, *train.crops.shape[-3:])], forward=gr.forward_on_crops
        )
        # every epoch trains on every valid crop once
        work = float(state["epoch"]) * float(train.valid.sum()) * crop_flops
        return FitReport(metrics=metrics, stage_seconds={"grader": seconds}, stage_flops={"grader": work})

    def _filter_noise(self, train: gr.CropSet, ctx: RunContext, report: ReportBuilder) -> gr.CropSet:
        """Drop training labels whose out-of-fold probability (2 folds) is below ``noise_threshold``."""
        t0 = time.monotonic()
        oof = sets.out_of_fold_probs(train, self.config, ctx.seed, ctx.device)
        kept, dropped = sets.drop_unlikely(train, oof, self.config.noise_threshold)
        report.metrics({"aid/noise_filter_dropped": dropped})
        report.seconds("noise_filter", time.monotonic() - t0)
        log.info("lsdc-2.5d: noise filter dropped %.1f%% of training labels", 100 * dropped)
        return kept

    # ---- predict ---------------------------------------------------------------------------

    def predict(self, data: RSNAData, study_ids: Sequence[int], ctx: RunContext) -> pd.DataFrame:
        """All stages for every study; every one of its 25 rows, the prior where a slot has no crop."""
        t0 = time.monotonic()
        models = self._models(ctx.device)
        studies, found, per_study = {}, {}, []
        for s in progress_bar(study_ids, "lsdc-2.5d: predict", ctx.progress):
            studies[s] = st.load_series(data, s)
            found[s] = st.found_spots(studies[s], models)
            c, v = self._tta_crops(studies[s], *found[s])
            ev.warn_missing(studies[s], v)
            per_study.append((c, v))
        crop_set = sets.crop_set([c for c, _ in per_study], [v for _, v in per_study], None, list(study_ids))
        probs = self._probs(
            gr.mean_logits(self.grader.to(ctx.device), crop_set, ctx.device), crop_set.valid, self.temperature
        )
        metrics = ev.held_out_metrics(data, studies, found, crop_set.valid)
        if any(k.startswith("localization/") for k in metrics):  # held-out studies with coordinates
            ev.log_contact_sheet(crop_set, probs, data, list(study_ids), ctx)
        self._predict_report = FitReport(metrics=metrics, stage_seconds={"predict": time.monotonic() - t0})
        flat = probs.reshape(-1, 3)
        rows = [row_id(s, lab) for s in study_ids for lab in LABEL_COLUMNS]
        return pd.DataFrame({"row_id": rows, **{c: flat[:, i] for i, c in enumerate(PROB_COLUMNS)}})

    # ---- persistence -----------------------------------------------------------------------

    def save(self, directory: Path) -> None:
        """Localisers, grader, temperature and prior in ``model.pt``."""
        torch.save(
            {
                "localizers": {d: m.state_dict() for d, m in self.localizers.items()},
                "grader": self.grader.state_dict(),
                "temperature": self.temperature,
                "prior": torch.from_numpy(self.prior),
            },
            directory / "model.pt",
        )

    @classmethod
    def load(cls, directory: Path, config: Lsdc25dConfig) -> Lsdc25dApproach:
        """Rebuild from ``model.pt`` (loaded with ``weights_only=True``)."""
        approach = cls(dataclasses.replace(config, weights=""))
        saved = torch.load(directory / "model.pt", map_location="cpu", weights_only=True)
        approach.localizers = approach._build_localizers(saved["localizers"])
        approach.grader.load_state_dict(saved["grader"])
        approach.temperature = float(saved["temperature"])
        approach.prior = saved["prior"].numpy()
        return approach


__all__ = ["Lsdc25dApproach", "Lsdc25dConfig"]
