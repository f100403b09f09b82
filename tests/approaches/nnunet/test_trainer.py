import json
import logging
import os
import time

import numpy as np
import pytest

from lumbar_bench.approaches.nnunet import dataset as nd
from lumbar_bench.approaches.nnunet import trainer as nt
from lumbar_bench.core.errors import ConfigError


def test_env_is_set_only_inside_the_block(tmp_path, monkeypatch):
    monkeypatch.delenv("nnUNet_raw", raising=False)
    monkeypatch.setenv("nnUNet_results", "/user/value")
    paths = nt.NnUNetPaths(tmp_path / "r", tmp_path / "p", tmp_path / "s")
    with nt.nnunet_env(paths, n_proc_da=0):
        assert os.environ["nnUNet_raw"] == str(tmp_path / "r")
        assert os.environ["nnUNet_results"] == str(tmp_path / "s")
    assert "nnUNet_raw" not in os.environ
    assert os.environ["nnUNet_results"] == "/user/value"


@pytest.mark.parametrize("version", ["2.8.1", "2.8.4", "2.8.1.post1"])
def test_supported_nnunet_versions_pass(version):
    assert nt.check_nnunet_version(version) == version


@pytest.mark.parametrize("version", ["2.5.1", "2.7.2", "2.8.0", "2.9.0", "3.0"])
def test_an_unsupported_nnunet_version_is_one_clear_line(version):
    with pytest.raises(ConfigError) as err:
        nt.check_nnunet_version(version)
    message = str(err.value)
    assert "\n" not in message
    assert f"nnunetv2 {version} is installed" in message
    assert nt.NNUNET_SUPPORTED in message


def test_the_installed_nnunet_is_supported():
    pytest.importorskip("nnunetv2")
    assert nt.check_nnunet_version()  # the pin in pyproject.toml and the check agree


def test_the_pin_in_pyproject_is_the_supported_range():
    import tomllib
    from pathlib import Path

    pyproject = tomllib.loads((Path(__file__).parents[3] / "pyproject.toml").read_text())
    assert f"nnunetv2{nt.NNUNET_SUPPORTED}" in pyproject["project"]["dependencies"]


class Interrupt(Exception):
    pass


@pytest.fixture(scope="module")
def blobs(tmp_path_factory):
    """12 cases of 32 px (a square blob, an ignore row), planned in-process; fold 0 = 9 vs 3 studies."""
    rng = np.random.default_rng(0)
    cases = []
    for i in range(12):
        img = rng.random((32, 32)).astype(np.float32) * 0.3
        lab = np.zeros((32, 32), np.uint8)
        y, x = rng.integers(8, 24, 2)
        img[y - 4 : y + 4, x - 4 : x + 4] += 0.6
        lab[y - 4 : y + 4, x - 4 : x + 4] = 1
        lab[y - 5, x - 4 : x + 4] = 2  # ignore ring
        cases.append(nd.Case(f"{i}_1_1", i, img, lab))
    root = tmp_path_factory.mktemp("blobs")
    paths = nt.NnUNetPaths(root / "raw", root / "pre", root / "res")
    nd.export_dataset(paths.raw, 990, "Resume", cases, ["background", "blob"], ignore=True)
    nt.plan_and_preprocess(990, paths, 32, 4, (8, 16))
    studies = {c.case_id: c.study_id for c in cases}
    nt.write_splits(paths, 990, [nd.study_folds(studies, list(range(9)), [9, 10, 11])])
    return paths


@pytest.mark.slow
@pytest.mark.nnunet
def test_planning_writes_the_tiny_configuration_and_the_preprocessed_cases(blobs):
    pre = blobs.preprocessed / "Dataset990_Resume"
    plans = json.loads((pre / "nnUNetPlans.json").read_text())
    assert plans["configurations"][nt.TINY]["patch_size"] == [32, 32]
    assert json.loads((pre / "dataset_fingerprint.json").read_text())["shapes_after_crop"]
    assert len(list((pre / "nnUNetPlans_2d").glob("*.pkl"))) == 12


@pytest.mark.slow
@pytest.mark.nnunet
def test_interrupted_training_resumes_from_its_checkpoint(blobs, tmp_path):
    paths = nt.NnUNetPaths(blobs.raw, blobs.preprocessed, tmp_path / "res")
    schedule = nt.Schedule(epochs=3, iterations=2, val_iterations=1)
    seen = []

    def stop_after_two(epoch, metrics):
        seen.append(epoch)
        if epoch == 1:
            raise Interrupt

    with pytest.raises(Interrupt):
        nt.train(990, paths, 0, schedule, on_epoch=stop_after_two)
    fold = next((paths.results).rglob("fold_0"))
    assert (fold / "checkpoint_latest.pth").exists() and not (fold / "checkpoint_final.pth").exists()
    assert "nnUNet_raw" not in os.environ

    resumed = []
    out = nt.train(990, paths, 0, schedule, on_epoch=lambda e, m: resumed.append(e))
    assert resumed == [2]  # continued at the next epoch, not from scratch
    assert (out / "checkpoint_final.pth").exists()
    assert not (out / "progress.png").exists()  # nnU-Net's per-epoch plot is off
    assert json.loads((out / "harness.json").read_text())["epochs_done"] == 3
    # a finished model is reused, not retrained
    again = []
    nt.train(990, paths, 0, schedule, on_epoch=lambda e, m: again.append(e))
    assert again == []


@pytest.mark.slow
@pytest.mark.nnunet
def test_the_deadline_ends_training_after_the_epoch_it_passed_in(blobs, tmp_path, caplog):
    paths = nt.NnUNetPaths(blobs.raw, blobs.preprocessed, tmp_path / "res")
    schedule = nt.Schedule(epochs=5, iterations=2, val_iterations=1, save_every=2, deadline=time.monotonic())
    seen, written = [], []

    def note():
        written.append(time.monotonic())

    with caplog.at_level(logging.WARNING):
        out = nt.train(990, paths, 0, schedule, on_epoch=lambda e, m: seen.append(e), checkpointed=note)
    assert seen == [0]
    assert "soft budget reached after epoch 1 of 5" in caplog.text
    assert (out / "checkpoint_final.pth").exists() and not (out / "checkpoint_latest.pth").exists()
    info = json.loads((out / "harness.json").read_text())
    assert info["epochs_done"] == 1 and info["best_epoch"] == 0
    assert 0 < info["time_to_best_s"] <= info["train_seconds"]
    assert written  # the compute ledger heard of the final checkpoint
