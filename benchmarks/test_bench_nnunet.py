"""nnU-Net training throughput (iterations per second) on the ``ci`` configuration.

The network, patch, batch size and iterations per epoch come from the ``nnunet-raw``
approach's ``Config.for_subset("ci")`` (its ``plan()`` and ``iterations``), trained through the harness's own
``lumbar_bench.approaches.nnunet.trainer`` on a small synthetic 2D dataset (ellipses on
noise, three classes), so the benchmark measures nnU-Net's training loop, not the
pseudo-mask pipeline. ``extra_info``:

- ``iterations_per_s``: steady state, from the time between the ends of epochs 2 and 3;
- ``end_to_end_iterations_per_s``: all iterations over the whole ``train`` call, which
  includes building the trainer, the data loaders and the network.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("nnunetv2", reason="nnunetv2 is not installed")

CASES = 16
EPOCHS = 3
DATASET_ID = 990


def _ci_plan_and_schedule() -> tuple[object, int]:
    """The ci plan (patch, batch size, features) and iterations per epoch of ``nnunet-raw``."""
    from lumbar_bench.registry import get_approach

    try:
        cfg = get_approach("nnunet-raw").Config.for_subset("ci")
    except (ImportError, AttributeError) as exc:
        pytest.skip(f"the nnunet-raw approach is not available yet ({exc})")
    plan = getattr(cfg, "plan", None)
    plan = plan() if callable(plan) else plan
    if plan is None or not hasattr(plan, "patch"):
        pytest.skip("nnunet-raw's config exposes no `plan` (PlanConfig)")
    return plan, int(getattr(cfg, "iterations", 10))


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
    """Export, plan and preprocess the synthetic dataset once."""
    from lumbar_bench.approaches.nnunet import dataset as nd
    from lumbar_bench.approaches.nnunet import trainer as nt

    plan, iterations = _ci_plan_and_schedule()
    root = Path(tmp_path_factory.mktemp("bench_nnunet"))
    paths = nt.NnUNetPaths(root / "raw", root / "preprocessed", root / "results")
    nd.export_dataset(
        paths.raw, DATASET_ID, "Bench", _cases(plan.patch), ["background", "a", "b"], ignore=False
    )
    nt.plan_and_preprocess(DATASET_ID, paths, plan.patch, plan.batch_size, plan.features)
    ids = [f"case{i:03d}" for i in range(CASES)]
    nt.write_splits(paths, DATASET_ID, [{"train": ids[:12], "val": ids[12:]}])
    return {"paths": paths, "plan": plan, "iterations": iterations}


def test_nnunet_train_iterations_per_second(benchmark, prepared) -> None:
    from lumbar_bench.approaches.nnunet import trainer as nt

    paths, iterations = prepared["paths"], prepared["iterations"]
    counter = itertools.count()
    epoch_ends: list[list[float]] = []

    def setup():
        results = paths.results.parent / f"results{next(counter)}"
        ends: list[float] = []
        epoch_ends.append(ends)
        schedule = nt.Schedule(epochs=EPOCHS, iterations=iterations, val_iterations=1, save_every=EPOCHS)
        run_paths = nt.NnUNetPaths(paths.raw, paths.preprocessed, results)
        return (DATASET_ID, run_paths, 0, schedule), {
            "on_epoch": lambda epoch, m: ends.append(time.monotonic())
        }

    benchmark.pedantic(nt.train, setup=setup, rounds=2, iterations=1)
    steady = [iterations / (e[-1] - e[-2]) for e in epoch_ends if len(e) >= 2]
    plan = prepared["plan"]
    benchmark.extra_info.update(
        iterations_per_epoch=iterations,
        epochs=EPOCHS,
        patch=plan.patch,
        batch_size=plan.batch_size,
        features=list(plan.features),
        iterations_per_s=float(np.median(steady)) if steady else float("nan"),
        end_to_end_iterations_per_s=EPOCHS * iterations / benchmark.stats.stats.mean,
    )
    assert steady and all(s > 0 for s in steady)
