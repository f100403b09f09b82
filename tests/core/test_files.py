import os

import pytest

from lumbar_bench.core.files import write_text_atomic


def test_write_replaces_the_whole_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "state.json"
    write_text_atomic(path, "old")
    write_text_atomic(path, "new")
    assert path.read_text() == "new"
    assert os.listdir(tmp_path) == ["state.json"]


def test_a_failed_write_keeps_the_old_content(tmp_path, monkeypatch):
    path = tmp_path / "state.json"
    write_text_atomic(path, "old")

    def fail(*_):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError):
        write_text_atomic(path, "new")
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["state.json"]  # the temporary file is gone too


def test_torch_save_atomic_writes_a_loadable_checkpoint(tmp_path):
    import torch

    from lumbar_bench.core.files import torch_save_atomic

    path = tmp_path / "checkpoint.pt"
    torch_save_atomic({"w": torch.ones(2)}, path)
    assert torch.load(path, weights_only=True)["w"].tolist() == [1.0, 1.0]
    assert os.listdir(tmp_path) == ["checkpoint.pt"]
