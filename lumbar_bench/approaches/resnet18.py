"""``resnet18``: the public Kaggle starter notebooks' classifier, done carefully.

A few representative slices of each series type are stacked as input channels
(sagittal slices ordered by patient x, so left and right never swap), a torchvision
ResNet-18 with a widened first convolution predicts 25 x 3 logits, and a
cross-entropy weighted 1/2/4 like the official score trains it. Early stopping uses
the official score on an inner validation part of the *training* studies, so the
held-out fold never steers training. A checkpoint after every epoch lets an
interrupted run resume.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from lumbar_bench.approaches.base import Approach, FitReport
from lumbar_bench.approaches.context import RunContext
from lumbar_bench.approaches.work import FlopBook
from lumbar_bench.config import config_hash
from lumbar_bench.constants import LABEL_COLUMNS, PROB_COLUMNS, SERIES_TYPES, SEVERITY_WEIGHTS, row_id
from lumbar_bench.core import distributed
from lumbar_bench.core.distributed import DistInfo
from lumbar_bench.core.errors import DataError
from lumbar_bench.core.files import torch_save_atomic
from lumbar_bench.core.progress import progress_bar
from lumbar_bench.data.dicom import sagittal_side
from lumbar_bench.data.rsna import RSNAData
from lumbar_bench.data.splits import subset_studies
from lumbar_bench.metrics.score import score_arrays

log = logging.getLogger(__name__)
N_LABELS = len(LABEL_COLUMNS)


@dataclass(frozen=True)
class ResNet18Config:
    """Input, schedule and regularisation of the ResNet-18 baseline."""

    image_size: int = 128
    slices_per_series: int = 5
    epochs: int = 12
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    patience: int = 4
    val_fraction: float = 0.15
    augment: bool = True
    label_smoothing: float = 0.0
    #: Fit a softmax temperature on the inner validation part each epoch (log loss punishes
    #: overconfidence); epochs are then compared by their calibrated score.
    calibrate: bool = True
    weights: str = ""

    @classmethod
    def for_subset(cls, subset: str) -> ResNet18Config:
        """``ci``: a tiny, seconds-long schedule; ``small``: minutes; ``full``: the demo schedule."""
        if subset == "ci":
            return cls(image_size=64, slices_per_series=3, epochs=3, batch_size=16, patience=3)
        if subset == "small":
            return cls(image_size=96, epochs=8)
        return cls()


def build_model(in_channels: int, weights: str = "") -> nn.Module:
    """ResNet-18 with ``in_channels`` inputs and 25 x 3 outputs.

    Random init, unless ``weights`` names a local state-dict file (torchvision or timm layout).
    """
    model = torchvision.models.resnet18(weights=None, num_classes=N_LABELS * 3)
    model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    if weights:
        path = Path(weights)
        if not path.is_file():
            raise DataError(f"{path}: weights file not found")
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state)
        conv = state.get("conv1.weight")
        if conv is not None and conv.shape[1] != in_channels:  # timm-style: mean over RGB, repeated
            state["conv1.weight"] = (
                conv.mean(dim=1, keepdim=True).repeat(1, in_channels, 1, 1) * 3 / in_channels
            )
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        missing, unexpected = model.load_state_dict(state, strict=False)
        log.info("loaded %s (missing %d, unexpected %d keys)", path, len(missing), len(unexpected))
    return model


def study_tensor(data: RSNAData, study_id: int, cfg: ResNet18Config) -> np.ndarray:
    """Channels ``(3 * slices_per_series, S, S)`` for one study; a missing series stays zero."""
    k, size = cfg.slices_per_series, cfg.image_size
    out = np.zeros((len(SERIES_TYPES) * k, size, size), dtype=np.float32)
    for i, desc in enumerate(SERIES_TYPES):
        for series_id in data.series_of(study_id, desc)[:1]:
            try:
                vol = data.volume(study_id, series_id)
            except DataError as exc:
                log.warning("study %s: %s", study_id, exc)
                continue
            order = np.arange(vol.n_slices)
            if desc.startswith("Sagittal"):
                order = np.argsort(sagittal_side(vol), kind="stable")  # right to left
            idx = np.round(np.linspace(0.2, 0.8, k) * (vol.n_slices - 1)).astype(int)
            picked = torch.from_numpy(vol.slice_pixels(order[idx]))[None]  # reads only these slices
            out[i * k : (i + 1) * k] = F.interpolate(picked, size=(size, size), mode="area")[0].numpy()
    return out


def best_temperature(score_at: Callable[[float], float]) -> float:
    """The softmax temperature on a log grid from 0.5 to 10 with the lowest ``score_at(t)``."""
    grid = np.exp(np.linspace(np.log(0.5), np.log(10.0), 41))
    return float(grid[int(np.argmin([score_at(float(t)) for t in grid]))])


def fit_temperature(logits: torch.Tensor, codes: np.ndarray) -> float:
    """The softmax temperature (:func:`best_temperature`) minimising the official score on ``codes``."""
    return best_temperature(lambda t: score_arrays(codes, torch.softmax(logits / t, -1).numpy()).score)


def _jitter(n: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Random affine and intensity parameters of :func:`_augment` for ``n`` studies (drawn from ``gen``)."""
    return {
        "angle": (torch.rand(n, generator=gen) - 0.5) * 0.26,  # +/- 7.5 degrees
        "scale": 1 + (torch.rand(n, generator=gen) - 0.5) * 0.2,
        "shift": (torch.rand(n, 2, generator=gen) - 0.5) * 0.16,
        "gain": 1 + (torch.rand(n, 1, 1, 1, generator=gen) - 0.5) * 0.3,
        "bias": (torch.rand(n, 1, 1, 1, generator=gen) - 0.5) * 0.1,
    }


