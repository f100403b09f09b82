"""ResNet-18 training throughput: the harness's pipeline against a bare torch loop.

One "image" is one study's stacked input (``3 x slices_per_series`` channels) at the
``ci`` schedule's size. Three measurements on the same phantom studies:

- ``inputs``: ``study_tensor`` from a warm series cache (what ``fit`` does once);
- ``harness``: one epoch of ``ResNet18Approach._train_epoch`` (indexing, ``_augment``,
  weighted cross-entropy, AdamW step) over tensors ``study_tensor`` made;
- ``bare``: a plain ``model(x) -> cross_entropy -> step`` loop over the same tensors,
  same model (``build_model``), batch size and optimiser: the floor.

``extra_info`` carries ``images_per_s``; the harness test adds ``overhead_ratio`` =
bare images/s ÷ harness images/s (1.0 = no overhead) and ``pipeline_ratio`` = bare
images/s ÷ (inputs + harness) images/s for a first epoch including input building.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

STUDIES = 32
_RESULTS: dict[str, float] = {}


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A small phantom, its cache warmed, the ci config, and the stacked inputs and labels."""
    from lumbar_bench.approaches.resnet18 import ResNet18Config, study_tensor
    from lumbar_bench.constants import LABEL_COLUMNS
    from lumbar_bench.data.phantom.synth import PhantomConfig, synthesize
    from lumbar_bench.data.rsna import RSNAData

    root = tmp_path_factory.mktemp("bench_resnet18")
    synthesize(root / "phantom", PhantomConfig(studies=STUDIES, size=128, seed=0), progress=False)
    data = RSNAData.load(root / "phantom", part="train", cache_dir=root / "cache")
    cfg = ResNet18Config.for_subset("ci")
    ids = list(data.labels.index)
    x = torch.from_numpy(np.stack([study_tensor(data, s, cfg) for s in ids]))  # also warms the cache
    y = torch.from_numpy(data.labels.loc[ids, list(LABEL_COLUMNS)].to_numpy(np.int64))
    return {"data": data, "cfg": cfg, "ids": ids, "x": x, "y": y, "root": Path(root)}


def _images_per_s(benchmark, images: int) -> float:
    rate = images / benchmark.stats.stats.mean
    benchmark.extra_info.update(images=images, images_per_s=rate)
    return rate


def test_resnet18_inputs_study_tensor(benchmark, setup) -> None:
    from lumbar_bench.approaches.resnet18 import study_tensor

    data, cfg, ids = setup["data"], setup["cfg"], setup["ids"]
    benchmark.pedantic(lambda: [study_tensor(data, s, cfg) for s in ids], rounds=3, iterations=1)
    benchmark.extra_info.update(image_size=cfg.image_size, channels=3 * cfg.slices_per_series)
    _RESULTS["inputs"] = _images_per_s(benchmark, len(ids))


def test_resnet18_train_bare_torch_loop(benchmark, setup) -> None:
    from lumbar_bench.approaches.resnet18 import build_model

    cfg, x, y = setup["cfg"], setup["x"], setup["y"]
    torch.manual_seed(0)
    model = build_model(x.shape[1])
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)

    def epoch() -> None:
        model.train()
        for i in range(0, len(x), cfg.batch_size):
            logits = model(x[i : i + cfg.batch_size]).view(-1, 3)
            loss = torch.nn.functional.cross_entropy(
                logits, y[i : i + cfg.batch_size].reshape(-1), ignore_index=-1
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    benchmark.pedantic(epoch, rounds=3, iterations=1, warmup_rounds=1)
    benchmark.extra_info.update(batch_size=cfg.batch_size, image_size=cfg.image_size)
    _RESULTS["bare"] = _images_per_s(benchmark, len(x))


def test_resnet18_train_harness_step(benchmark, setup) -> None:
    from lumbar_bench.approaches.resnet18 import ResNet18Approach
    from lumbar_bench.constants import SEVERITY_WEIGHTS
    from lumbar_bench.core.distributed import DistInfo

    cfg, x, y = setup["cfg"], setup["x"], setup["y"]
    torch.manual_seed(0)
    approach = ResNet18Approach(cfg)
    model = approach.model
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    loss_fn = torch.nn.CrossEntropyLoss(weight=torch.tensor(SEVERITY_WEIGHTS), ignore_index=-1)
    gen = torch.Generator().manual_seed(0)
    args = (model, opt, loss_fn, x, y, gen, torch.device("cpu"), DistInfo())  # one process
    benchmark.pedantic(approach._train_epoch, args=args, rounds=3, iterations=1, warmup_rounds=1)
    benchmark.extra_info.update(batch_size=cfg.batch_size, image_size=cfg.image_size, augment=cfg.augment)
    harness = _images_per_s(benchmark, len(x))
    if "bare" in _RESULTS:
        benchmark.extra_info["overhead_ratio"] = _RESULTS["bare"] / harness
    if "bare" in _RESULTS and "inputs" in _RESULTS:
        first_epoch = 1 / (1 / _RESULTS["inputs"] + 1 / harness)
        benchmark.extra_info["pipeline_images_per_s"] = first_epoch
        benchmark.extra_info["pipeline_ratio"] = _RESULTS["bare"] / first_epoch
