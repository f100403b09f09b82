"""Training work in FLOPs: one step counted by hand, cached once, multiplied into epochs and reports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from lumbar_bench.approaches import work
from lumbar_bench.approaches.base import FitReport, ReportBuilder


def test_a_linear_step_by_hand() -> None:
    # forward 2·B·in·out; backward only the weight's gradient (the input needs none): 2·B·in·out
    assert work.count_step(nn.Linear(10, 4), [(8, 10)]) == 2 * (2 * 8 * 10 * 4)


def test_a_convolution_step_by_hand() -> None:
    # 3x3 conv, 2 -> 5 channels, 6x6 output ("same" padding), batch 3: 2·B·out·H·W·in·k·k per pass;
    # after a first layer the input needs its gradient too, so the second conv costs three passes
    net = nn.Sequential(nn.Conv2d(2, 5, 3, padding=1, bias=False), nn.Conv2d(5, 1, 1, bias=False))
    first = 2 * 3 * 5 * 6 * 6 * 2 * 9
    second = 2 * 3 * 1 * 6 * 6 * 5
    assert work.count_step(net, [(3, 2, 6, 6)]) == 2 * first + 3 * second


def test_counting_touches_neither_the_model_nor_the_random_state() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5), nn.BatchNorm1d(4))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    state = torch.random.get_rng_state().clone()
    assert work.count_step(net, [(1, 4)]) > 0  # batch 1 through batch norm: counted in eval mode
    assert torch.equal(state, torch.random.get_rng_state()) and net.training
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert all(p.grad is None for p in net.parameters())


def test_the_book_counts_each_network_and_shape_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    net = nn.Linear(10, 4)
    book = work.FlopBook(tmp_path)
    assert book.step("lin", net, [(8, 10)]) == 1280
    saved = list((tmp_path / work.FLOPS_DIR).glob("lin-*.json"))
    assert len(saved) == 1 and json.loads(saved[0].read_text())["flops"] == 1280

    def refuse(*args: object, **kwargs: object) -> int:
        raise AssertionError("counted again")

    monkeypatch.setattr(work, "count_step", refuse)
    assert work.FlopBook(tmp_path).step("lin", net, [(8, 10)]) == 1280  # read back from disk
    with pytest.raises(AssertionError, match="counted again"):
        work.FlopBook(tmp_path).step("lin", nn.Linear(10, 5), [(8, 10)])  # another network, another key


def test_an_epoch_is_its_full_batches_and_the_rest() -> None:
    book, net = work.FlopBook(None), nn.Linear(10, 4)
    per_sample = 2 * 2 * 10 * 4
    assert book.epoch("lin", net, samples=21, batch_size=8, sample_shape=(10,)) == 21 * per_sample
    assert (
        book.epoch("lin", net, samples=17, batch_size=8, sample_shape=(10,), min_batch=2) == 16 * per_sample
    )


def test_reports_add_their_work_and_log_it() -> None:
    builder = ReportBuilder()
    builder.flops("localizers", 5.0)
    builder.add(FitReport(stage_flops={"grader": 7.0, "localizers": 1.0}))
    report = builder.build()
    assert dict(report.stage_flops) == {"localizers": 6.0, "grader": 7.0}
    assert report.work_metrics() == {
        "runtime/localizers_flops": 6.0,
        "runtime/grader_flops": 7.0,
        "runtime/train_flops": 13.0,
    }
    assert FitReport().work_metrics() == {}  # an approach that does not count its work logs none
