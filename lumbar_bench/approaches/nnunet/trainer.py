"""nnU-Net v2 through its Python API: paths per call, in-process planning, a harness-owned trainer.

nnU-Net reads its folders from environment variables. :func:`nnunet_env` sets them only
around a call and restores ``os.environ`` afterwards, so the user's environment is
never touched. Fingerprinting and preprocessing run in this process through subclasses of
nnU-Net's extractor and preprocessor (:mod:`.harness_planning`): nnU-Net's own spawn pools
cost 2-5 s of start-up per worker. The trainer (:mod:`.harness_trainer`, imported lazily:
it needs torch) is nnU-Net's ``nnUNetTrainerNoMirroring`` with documented methods
overridden: it stops at the compute budget, logs through ``logging`` and resumes from
``checkpoint_latest.pth``; the schedule it is handed and the sidecar it writes beside each
checkpoint are in :mod:`.schedule`. Only the nnunetv2 releases in :data:`NNUNET_SUPPORTED` are
accepted: they are checked before nnunetv2 is imported. The approach imports this module to build
its configs, so it imports neither torch nor nnunetv2 at its top (torch is first imported once a
stage runs, as the run's ``seed_everything`` expects).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import logging
import os
import re
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from lumbar_bench.approaches.nnunet.log_stream import LogStream
from lumbar_bench.approaches.nnunet.schedule import (
    SCHEDULE_FILE,
    SIDECAR,
    Schedule,
    read_sidecar,
    write_schedule,
)
from lumbar_bench.core.errors import ConfigError

log = logging.getLogger(__name__)

PLANS = "nnUNetPlans"
TINY = "2d_tiny"
#: Restored after every call; nnU-Net's multi-GPU training sets ``MASTER_ADDR``/``MASTER_PORT`` itself.
_ENV_KEYS = (
    "nnUNet_raw",
    "nnUNet_preprocessed",
    "nnUNet_results",
    "nnUNet_n_proc_DA",
    "nnUNet_extTrainer",
    "MASTER_ADDR",
    "MASTER_PORT",
)
#: The nnunetv2 releases the harness is tested with, as pinned in ``pyproject.toml``.
NNUNET_SUPPORTED = ">=2.8.1,<2.9"
_SUPPORTED_RANGE = ((2, 8, 1), (2, 9))


def check_nnunet_version(installed: str | None = None) -> str:
    """Return the installed nnunetv2 version; :class:`ConfigError` outside :data:`NNUNET_SUPPORTED`.

    ``installed`` overrides the version read from the package metadata (for tests).
    """
    if installed is None:
        try:
            installed = metadata.version("nnunetv2")
        except metadata.PackageNotFoundError:
            raise ConfigError(
                f"nnunetv2 is not installed; the nnunet approaches need nnunetv2{NNUNET_SUPPORTED}"
            ) from None
    match = re.match(r"\d+(\.\d+)*", installed)
    release = tuple(int(x) for x in match.group().split(".")) if match else ()
    low, high = _SUPPORTED_RANGE
    if not low <= release < high:
        raise ConfigError(
            f"nnunetv2 {installed} is installed; lumbar-bench supports nnunetv2{NNUNET_SUPPORTED} "
            f"(pip install 'nnunetv2{NNUNET_SUPPORTED}')"
        )
    return installed


@dataclass(frozen=True)
class NnUNetPaths:
    """The three nnU-Net folders of one pipeline (raw and preprocessed are cached, results per run)."""

    raw: Path
    preprocessed: Path
    results: Path


@contextlib.contextmanager
def nnunet_env(
    paths: NnUNetPaths, n_proc_da: int | None = None, ext_trainer: Path | None = None
) -> Iterator[None]:
    """Set nnU-Net's variables for the duration of the block and restore ``os.environ`` after."""
    saved = {k: os.environ.get(k) for k in _ENV_KEYS}
    values: dict[str, object] = {
        "nnUNet_raw": paths.raw,
        "nnUNet_preprocessed": paths.preprocessed,
        "nnUNet_results": paths.results,
    }
    if n_proc_da is not None:
        values["nnUNet_n_proc_DA"] = n_proc_da
    if ext_trainer is not None:
        values["nnUNet_extTrainer"] = ext_trainer
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
    """Fingerprint, plan and preprocess ``dataset_id`` in this process; returns the plans with ``2d_tiny``.

    ``threads`` is accepted for compatibility and unused: planning runs case by case here.
    """
    check_nnunet_version()
    # lazy: after the version check (a missing or unsupported nnunetv2 is one ConfigError line)
    from nnunetv2.experiment_planning import plan_and_preprocess_api as api

    from lumbar_bench.approaches.nnunet import harness_planning as hp  # lazy: imports nnunetv2

    with (
        nnunet_env(paths),
        contextlib.redirect_stdout(LogStream()),
        contextlib.redirect_stderr(LogStream()),
    ):
        api.extract_fingerprint_dataset(
            int(dataset_id), hp.InProcessFingerprint, check_dataset_integrity=False, verbose=False
        )
        plans, identifier = api.plan_experiment_dataset(int(dataset_id))
        hp.InProcessPreprocessor(verbose=False).run(int(dataset_id), "2d", identifier)
    plans_file = paths.preprocessed / _dataset_name(dataset_id, paths) / f"{PLANS}.json"
    plans = json.loads(plans_file.read_text())
    plans["configurations"][TINY] = tiny_configuration(plans, patch, batch_size, features)
    plans_file.write_text(json.dumps(plans, indent=1))
    return plans


