"""lsdc-2.5d throughput: crops per second, and grader training images per second against a bare torch loop.

On a small phantom with a warm series cache, at the ``full`` schedule's crop size:

- ``crops``: :func:`~lumbar_bench.approaches.lsdc25d.study.study_crops` at the annotated points
  (25 crops of ``2 * depth + 1`` slices per study; what ``fit`` does once per variant);
- ``bare``: a plain ``model(x) -> cross_entropy -> step`` loop of the same grader over the same
  crops in batches of the same size: the floor;
- ``harness``: one epoch of :func:`~lumbar_bench.approaches.lsdc25d.grader.train_epoch` (whole
  studies per batch, a random variant per crop, the any-severe-spinal term). It fails when it
  reaches less than ``MIN_HARNESS_RATIO`` of the bare loop's images per second.

One "image" is one slice of one crop.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

STUDIES = 16
MIN_HARNESS_RATIO = 0.8
_RESULTS: dict[str, float] = {}


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A small phantom, its series read, the full config, and the crop set at the annotated points."""
    from lumbar_bench.approaches.lsdc25d import sets
    from lumbar_bench.approaches.lsdc25d import study as st
    from lumbar_bench.approaches.lsdc25d.approach import Lsdc25dConfig
    from lumbar_bench.data.phantom.synth import PhantomConfig, synthesize
    from lumbar_bench.data.rsna import RSNAData

    root = tmp_path_factory.mktemp("bench_lsdc25d")
    synthesize(root / "phantom", PhantomConfig(studies=STUDIES, size=128, seed=0), progress=False)
    data = RSNAData.load(root / "phantom", part="train", cache_dir=root / "cache")
    cfg = Lsdc25dConfig.for_subset("full")
    ids = list(data.labels.index)
    studies = {s: st.load_series(data, s) for s in ids}
    truths = {s: st.truth_spots(studies[s], data.coordinates[data.coordinates.study_id == s]) for s in ids}
    made = [_study_crops(studies[s], truths[s], cfg) for s in ids]
    return {
        "cfg": cfg,
        "studies": studies,
        "truths": truths,
        "set": sets.crop_set([c[None] for c, _ in made], [v for _, v in made], data.labels, ids),
    }


def _study_crops(study, spots, cfg):  # noqa: ANN001, ANN202
    from lumbar_bench.approaches.lsdc25d import study as st
    from lumbar_bench.approaches.lsdc25d.crops import level_spacing

    points = st.spot_points(study, spots)
    return st.study_crops(
        study, spots, level_spacing(points), cfg.window, cfg.crop_depth, cfg.crop_size, cfg.flip
    )


def _images(crop_set) -> int:  # noqa: ANN001
    return int(crop_set.valid.sum()) * crop_set.crops.shape[3]


def test_lsdc25d_crops(benchmark, setup) -> None:  # noqa: ANN001
    cfg, studies, truths = setup["cfg"], setup["studies"], setup["truths"]
    made = benchmark.pedantic(
        lambda: [_study_crops(studies[s], truths[s], cfg) for s in studies], rounds=3, iterations=1
    )
    n = int(sum(v.sum() for _, v in made))
    rate = n / benchmark.stats.stats.mean
    benchmark.extra_info.update(crops=n, crops_per_s=rate, crop_size=cfg.crop_size, depth=cfg.crop_depth)
    assert n > 20 * len(studies)  # most label slots have a crop


def test_lsdc25d_train_bare_torch_loop(benchmark, setup) -> None:  # noqa: ANN001
    from lumbar_bench.approaches.lsdc25d import grader as gr

    cfg, data = setup["cfg"], setup["set"]
    rows, slots = np.nonzero(data.valid)
    x = torch.from_numpy(data.crops[0, rows, slots].astype(np.float32))
    y = torch.from_numpy(np.clip(data.labels[rows, slots], 0, 2))
    group, level = torch.from_numpy(gr.SLOT_GROUP[slots]), torch.from_numpy(gr.SLOT_LEVEL[slots])
    torch.manual_seed(0)
    model = gr.Grader(cfg.encoder)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    batch = cfg.studies_per_batch * 25

    def epoch() -> None:
        model.train()
        for i in range(0, len(x), batch):
            loss = torch.nn.functional.cross_entropy(
                model(x[i : i + batch], group[i : i + batch], level[i : i + batch]), y[i : i + batch]
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    benchmark.pedantic(epoch, rounds=3, iterations=1, warmup_rounds=1)
    rate = _images(data) / benchmark.stats.stats.mean
    benchmark.extra_info.update(images=_images(data), images_per_s=rate, encoder=cfg.encoder)
    _RESULTS["bare"] = rate


def test_lsdc25d_train_harness_epoch(benchmark, setup) -> None:  # noqa: ANN001
    from lumbar_bench.approaches.lsdc25d import grader as gr

    cfg, data = setup["cfg"], setup["set"]
    torch.manual_seed(0)
    model = gr.Grader(cfg.encoder)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    rng = np.random.default_rng(0)
    args = (model, opt, data, cfg.studies_per_batch, cfg.any_weight, rng, "cpu")
    benchmark.pedantic(gr.train_epoch, args=args, rounds=3, iterations=1, warmup_rounds=1)
    rate = _images(data) / benchmark.stats.stats.mean
    benchmark.extra_info.update(images=_images(data), images_per_s=rate, encoder=cfg.encoder)
    if "bare" in _RESULTS:
        ratio = rate / _RESULTS["bare"]
        benchmark.extra_info["harness_ratio"] = ratio
        assert ratio >= MIN_HARNESS_RATIO, f"the harness epoch runs at {ratio:.2f}x the bare loop"
