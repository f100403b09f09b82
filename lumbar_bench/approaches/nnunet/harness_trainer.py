"""The harness's nnU-Net trainer: nnU-Net's own ``run_training`` loop, adjusted through its hooks.

Imported only when an nnU-Net trains or predicts (it imports torch and nnunetv2), via
:func:`lumbar_bench.approaches.nnunet.trainer.trainer_class`. Every change is an override
of a method nnU-Net's trainer documents for subclassing:

- ``__init__``: nnU-Net's logger without the per-epoch progress plot (1.5 s per epoch on CPU);
- ``configure_optimizers``: AdamW with nnU-Net's polynomial decay when the schedule asks for it;
- ``on_train_start`` / ``on_epoch_end``: the harness's seconds, best epoch, per-epoch callback and
  soft deadline (the loop ends after the epoch in which the deadline passed);
- ``save_checkpoint``: atomic, with the harness's seconds beside it and the compute ledger told;
- ``load_checkpoint``: a resume reads the checkpoint with ``weights_only=True``;
- ``print_to_log_file``: nnU-Net's log file, and ``logging`` instead of stdout;
- ``perform_actual_validation``: skipped (only nnU-Net's multi-GPU runner calls it), and a trainer
  that nnU-Net spawns for multi-GPU training reads its schedule from the fold folder.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from nnunetv2.training.logging.nnunet_logger import MetaLogger
from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler
from nnunetv2.training.nnUNetTrainer.variants.data_augmentation.nnUNetTrainerNoMirroring import (
    nnUNetTrainerNoMirroring,
)

from lumbar_bench.approaches.nnunet.checkpoint import load_checkpoint
from lumbar_bench.approaches.nnunet.log_stream import LogStream
from lumbar_bench.approaches.nnunet.schedule import Schedule, read_schedule, read_sidecar, write_sidecar
from lumbar_bench.approaches.work import count_step

log = logging.getLogger(__name__)


class QuietLogger(MetaLogger):
    """nnU-Net's logger without the progress plot, which costs 1.5 s per epoch on a CPU.

    It takes over the state of the trainer's own logger (its local values and any wandb
    logger), so no second logger is started.
    """

    def __init__(self, base: MetaLogger) -> None:  # noqa: D107 (see class)
        vars(self).update(vars(base))

    def plot_progress_png(self, output_folder: str) -> None:
        """No plot: the harness logs the same values as metrics."""


class _DeadlineReached(Exception):
    """Raised after an epoch when the soft deadline has passed; ends nnU-Net's loop early."""