def _dataset_name(dataset_id: int, paths: NnUNetPaths) -> str:
    """``DatasetXXX_Name`` of ``dataset_id`` in the raw folder."""
    prefix = f"Dataset{int(dataset_id):03d}_"
    names = [p.name for p in paths.raw.iterdir() if p.name.startswith(prefix)]
    if len(names) != 1:
        raise FileNotFoundError(f"{paths.raw}: expected one {prefix}* folder, found {names}")
    return names[0]


@functools.cache
def trainer_class() -> type:
    """Return the harness's trainer class (imports torch and nnunetv2; checks nnunetv2's version first)."""
    check_nnunet_version()
    # lazy: imports torch and nnunetv2, after the version check
    from lumbar_bench.approaches.nnunet.harness_trainer import HarnessTrainer

    return HarnessTrainer


def train(
    dataset_id: int,
    paths: NnUNetPaths,
    fold: int,
    schedule: Schedule,
    device: str = "cpu",
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    checkpointed: Callable[[], None] | None = None,
    resumed: Callable[[bool], None] | None = None,
    num_gpus: int = 1,
) -> Path:
    """Train (or resume, or reuse) ``2d_tiny`` on ``fold``; returns the fold's output folder.

    A ``checkpoint_final.pth`` already there is reused as is; a ``checkpoint_latest.pth``
    is resumed from its next epoch (``resumed(done)`` is called in both cases, and
    ``checkpointed()`` after every checkpoint written). ``num_gpus`` > 1 hands the training to
    nnU-Net's own DDP (:func:`train_multi_gpu`).
    """
    import torch  # lazy: importing this module (approach.py does) must not import torch

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
    if num_gpus > 1:
        train_multi_gpu(name, paths, fold, schedule, num_gpus, resumed)
        return out
    plans["continue_training"] = latest.exists()
    with nnunet_env(paths, n_proc_da=0), contextlib.redirect_stdout(LogStream()), warnings.catch_warnings():
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
        info = {
            "best_epoch": trainer.best_epoch,
            "time_to_best": trainer.time_to_best,
            "elapsed": trainer.elapsed,
        }
        write_summary(
            out, {**info, "iteration_flops": trainer.iteration_flops()}, trainer.current_epoch, schedule
        )
    return out


def write_summary(out: Path, info: dict, epochs: int, schedule: Schedule) -> None:
    """``harness.json`` of a finished training: best epoch, seconds and work, from a sidecar-style ``info``.

    The work (``train_flops``) is epochs x iterations x one iteration's FLOPs; it is left out when
    ``info`` has no ``iteration_flops`` (a sidecar from before FLOPs were counted).
    """
    summary = {
        "best_epoch": info.get("best_epoch", -1),
        "time_to_best_s": info.get("time_to_best"),
        "epochs_done": epochs,
        "train_seconds": info.get("elapsed", 0.0),
    }
    if info.get("iteration_flops") is not None:
        flops = int(info["iteration_flops"])
        summary.update(iteration_flops=flops, train_flops=epochs * schedule.iterations * flops)
    (out / "harness.json").write_text(json.dumps(summary))


