"""nnU-Net v2 through its Python API: paths per call, in-process planning, a harness-owned trainer.

nnU-Net reads its folders from environment variables. :func:`nnunet_env` sets them only
around a call and restores ``os.environ`` afterwards, so the user's environment is
never touched. Fingerprinting and preprocessing normally start *spawn* process pools
(about 4.5 s of start-up per worker); :func:`plan_and_preprocess` runs them on a
thread pool instead. :class:`HarnessTrainer` is instantiated by the harness with a
schedule from the approach config, stops at the compute budget, logs through
``logging`` and resumes from ``checkpoint_latest.pth``.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import logging
import math
import multiprocessing.pool
import os
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

log = logging.getLogger(__name__)

PLANS = "nnUNetPlans"
TINY = "2d_tiny"
#: Suffix of the JSON beside each checkpoint with the harness's training seconds and best epoch.
SIDECAR = ".harness.json"
_ENV_KEYS = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "nnUNet_n_proc_DA", "nnUNet_extTrainer")


@dataclass(frozen=True)
class NnUNetPaths:
    """The three nnU-Net folders of one pipeline (raw and preprocessed are cached, results per run)."""

    raw: Path
    preprocessed: Path
    results: Path


@contextlib.contextmanager
def nnunet_env(paths: NnUNetPaths, n_proc_da: int | None = None) -> Iterator[None]:
    """Set nnU-Net's variables for the duration of the block and restore ``os.environ`` after."""
    saved = {k: os.environ.get(k) for k in _ENV_KEYS}
    values = {
        "nnUNet_raw": paths.raw,
        "nnUNet_preprocessed": paths.preprocessed,
        "nnUNet_results": paths.results,
    }
    if n_proc_da is not None:
        values["nnUNet_n_proc_DA"] = n_proc_da
    try:
        for key, value in values.items():
            os.environ[key] = str(value)
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class _ThreadPools:
    """Stands in for ``multiprocessing`` inside nnU-Net's planning modules: spawn pools become threads."""

    def get_context(self, method: str | None = None) -> _ThreadPools:
        """Any start method gives this object back."""
        return self

    def Pool(self, processes: int | None = None) -> multiprocessing.pool.ThreadPool:  # noqa: N802 (mirrors API)
        """Return a thread pool with the process pool's interface (``starmap_async``, ``_pool``)."""
        return multiprocessing.pool.ThreadPool(processes or 1)


def tiny_configuration(plans: dict, patch: int, batch_size: int, features: tuple[int, ...]) -> dict:
    """Build a ``2d_tiny`` configuration inheriting ``2d`` (same preprocessed data) with a small network."""
    base = plans["configurations"]["2d"]
    arch = copy.deepcopy(base["architecture"])
    n_stages = len(features)
    kw = arch["arch_kwargs"]
    kw.update(
        n_stages=n_stages,
        features_per_stage=list(features),
        kernel_sizes=[[3, 3]] * n_stages,
        strides=[[1, 1]] + [[2, 2]] * (n_stages - 1),
        n_conv_per_stage=[2] * n_stages,
        n_conv_per_stage_decoder=[2] * (n_stages - 1),
    )
    return {
        "inherits_from": "2d",
        "patch_size": [patch, patch],
        "batch_size": batch_size,
        "architecture": arch,
    }


