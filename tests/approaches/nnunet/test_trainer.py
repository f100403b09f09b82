import json
import os

import numpy as np
import pytest

from lumbar_bench.approaches.nnunet import dataset as nd
from lumbar_bench.approaches.nnunet import trainer as nt


def test_env_is_set_only_inside_the_block(tmp_path, monkeypatch):
    monkeypatch.delenv("nnUNet_raw", raising=False)
    monkeypatch.setenv("nnUNet_results", "/user/value")
    paths = nt.NnUNetPaths(tmp_path / "r", tmp_path / "p", tmp_path / "s")
    with nt.nnunet_env(paths, n_proc_da=0):
        assert os.environ["nnUNet_raw"] == str(tmp_path / "r")
        assert os.environ["nnUNet_results"] == str(tmp_path / "s")
    assert "nnUNet_raw" not in os.environ
    assert os.environ["nnUNet_results"] == "/user/value"


class Interrupt(Exception):
    pass


@pytest.mark.slow
@pytest.mark.nnunet
def test_interrupted_training_resumes_from_its_checkpoint(tmp_path):
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
    paths = nt.NnUNetPaths(tmp_path / "raw", tmp_path / "pre", tmp_path / "res")
    nd.export_dataset(paths.raw, 990, "Resume", cases, ["background", "blob"], ignore=True)
    nt.plan_and_preprocess(990, paths, 32, 4, (8, 16))
    studies = {c.case_id: c.study_id for c in cases}
    nt.write_splits(paths, 990, [nd.study_folds(studies, list(range(9)), [9, 10, 11])])
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
    assert json.loads((out / "harness.json").read_text())["epochs_done"] == 3
    # a finished model is reused, not retrained
    again = []
    nt.train(990, paths, 0, schedule, on_epoch=lambda e, m: again.append(e))
    assert again == []