def require_gpus(num_gpus: int, device: str, available: int | None = None) -> None:
    """:class:`ConfigError` unless ``num_gpus`` is 1, or ``device`` is CUDA with that many devices.

    ``available`` overrides the CUDA device count torch reports (for tests).
    """
    if num_gpus == 1:
        return
    if num_gpus < 1:
        raise ConfigError(f"num_gpus={num_gpus}: needs 1 or more")
    if available is None:
        import torch  # lazy: a CPU run checks num_gpus=1 without torch

        available = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if not device.startswith("cuda") or available < num_gpus:
        raise ConfigError(
            f"num_gpus={num_gpus}: nnU-Net's multi-GPU training needs {num_gpus} CUDA devices; "
            f"this run has device {device!r} and torch sees {available}"
        )


def train_multi_gpu(
    name: str,
    paths: NnUNetPaths,
    fold: int,
    schedule: Schedule,
    num_gpus: int,
    resumed: Callable[[bool], None] | None = None,
) -> None:
    """Train ``2d_tiny`` on ``fold`` with nnU-Net's own DDP: ``run_training(..., num_gpus=N)``.

    nnU-Net spawns one process per GPU and builds the trainer there from its class name, found
    through ``nnUNet_extTrainer`` and a one-line module re-exporting it; the spawned trainers
    adopt the schedule from :data:`SCHEDULE_FILE` in the fold folder. Per-epoch metrics and
    checkpoint notices stay in those processes; ``harness.json`` is written from the final
    checkpoint's sidecar.
    """
    # lazy: torch and nnunetv2 stay out of this module's import (see the module docstring)
    import torch
    from nnunetv2.run.run_training import run_training

    from lumbar_bench.approaches.nnunet.checkpoint import load_checkpoint

    cls = trainer_class()
    out = paths.results / name / f"{cls.__name__}__{PLANS}__{TINY}" / f"fold_{fold}"
    out.mkdir(parents=True, exist_ok=True)
    write_schedule(out, schedule)
    ext = paths.results / "harness_trainer"
    ext.mkdir(parents=True, exist_ok=True)
    (ext / "lumbar_bench_trainer.py").write_text(
        f"from {cls.__module__} import {cls.__name__}  # noqa: F401\n"
    )
    resume = (out / "checkpoint_latest.pth").exists()
    if resume and resumed is not None:
        resumed(False)
    log.info("nnU-Net %s fold %s: training on %d GPUs (nnU-Net DDP)", name, fold, num_gpus)
    with nnunet_env(paths, n_proc_da=0, ext_trainer=ext), contextlib.redirect_stdout(LogStream()):
        run_training(
            name,
            TINY,
            fold,
            trainer_class_name=cls.__name__,
            plans_identifier=PLANS,
            num_gpus=num_gpus,
            continue_training=resume,
            device=torch.device("cuda"),
        )
    final = out / "checkpoint_final.pth"
    epochs = load_checkpoint(final)["current_epoch"] if final.exists() else 0
    write_summary(out, read_sidecar(final) or {}, epochs, schedule)


def write_splits(paths: NnUNetPaths, dataset_id: int, folds: list[dict[str, list[str]]]) -> Path:
    """Write ``splits_final.json`` (the harness's own study-level folds) before training."""
    target = paths.preprocessed / _dataset_name(dataset_id, paths) / "splits_final.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(folds, indent=1))
    return target


__all__ = [
    "NNUNET_SUPPORTED",
    "PLANS",
    "SCHEDULE_FILE",
    "SIDECAR",
    "TINY",
    "LogStream",
    "NnUNetPaths",
    "Schedule",
    "check_nnunet_version",
    "nnunet_env",
    "plan_and_preprocess",
    "require_gpus",
    "tiny_configuration",
    "train",
    "train_multi_gpu",
    "trainer_class",
    "write_splits",
]