def plan_and_preprocess(
    dataset_id: int,
    paths: NnUNetPaths,
    patch: int,
    batch_size: int,
    features: tuple[int, ...],
    threads: int = 2,
) -> dict:
    """Fingerprint, plan and preprocess ``dataset_id`` in-process; returns the plans with ``2d_tiny``."""
    from nnunetv2.experiment_planning import plan_and_preprocess_api as api
    from nnunetv2.experiment_planning.dataset_fingerprint import fingerprint_extractor
    from nnunetv2.preprocessing.preprocessors import default_preprocessor

    with (
        nnunet_env(paths),
        mock.patch.object(fingerprint_extractor, "multiprocessing", _ThreadPools()),
        mock.patch.object(default_preprocessor, "multiprocessing", _ThreadPools()),
        contextlib.redirect_stdout(_LogStream()),
        contextlib.redirect_stderr(_LogStream()),
    ):
        api.extract_fingerprint_dataset(
            int(dataset_id),
            _small_fingerprint_class(),
            num_processes=threads,
            check_dataset_integrity=False,
            verbose=False,
            show_progress_bar=False,
        )
        plans, identifier = api.plan_experiment_dataset(int(dataset_id))
        api.preprocess_dataset(
            int(dataset_id), identifier, configurations=("2d",), num_processes=[threads], verbose=False
        )
    plans_file = paths.preprocessed / _dataset_name(dataset_id, paths) / f"{PLANS}.json"
    plans = json.loads(plans_file.read_text())
    plans["configurations"][TINY] = tiny_configuration(plans, patch, batch_size, features)
    plans_file.write_text(json.dumps(plans, indent=1))
    return plans


def _small_fingerprint_class() -> type:
    """Return a fingerprint extractor sampling 10^5 foreground pixels, not 10^8 (2D data is small)."""
    from nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor import (
        DatasetFingerprintExtractor,
    )

    class SmallFingerprint(DatasetFingerprintExtractor):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.num_foreground_voxels_for_intensitystats = 1e5

    return SmallFingerprint


def _dataset_name(dataset_id: int, paths: NnUNetPaths) -> str:
    """``DatasetXXX_Name`` of ``dataset_id`` in the raw folder."""
    prefix = f"Dataset{int(dataset_id):03d}_"
    names = [p.name for p in paths.raw.iterdir() if p.name.startswith(prefix)]
    if len(names) != 1:
        raise FileNotFoundError(f"{paths.raw}: expected one {prefix}* folder, found {names}")
    return names[0]


class _LogStream:
    """A file-like sink that forwards nnU-Net's ``print`` output to ``logging`` at debug level."""

    def write(self, text: str) -> int:
        """Log each non-empty line."""
        for line in text.splitlines():
            if line.strip():
                log.debug("nnunet: %s", line)
        return len(text)

    def flush(self) -> None:
        """Nothing is buffered."""


@dataclass(frozen=True)
class Schedule:
    """How long one nnU-Net trains: epochs x iterations, checkpoint cadence, soft deadline."""

    epochs: int = 10
    iterations: int = 10
    val_iterations: int = 2
    save_every: int = 1
    initial_lr: float = 1e-2
    #: ``sgd`` (nnU-Net's SGD, Nesterov momentum 0.99) or ``adam`` (AdamW: learns faster in short schedules).
    optimizer: str = "sgd"
    #: ``time.monotonic()`` value after which training stops at the end of the epoch; None = none.
    deadline: float | None = None


@functools.cache
def trainer_class() -> type:
    """Return the harness's trainer: ``nnUNetTrainerNoMirroring`` (left/right labels) with a budgeted loop."""
    from nnunetv2.training.nnUNetTrainer.variants.data_augmentation.nnUNetTrainerNoMirroring import (
        nnUNetTrainerNoMirroring,
    )

    return _make_trainer(nnUNetTrainerNoMirroring)