def _augment(x: torch.Tensor, jitter: dict[str, torch.Tensor]) -> torch.Tensor:
    """Small random affine and intensity jitter, the same for every channel of a study; no flips."""
    angle, scale, shift = jitter["angle"], jitter["scale"], jitter["shift"]
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1
    )
    grid = F.affine_grid(theta.to(x), list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")
    return x * jitter["gain"].to(x) + jitter["bias"].to(x)


class ResNet18Approach(Approach):
    """ResNet-18 over stacked representative slices, 25 softmax heads."""

    name = "resnet18"
    Config = ResNet18Config
    supports_ddp = True

    def __init__(self, config: ResNet18Config) -> None:
        super().__init__(config)
        in_ch = len(SERIES_TYPES) * config.slices_per_series
        self.model = build_model(in_ch, config.weights)
        self.temperature = 1.0

    def _inputs(self, data: RSNAData, study_ids: Sequence[int], ctx: RunContext, what: str) -> torch.Tensor:
        arrays = [
            study_tensor(data, s, self.config)
            for s in progress_bar(study_ids, f"resnet18: {what} inputs", ctx.progress)
        ]
        return torch.from_numpy(np.stack(arrays)) if arrays else torch.zeros(0)

    def fit(self, data: RSNAData, study_ids: Sequence[int], ctx: RunContext) -> FitReport:
        """Train with early stopping on an inner validation part; resumes from ``ctx.workdir``.

        Under torchrun (``ctx.dist``) every rank trains the DDP-wrapped model on its shard of each
        batch; rank 0 alone validates, checkpoints and decides when all ranks stop.
        """
        cfg, device, dist = self.config, torch.device(ctx.device), ctx.dist
        torch.manual_seed(ctx.seed)
        n_val = max(1, round(len(study_ids) * cfg.val_fraction))
        val_ids = subset_studies(list(study_ids), n_val)
        train_ids = [s for s in study_ids if s not in set(val_ids)]
        x_tr = self._inputs(data, train_ids, ctx, "train")
        x_val = self._inputs(data, val_ids if dist.is_main else [], ctx, "val")
        y_tr = torch.tensor(data.labels.loc[train_ids, list(LABEL_COLUMNS)].to_numpy(np.int64))
        y_val = data.labels.loc[val_ids, list(LABEL_COLUMNS)].to_numpy(np.int64)
        model = self.model.to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(cfg.epochs, 1))
        ckpt_path = ctx.workdir / "checkpoint_latest.pt"
        gen = torch.Generator().manual_seed(ctx.seed)
        state = self._resume(ckpt_path, opt, sched, gen, ctx)
        distributed.barrier(dist)  # every rank has read the checkpoint before rank 0 writes the next
        trained = distributed.wrap(model, dist, ctx.device)
        loss_fn = nn.CrossEntropyLoss(
            weight=torch.tensor(SEVERITY_WEIGHTS, device=device),
            ignore_index=-1,
            label_smoothing=cfg.label_smoothing,
        )
        t0 = time.monotonic() - state["elapsed"]
        for epoch in range(cfg.epochs if state["done"] else state["epoch"], cfg.epochs):
            if distributed.agree(dist, ctx.over_budget()):
                log.warning("resnet18: soft budget reached before epoch %d; keeping the best model", epoch)
                break
            train_loss = self._train_epoch(trained, opt, loss_fn, x_tr, y_tr, gen, device, dist)
            sched.step()
            stop = False
            if dist.is_main:
                val_score, temperature = self._validate(x_val, y_val, device)
                self._log_epoch(ctx, epoch, train_loss, val_score, temperature)
                stop = self._epoch_done(state, epoch, val_score, temperature, time.monotonic() - t0)
                self._checkpoint(ckpt_path, opt, sched, gen, state)
                ctx.checkpointed()
            if distributed.agree(dist, stop):
                log.info("resnet18: early stop at epoch %d (best %d)", epoch, state["best_epoch"])
                break
        epoch_flops = FlopBook(ctx.cache_dir).epoch(
            "resnet18",
            self.model,
            len(x_tr),
            cfg.batch_size,
            tuple(x_tr.shape[1:]),
            min_batch=dist.world_size,
        )
        report = self._keep_best(state)
        return report.merge(FitReport(stage_flops={"classifier": float(state["epoch"] * epoch_flops)}))

    def _epoch_done(
        self, state: dict, epoch: int, val_score: float, temperature: float, elapsed: float
    ) -> bool:
        """Record ``epoch`` in ``state`` (keeping the best weights so far); True when training should stop."""
        if val_score < state["best"]:
            state.update(
                best=val_score,
                best_epoch=epoch,
                time_to_best=elapsed,
                temperature=temperature,
                best_state={k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
            )
        stop = epoch - state["best_epoch"] >= self.config.patience
        state.update(epoch=epoch + 1, elapsed=elapsed, done=stop or epoch + 1 >= self.config.epochs)
        return stop

    @staticmethod
    def _log_epoch(
        ctx: RunContext, epoch: int, train_loss: float, val_score: float, temperature: float
    ) -> None:
        ctx.log_metric("train/loss", train_loss, epoch)
        ctx.log_metric("val/rsna_score", val_score, epoch)
        log.info(
            "resnet18 epoch %d: loss %.4f val score %.4f (T=%.2f)", epoch, train_loss, val_score, temperature
        )

    def _keep_best(self, state: dict) -> FitReport:
        """Load the best epoch's weights and temperature; report its validation score and timing."""
        if state["best_state"] is not None:
            self.model.load_state_dict(state["best_state"])
            self.temperature = state["temperature"]
        metrics = {
            "val/best_rsna_score": state["best"],
            "best_epoch": float(state["best_epoch"]),
            "val/temperature": self.temperature,
        }
        return FitReport(metrics=metrics, time_to_best_s=state["time_to_best"])

    def _validate(self, x_val: torch.Tensor, y_val: np.ndarray, device: torch.device) -> tuple[float, float]:
        """Official score on the inner validation part, after temperature calibration if enabled."""
        logits = self._logits(x_val, device)
        temperature = fit_temperature(logits, y_val) if self.config.calibrate else 1.0
        return score_arrays(y_val, torch.softmax(logits / temperature, -1).numpy()).score, temperature

    def _checkpoint(
        self, path: Path, opt: torch.optim.Optimizer, sched: object, gen: torch.Generator, state: dict
    ) -> None:
        """Everything a resumed fit needs to continue bit for bit: weights, optimiser, schedule, RNG."""
        torch_save_atomic(
            {
                "model": self.model.state_dict(),
                "opt": opt.state_dict(),
                "sched": sched.state_dict(),
                "rng": gen.get_state(),
                "hash": config_hash(self.name, self.config),
                **state,
            },
            path,
        )

    def _resume(
        self, path: Path, opt: torch.optim.Optimizer, sched: object, gen: torch.Generator, ctx: RunContext
    ) -> dict:
        """The training state of ``path``'s checkpoint (model, optimiser, RNG restored), or a fresh one."""
        fresh = {
            "epoch": 0,
            "best": float("inf"),
            "best_epoch": -1,
            "best_state": None,
            "time_to_best": None,
            "elapsed": 0.0,
            "temperature": 1.0,
            "done": False,
        }
        if not path.exists():
            return fresh
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        if ckpt.get("hash") != config_hash(self.name, self.config):
            log.warning("%s belongs to another config; starting afresh", path)
            return fresh
        self.model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["opt"])
        sched.load_state_dict(ckpt["sched"])
        if "rng" in ckpt:
            gen.set_state(ckpt["rng"])
        else:  # checkpoints from before the RNG was kept
            gen.manual_seed(ctx.seed + ckpt["epoch"])
        ckpt.setdefault("done", ckpt["epoch"] >= self.config.epochs)
        log.info("resnet18: resuming at epoch %d from %s", ckpt["epoch"], path)
        ctx.resumed(done=ckpt["done"])
        return {k: ckpt[k] for k in fresh}

    def _train_epoch(
        self,
        model: nn.Module,
        opt: torch.optim.Optimizer,
        loss_fn: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        gen: torch.Generator,
        device: torch.device,
        dist: DistInfo,
    ) -> float:
        """One epoch in shuffled batches; the mean training loss (over every rank's samples).

        Every rank draws the same order and augmentation from ``gen`` and trains on its shard of
        each batch (:meth:`DistInfo.shard`), so the ranks' batches of one step together are the
        1-process batch; a last batch smaller than the world size is skipped.
        """
        model.train()
        order = torch.randperm(len(x), generator=gen)
        total, seen = 0.0, 0
        for i in range(0, len(x), self.config.batch_size):
            batch = order[i : i + self.config.batch_size]
            if len(batch) < dist.world_size:
                continue
            jitter = _jitter(len(batch), gen) if self.config.augment else None
            idx = dist.shard(batch)
            xb = x[idx].to(device, torch.float32)
            if jitter is not None:
                xb = _augment(xb, {k: dist.shard(v) for k, v in jitter.items()})
            yb = y[idx].to(device)
            logits = model(xb).view(-1, N_LABELS, 3)
            loss = loss_fn(logits.reshape(-1, 3), yb.reshape(-1))
            opt.zero_grad(set_to_none=True)
            if dist.enabled:
                (loss * distributed.shard_weight(dist, len(idx), len(batch))).backward()
            else:
                loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
            seen += len(idx)
        total, seen = distributed.sum_over_ranks(dist, [total, seen])
        return total / max(seen, 1)

    @torch.no_grad()
    def _logits(self, x: torch.Tensor, device: torch.device) -> torch.Tensor:
        model = self.model.to(device).eval()
        out = [
            model(x[i : i + 64].to(device, torch.float32)).view(-1, N_LABELS, 3).cpu()
            for i in range(0, len(x), 64)
        ]
        return torch.cat(out).double() if out else torch.zeros((0, N_LABELS, 3), dtype=torch.float64)

    def _probs(self, x: torch.Tensor, device: torch.device) -> np.ndarray:
        return torch.softmax(self._logits(x, device) / self.temperature, -1).numpy()

    def predict(self, data: RSNAData, study_ids: Sequence[int], ctx: RunContext) -> pd.DataFrame:
        """Softmax probabilities for every row of every study (zeros stand in for a missing series)."""
        probs = self._probs(self._inputs(data, study_ids, ctx, "predict"), torch.device(ctx.device))
        flat = probs.reshape(-1, 3)
        rows = [row_id(s, lab) for s in study_ids for lab in LABEL_COLUMNS]
        return pd.DataFrame({"row_id": rows, **{c: flat[:, i] for i, c in enumerate(PROB_COLUMNS)}})

    def save(self, directory: Path) -> None:
        """Write the best weights and the calibration temperature (``model.pt``)."""
        torch.save(
            {"state_dict": self.model.state_dict(), "temperature": self.temperature}, directory / "model.pt"
        )

    @classmethod
    def load(cls, directory: Path, config: ResNet18Config) -> ResNet18Approach:
        """Rebuild from ``model.pt`` (loaded with ``weights_only=True``)."""
        approach = cls(dataclasses.replace(config, weights=""))  # the saved weights supersede the init file
        saved = torch.load(directory / "model.pt", map_location="cpu", weights_only=True)
        approach.model.load_state_dict(saved["state_dict"])
        approach.temperature = float(saved["temperature"])
        return approach
