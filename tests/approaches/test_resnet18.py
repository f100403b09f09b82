"""resnet18 specifics the registry smoke test does not see: weights, calibration, resume."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from torchvision.models import resnet18

from lumbar_bench.approaches.context import RunContext
from lumbar_bench.approaches.resnet18 import ResNet18Approach, ResNet18Config, build_model, fit_temperature
from lumbar_bench.core.errors import DataError
from lumbar_bench.data.rsna import RSNAData

pytestmark = pytest.mark.slow


def test_local_weights_are_adapted_to_the_input_channels(tmp_path):
    reference = resnet18(weights=None)  # stands in for a downloaded ImageNet checkpoint
    path = tmp_path / "r18.pth"
    torch.save(reference.state_dict(), path)
    model = build_model(9, str(path))
    assert model.conv1.weight.shape == (64, 9, 7, 7)
    expected = reference.conv1.weight.mean(dim=1, keepdim=True) * 3 / 9
    assert torch.allclose(model.conv1.weight[:, :1], expected)
    assert torch.equal(model.layer1[0].conv1.weight, reference.layer1[0].conv1.weight)
    assert model.fc.out_features == 75
    with pytest.raises(DataError, match="weights file not found"):
        build_model(9, str(tmp_path / "missing.pth"))


def test_temperature_softens_overconfident_logits():
    rng = np.random.default_rng(0)
    codes = rng.choice([0, 1, 2], size=(40, 25), p=[0.7, 0.2, 0.1])
    logits = torch.tensor(rng.normal(0, 8, size=(40, 25, 3)))  # confident and random: should be flattened
    assert fit_temperature(logits, codes) > 3


def test_interrupted_training_resumes_from_its_checkpoint(tiny_phantom, tmp_path, caplog, monkeypatch):
    data = RSNAData.load(tiny_phantom, cache_dir=tmp_path / "series")
    ids = data.study_ids[:12]
    config = ResNet18Config.for_subset("ci")
    ctx = RunContext(workdir=tmp_path / "work", cache_dir=tmp_path, seed=0)
    ctx.workdir.mkdir()
    epochs_run: list[int] = []
    original = ResNet18Approach._train_epoch

    def counting(self, *args, **kwargs):
        epochs_run.append(1)
        if len(epochs_run) == 2:
            raise KeyboardInterrupt  # the user stops the run during the second epoch
        return original(self, *args, **kwargs)

    monkeypatch.setattr(ResNet18Approach, "_train_epoch", counting)
    with pytest.raises(KeyboardInterrupt):
        ResNet18Approach(config).fit(data, ids, ctx)
    assert (ctx.workdir / "checkpoint_latest.pt").exists()

    epochs_run.clear()
    monkeypatch.setattr(ResNet18Approach, "_train_epoch", lambda self, *a, **k: epochs_run.append(1) or 1.0)
    with caplog.at_level(logging.INFO, logger="lumbar_bench.approaches.resnet18"):
        report = ResNet18Approach(config).fit(data, ids, ctx)
    assert "resuming at epoch 1" in caplog.text
    assert len(epochs_run) == config.epochs - 1
    assert set(report.metrics) == {"val/best_rsna_score", "best_epoch", "val/temperature"}
    assert report.time_to_best_s is not None and report.time_to_best_s >= 0