def _make_trainer(base: type) -> type:
    class HarnessTrainer(base):
        """Budgeted, quiet nnU-Net trainer; the harness sets ``schedule`` after construction."""

        schedule: Schedule = Schedule()
        on_epoch: Callable[[int, dict[str, float]], None] | None = None
        #: Called after every checkpoint nnU-Net writes (the harness's compute ledger).
        on_checkpoint: Callable[[], None] | None = None
        _t0: float | None = None

        def apply_schedule(self, schedule: Schedule) -> None:
            """Adopt ``schedule`` (epochs, iterations, checkpoint cadence, learning rate, deadline)."""
            self.schedule = schedule
            self.num_epochs = schedule.epochs
            self.num_iterations_per_epoch = schedule.iterations
            self.num_val_iterations_per_epoch = schedule.val_iterations
            self.save_every = schedule.save_every
            self.initial_lr = schedule.initial_lr
            self.best_epoch, self.time_to_best, self.elapsed = -1, None, 0.0
            self.logger.plot_progress_png = _no_plot  # 1.5 s per epoch on CPU; the harness logs metrics

        def save_checkpoint(self, filename: str) -> None:
            """nnU-Net's checkpoint, written atomically, with the harness's seconds beside it."""
            if self._t0 is not None:
                self.elapsed = time.monotonic() - self._t0
            super().save_checkpoint(filename + ".tmp")
            if not os.path.exists(filename + ".tmp"):
                return  # checkpointing disabled, or not rank 0
            os.replace(filename + ".tmp", filename)
            _write_json(
                Path(filename + SIDECAR),
                {"elapsed": self.elapsed, "best_epoch": self.best_epoch, "time_to_best": self.time_to_best},
            )
            if self.on_checkpoint is not None:
                self.on_checkpoint()

        def restore_harness_state(self, checkpoint: Path) -> None:
            """Training seconds and best epoch saved beside ``checkpoint`` (absent before they were kept)."""
            side = Path(str(checkpoint) + SIDECAR)
            if side.exists():
                info = json.loads(side.read_text())
                self.elapsed, self.best_epoch = float(info["elapsed"]), int(info["best_epoch"])
                self.time_to_best = info["time_to_best"]

        def print_to_log_file(
            self, *args: Any, also_print_to_console: bool = True, add_timestamp: bool = True
        ) -> None:
            """Write nnU-Net's log file and send the line to ``logging`` instead of stdout."""
            super().print_to_log_file(*args, also_print_to_console=False, add_timestamp=add_timestamp)
            log.debug("nnunet: %s", " ".join(str(a) for a in args))

        def configure_optimizers(self):  # noqa: ANN202
            """nnU-Net's SGD, or AdamW with the same polynomial decay when the schedule asks for it."""
            if self.schedule.optimizer != "adam":
                return super().configure_optimizers()
            import torch
            from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler

            opt = torch.optim.AdamW(
                self.network.parameters(), self.initial_lr, weight_decay=self.weight_decay
            )
            return opt, PolyLRScheduler(opt, self.initial_lr, self.num_epochs)

        def plot_network_architecture(self) -> None:
            """Skipped: needs hiddenlayer/graphviz and costs time."""

        def run_training(self) -> None:
            """nnU-Net's loop, ending early at the deadline (the last epoch's state is final)."""
            with contextlib.redirect_stdout(_LogStream()):
                self.on_train_start()
                t0 = self._t0 = time.monotonic() - self.elapsed
                for _ in range(self.current_epoch, self.num_epochs):
                    self.on_epoch_start()
                    self.on_train_epoch_start()
                    outputs = [
                        self.train_step(next(self.dataloader_train))
                        for _ in range(self.num_iterations_per_epoch)
                    ]
                    self.on_train_epoch_end(outputs)
                    with _no_grad():
                        self.on_validation_epoch_start()
                        val = [
                            self.validation_step(next(self.dataloader_val))
                            for _ in range(self.num_val_iterations_per_epoch)
                        ]
                        self.on_validation_epoch_end(val)
                    epoch, best_before = self.current_epoch, self._best_ema
                    self.on_epoch_end()
                    self.elapsed = time.monotonic() - t0
                    if self._best_ema is not None and (best_before is None or self._best_ema > best_before):
                        self.best_epoch, self.time_to_best = epoch, self.elapsed
                    if self.on_epoch is not None:
                        self.on_epoch(epoch, self.epoch_metrics())
                    deadline = self.schedule.deadline
                    if (
                        deadline is not None
                        and time.monotonic() > deadline
                        and self.current_epoch < self.num_epochs
                    ):
                        log.warning(
                            "nnU-Net: soft budget reached after epoch %d of %d; stopping",
                            epoch + 1,
                            self.num_epochs,
                        )
                        break
                self.on_train_end()

        def epoch_metrics(self) -> dict[str, float]:
            """Return the last epoch's losses and pseudo Dice as floats."""
            get = self.logger.get_value
            out = {
                "train_loss": float(get("train_losses", step=-1)),
                "val_loss": float(get("val_losses", step=-1)),
                "pseudo_dice": float(get("mean_fg_dice", step=-1)),
            }
            return {k: v for k, v in out.items() if math.isfinite(v)}

    HarnessTrainer.__name__ = HarnessTrainer.__qualname__ = "HarnessTrainer"
    return HarnessTrainer


