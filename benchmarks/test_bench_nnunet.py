"""nnU-Net training throughput: the harness's trainer against nnU-Net's own, in one run.

Both train the ``ci`` network of ``nnunet-raw`` (``Config.for_subset("ci")``: patch, batch
size, features, iterations per epoch) on one small synthetic 2D dataset (ellipses on noise,
three classes) with the same plans, one torch thread, augmentation in the main process, CPU:

- **harness**: :func:`lumbar_bench.approaches.nnunet.trainer.train` as the approach drives it,
  with the ci schedule (optimizer, learning rate, checkpoint cadence), every epoch's metrics
  logged to a real MLflow run (SQLite, through ``EpochMetrics`` as the approach does) and
  the compute ledger (:class:`~lumbar_bench.run.attempts.Claim`) told at every checkpoint;
- **bare**: nnU-Net's ``nnUNetTrainerNoMirroring`` with its own defaults (SGD, checkpoints,
  log file) except the schedule (epochs, iterations) and without the per-epoch progress plot
  (about 1.5 s per epoch on a CPU, which the harness drops too; with it the comparison would
  flatter the harness).

The two alternate for ``ROUNDS`` rounds. ``iterations_per_s`` of each is the iterations per
epoch over the median epoch time (end of one epoch to the end of the next, the first epoch
left out). The benchmark fails if the harness's is below ``MIN_RATIO`` times the bare trainer's.
``extra_info`` holds both rates (``iterations_per_s`` is the harness's), their ratio and the
median epoch times.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("nnunetv2", reason="nnunetv2 is not installed")

import torch  # noqa: E402
from nnunetv2.training.logging.nnunet_logger import MetaLogger  # noqa: E402
from nnunetv2.training.nnUNetTrainer.variants.data_augmentation.nnUNetTrainerNoMirroring import (  # noqa: E402
    nnUNetTrainerNoMirroring,
)

CASES = 16
EPOCHS = 5
ROUNDS = 3
DATASET_ID = 990
MIN_RATIO = 0.8


class _NoPlotLogger(MetaLogger):
    """nnU-Net's logger, taking over the trainer's, without the per-epoch progress plot."""

    def __init__(self, base: MetaLogger) -> None:
        vars(self).update(vars(base))

    def plot_progress_png(self, output_folder: str) -> None:
        pass


class BareTrainer(nnUNetTrainerNoMirroring):
    """nnU-Net's trainer without mirroring and without the progress plot; records epoch ends."""

    def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cuda")):  # noqa: B008
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.logger = _NoPlotLogger(self.logger)
        self.epoch_ends: list[float] = []

    def on_epoch_end(self) -> None:
        super().on_epoch_end()
        self.epoch_ends.append(time.monotonic())


def _ci_config():
    from lumbar_bench.approaches.registry import get_approach

    try:
        return get_approach("nnunet-raw").Config.for_subset("ci")
    except (ImportError, AttributeError) as exc:
        pytest.skip(f"the nnunet-raw approach is not available ({exc})")