class HarnessTrainer(nnUNetTrainerNoMirroring):
    """nnU-Net without mirroring (left/right labels), budgeted and quiet; see the module docstring.

    The constructor keeps nnU-Net's signature exactly (nnU-Net records it for checkpoints);
    the harness sets the schedule and callbacks afterwards with :meth:`apply_schedule`.
    """

    def __init__(
        self,
        plans: dict,
        configuration: str,
        fold: int,
        dataset_json: dict,
        device: torch.device = torch.device("cuda"),  # noqa: B008 (nnU-Net's signature)
    ) -> None:
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.logger = QuietLogger(self.logger)
        self.schedule = Schedule()
        self.on_epoch: Callable[[int, dict[str, float]], None] | None = None
        #: Called after every checkpoint written (the harness's compute ledger).
        self.on_checkpoint: Callable[[], None] | None = None
        self.best_epoch, self.time_to_best, self.elapsed = -1, None, 0.0
        self._t0: float | None = None
        self._iteration_flops: int | None = None
        planned = read_schedule(Path(self.output_folder))
        if planned is not None:  # a trainer nnU-Net spawned for multi-GPU training (trainer.train_multi_gpu)
            self.apply_schedule(planned)

    def apply_schedule(self, schedule: Schedule) -> None:
        """Adopt ``schedule`` (epochs, iterations, checkpoint cadence, learning rate, deadline)."""
        self.schedule = schedule
        self.num_epochs = schedule.epochs
        self.num_iterations_per_epoch = schedule.iterations
        self.num_val_iterations_per_epoch = schedule.val_iterations
        self.save_every = schedule.save_every
        self.initial_lr = schedule.initial_lr

    def configure_optimizers(self) -> tuple[torch.optim.Optimizer, PolyLRScheduler]:
        """nnU-Net's SGD, or AdamW with the same polynomial decay when the schedule asks for it."""
        if self.schedule.optimizer != "adam":
            return super().configure_optimizers()
        opt = torch.optim.AdamW(self.network.parameters(), self.initial_lr, weight_decay=self.weight_decay)
        return opt, PolyLRScheduler(opt, self.initial_lr, self.num_epochs)

    def perform_actual_validation(self, save_probabilities: bool = False) -> None:
        """Skipped (nnU-Net's multi-GPU runner calls it): the harness evaluates held-out cases itself."""

    def plot_network_architecture(self) -> None:
        """Skipped: needs hiddenlayer/graphviz and costs time."""

    def run_training(self) -> None:
        """nnU-Net's own loop (stdout to ``logging``); at the deadline it ends like a finished one."""
        with contextlib.redirect_stdout(LogStream()):
            try:
                super().run_training()
            except _DeadlineReached:
                self.on_train_end()

    def on_train_start(self) -> None:
        """nnU-Net's start (network, data loaders); the harness's clock continues from a resume."""
        super().on_train_start()
        self._t0 = time.monotonic() - self.elapsed

    def on_epoch_end(self) -> None:
        """nnU-Net's epoch end (checkpoints), then best epoch, the callback and the deadline."""
        epoch, best_before = self.current_epoch, self._best_ema
        super().on_epoch_end()
        self.elapsed = time.monotonic() - self._t0
        if self._best_ema is not None and (best_before is None or self._best_ema > best_before):
            self.best_epoch, self.time_to_best = epoch, self.elapsed
        if self.on_epoch is not None:
            self.on_epoch(epoch, self.epoch_metrics())
        deadline = self.schedule.deadline
        if deadline is not None and time.monotonic() > deadline and self.current_epoch < self.num_epochs:
            log.warning(
                "nnU-Net: soft budget reached after epoch %d of %d; stopping", epoch + 1, self.num_epochs
            )
            raise _DeadlineReached

    def iteration_flops(self) -> int:
        """FLOPs of one training iteration (forward and backward) at the whole batch and patch size.

        Counted on a copy of the network (:func:`lumbar_bench.approaches.work.count_step`); under
        DDP the whole batch is the ranks' batches together, so the count is the job's, not a rank's.
        """
        if self._iteration_flops is None:
            network = getattr(self.network, "module", self.network)
            batch = int(self.configuration_manager.batch_size)
            patch = tuple(int(p) for p in self.configuration_manager.patch_size)
            self._iteration_flops = count_step(network, [(batch, int(self.num_input_channels), *patch)])
        return self._iteration_flops

    def epoch_metrics(self) -> dict[str, float]:
        """Return the last epoch's losses and pseudo Dice as floats."""
        get = self.logger.get_value
        out = {
            "train_loss": float(get("train_losses", step=-1)),
            "val_loss": float(get("val_losses", step=-1)),
            "pseudo_dice": float(get("mean_fg_dice", step=-1)),
        }
        return {k: v for k, v in out.items() if math.isfinite(v)}

    def save_checkpoint(self, filename: str) -> None:
        """nnU-Net's checkpoint, written atomically, with the harness's seconds beside it."""
        if self._t0 is not None:
            self.elapsed = time.monotonic() - self._t0
        super().save_checkpoint(filename + ".tmp")
        if not os.path.exists(filename + ".tmp"):
            return  # checkpointing disabled, or not rank 0
        os.replace(filename + ".tmp", filename)
        write_sidecar(
            filename,
            {
                "elapsed": self.elapsed,
                "best_epoch": self.best_epoch,
                "time_to_best": self.time_to_best,
                "iteration_flops": self.iteration_flops(),
            },
        )
        if self.on_checkpoint is not None:
            self.on_checkpoint()

    def load_checkpoint(self, filename_or_checkpoint: dict | str) -> None:
        """nnU-Net's resume, from a checkpoint read with ``weights_only=True``.

        nnU-Net 2.8 reads a path with ``weights_only=False`` and its dict branch fails
        (``UnboundLocalError``), so this restores the same state as its method: network weights
        (``module.`` prefixes dropped where the network has none), init args, epoch, logger,
        best EMA, mirroring axes, optimizer and grad scaler.
        """
        if not self.was_initialized:
            self.initialize()
        ckpt = filename_or_checkpoint
        if not isinstance(ckpt, dict):
            ckpt = load_checkpoint(Path(ckpt))
        network = self.network.module if self.is_ddp else self.network
        network = getattr(network, "_orig_mod", network)  # a torch.compile'd network
        own = network.state_dict().keys()
        network.load_state_dict(
            {
                k[7:] if k not in own and k.startswith("module.") else k: v
                for k, v in ckpt["network_weights"].items()
            }
        )
        self.my_init_kwargs, self.current_epoch = ckpt["init_args"], ckpt["current_epoch"]
        self.logger.load_checkpoint(ckpt["logging"])
        self._best_ema = ckpt["_best_ema"]
        self.inference_allowed_mirroring_axes = ckpt.get(
            "inference_allowed_mirroring_axes", self.inference_allowed_mirroring_axes
        )
        self.optimizer.load_state_dict(ckpt["optimizer_state"])
        if self.grad_scaler is not None and ckpt["grad_scaler_state"] is not None:
            self.grad_scaler.load_state_dict(ckpt["grad_scaler_state"])

    def restore_harness_state(self, checkpoint: Path) -> None:
        """Training seconds and best epoch saved beside ``checkpoint`` (absent before they were kept)."""
        info = read_sidecar(checkpoint)
        if info is not None:
            self.elapsed, self.best_epoch = float(info["elapsed"]), int(info["best_epoch"])
            self.time_to_best = info["time_to_best"]

    def print_to_log_file(
        self, *args: Any, also_print_to_console: bool = True, add_timestamp: bool = True
    ) -> None:
        """Write nnU-Net's log file and send the line to ``logging`` instead of stdout."""
        super().print_to_log_file(*args, also_print_to_console=False, add_timestamp=add_timestamp)
        log.debug("nnunet: %s", " ".join(str(a) for a in args))