def _write_json(path: Path, obj: dict) -> None:
    """Write ``obj`` to ``path`` atomically (temp file + ``os.replace``)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj))
    os.replace(tmp, path)


def _no_plot(output_folder: str) -> None:
    """Stand-in for nnU-Net's per-epoch progress plot."""


def _no_grad() -> contextlib.AbstractContextManager:
    import torch

    return torch.no_grad()


def train(
    dataset_id: int,
    paths: NnUNetPaths,
    fold: int,
    schedule: Schedule,
    device: str = "cpu",
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    checkpointed: Callable[[], None] | None = None,
    resumed: Callable[[bool], None] | None = None,
) -> Path:
    """Train (or resume, or reuse) ``2d_tiny`` on ``fold``; returns the fold's output folder.

    A ``checkpoint_final.pth`` already there is reused as is; a ``checkpoint_latest.pth``
    is resumed from its next epoch (``resumed(done)`` is called in both cases, and
    ``checkpointed()`` after every checkpoint written).
    """
    import torch

    name = _dataset_name(dataset_id, paths)
    plans = json.loads((paths.preprocessed / name / f"{PLANS}.json").read_text())
    dataset_json = json.loads((paths.preprocessed / name / "dataset.json").read_text())
    cls = trainer_class()
    out = paths.results / name / f"{cls.__name__}__{PLANS}__{TINY}" / f"fold_{fold}"
    if (out / "checkpoint_final.pth").exists():
        log.info("nnU-Net %s fold %s: reusing %s", name, fold, out / "checkpoint_final.pth")
        if resumed is not None:
            resumed(True)
        return out
    latest = out / "checkpoint_latest.pth"
    plans["continue_training"] = latest.exists()
    with nnunet_env(paths, n_proc_da=0), contextlib.redirect_stdout(_LogStream()), warnings.catch_warnings():
        # nnU-Net divides 0/0 for classes absent from a validation batch (its pseudo Dice is NaN then)
        warnings.filterwarnings("ignore", "invalid value encountered", RuntimeWarning)
        trainer = cls(plans, TINY, fold, dataset_json, device=torch.device(device))
        trainer.apply_schedule(schedule)
        trainer.on_epoch, trainer.on_checkpoint = on_epoch, checkpointed
        if latest.exists():
            trainer.load_checkpoint(str(latest))
            trainer.restore_harness_state(latest)
            if resumed is not None:
                resumed(False)
            log.info("nnU-Net %s fold %s: resuming at epoch %d", name, fold, trainer.current_epoch)
        trainer.run_training()
    (out / "harness.json").write_text(
        json.dumps(
            {
                "best_epoch": trainer.best_epoch,
                "time_to_best_s": trainer.time_to_best,
                "epochs_done": trainer.current_epoch,
                "train_seconds": trainer.elapsed,
            }
        )
    )
    return out


def write_splits(paths: NnUNetPaths, dataset_id: int, folds: list[dict[str, list[str]]]) -> Path:
    """Write ``splits_final.json`` (the harness's own study-level folds) before training."""
    target = paths.preprocessed / _dataset_name(dataset_id, paths) / "splits_final.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(folds, indent=1))
    return target