def _cases(patch: int):
    """Ellipses of two classes on a noisy background, ``patch`` pixels square."""
    from lumbar_bench.approaches.nnunet.dataset import Case

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:patch, :patch]
    for i in range(CASES):
        label = np.zeros((patch, patch), np.uint8)
        for cls in (1, 2):
            (cy, cx), r = rng.uniform(0.25, 0.75, 2) * patch, rng.uniform(0.08, 0.15) * patch
            label[((yy - cy) ** 2 + (xx - cx) ** 2) < r**2] = cls
        image = 0.2 * rng.random((patch, patch)) + 0.35 * label
        yield Case(f"case{i:03d}", i, image.astype(np.float32), label)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Export, plan and preprocess the synthetic dataset once; an MLflow run and a ledger for the harness."""
    from lumbar_bench.approaches.nnunet import dataset as nd
    from lumbar_bench.approaches.nnunet import trainer as nt
    from lumbar_bench.run.attempts import Claim
    from lumbar_bench.tracking.client import tracked_run

    cfg = _ci_config()
    plan = cfg.plan()
    root = Path(tmp_path_factory.mktemp("bench_nnunet"))
    paths = nt.NnUNetPaths(root / "raw", root / "preprocessed", root / "results")
    nd.export_dataset(
        paths.raw, DATASET_ID, "Bench", _cases(plan.patch), ["background", "a", "b"], ignore=False
    )
    nt.plan_and_preprocess(DATASET_ID, paths, plan.patch, plan.batch_size, plan.features)
    ids = [f"case{i:03d}" for i in range(CASES)]
    nt.write_splits(paths, DATASET_ID, [{"train": ids[:12], "val": ids[12:]}])
    uri = f"sqlite:///{root / 'mlflow.db'}"
    (root / "work").mkdir()
    with tracked_run(uri, "bench", "nnunet") as run:
        claim = Claim(root / "work")
        claim.begin(run.run_id, uri, "cpu")
        claim.start_fit()
        try:
            yield {"paths": paths, "cfg": cfg, "run": run, "claim": claim, "root": root}
        finally:
            claim.end("finished")


def _train_harness(prepared: dict, results: Path) -> list[float]:
    """One harness training (ci schedule, EPOCHS epochs); returns the epoch end times."""
    from lumbar_bench.approaches.nnunet import trainer as nt
    from lumbar_bench.approaches.nnunet.epoch_metrics import EpochMetrics

    cfg, run, paths = prepared["cfg"], prepared["run"], prepared["paths"]
    schedule = nt.Schedule(
        EPOCHS,
        cfg.iterations,
        cfg.val_iterations,
        save_every=cfg.save_every,
        initial_lr=cfg.lr,
        optimizer=cfg.optimizer,
    )
    ends: list[float] = []
    run_paths = nt.NnUNetPaths(paths.raw, paths.preprocessed, results)
    with EpochMetrics(run.log_metric, "nnunet/bench/f0") as log_epoch:  # as training.Trainer logs

        def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
            log_epoch(epoch, metrics)
            ends.append(time.monotonic())

        nt.train(
            DATASET_ID, run_paths, 0, schedule, "cpu", on_epoch, checkpointed=prepared["claim"].checkpointed
        )
    return ends


def _train_bare(prepared: dict, results: Path) -> list[float]:
    """One bare nnU-Net training of EPOCHS epochs on the same plans and split; returns the epoch end times."""
    from lumbar_bench.approaches.nnunet import trainer as nt

    cfg, paths = prepared["cfg"], prepared["paths"]
    folder = paths.preprocessed / f"Dataset{DATASET_ID}_Bench"
    plans = json.loads((folder / "nnUNetPlans.json").read_text())
    plans["continue_training"] = False
    dataset_json = json.loads((folder / "dataset.json").read_text())
    run_paths = nt.NnUNetPaths(paths.raw, paths.preprocessed, results)
    with nt.nnunet_env(run_paths, n_proc_da=0), contextlib.redirect_stdout(nt.LogStream()):
        trainer = BareTrainer(plans, nt.TINY, 0, dataset_json, device=torch.device("cpu"))
        trainer.num_epochs, trainer.num_iterations_per_epoch = EPOCHS, cfg.iterations
        trainer.num_val_iterations_per_epoch = cfg.val_iterations
        trainer.run_training()
    return trainer.epoch_ends


def _rate(epoch_ends: list[list[float]], iterations: int) -> tuple[float, list[float]]:
    """Iterations per second from the median epoch time (first epoch of each training left out)."""
    times = [float(b - a) for ends in epoch_ends for a, b in zip(ends, ends[1:], strict=False)]
    return iterations / float(np.median(times)), times


def test_harness_trains_nearly_as_fast_as_bare_nnunet(benchmark, prepared) -> None:
    from lumbar_bench.core.seeding import torch_threads

    root, iterations = prepared["root"], prepared["cfg"].iterations
    ends: dict[str, list[list[float]]] = {"harness": [], "bare": []}
    rounds = iter(range(ROUNDS))

    def one_round() -> None:
        i = next(rounds)
        order = ("bare", "harness") if i % 2 == 0 else ("harness", "bare")
        with torch_threads(1):
            for kind in order:
                fn = _train_bare if kind == "bare" else _train_harness
                ends[kind].append(fn(prepared, root / f"results_{kind}_{i}"))

    benchmark.pedantic(one_round, rounds=ROUNDS, iterations=1)
    harness, harness_times = _rate(ends["harness"], iterations)
    bare, bare_times = _rate(ends["bare"], iterations)
    plan = prepared["cfg"].plan()
    benchmark.extra_info.update(
        iterations_per_epoch=iterations,
        epochs=EPOCHS,
        patch=plan.patch,
        batch_size=plan.batch_size,
        features=list(plan.features),
        torch_threads=1,
        iterations_per_s=harness,
        bare_iterations_per_s=bare,
        harness_vs_bare_ratio=harness / bare,
        harness_epoch_s_median=float(np.median(harness_times)),
        bare_epoch_s_median=float(np.median(bare_times)),
        epochs_timed=len(harness_times),
    )
    assert all(len(e) == EPOCHS for e in ends["harness"] + ends["bare"])
    assert harness >= MIN_RATIO * bare, (
        f"harness trains at {harness:.2f} it/s, {harness / bare:.2f}x nnU-Net's bare trainer "
        f"({bare:.2f} it/s); at least {MIN_RATIO}x expected. Epoch seconds: harness "
        f"{np.round(harness_times, 2).tolist()}, bare {np.round(bare_times, 2).tolist()}"
    )
