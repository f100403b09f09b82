"""The schedule and sidecar files a training shares with its trainer; what importing the route pulls in."""

from __future__ import annotations

import json
import subprocess
import sys

from lumbar_bench.approaches.nnunet import schedule as ns
from lumbar_bench.approaches.nnunet import trainer as nt
from lumbar_bench.approaches.nnunet.log_stream import LogStream


def test_a_schedule_goes_through_its_file_unchanged(tmp_path):
    assert ns.read_schedule(tmp_path) is None
    schedule = ns.Schedule(epochs=3, iterations=4, optimizer="adam", deadline=12.5)
    ns.write_schedule(tmp_path, schedule)
    assert json.loads((tmp_path / ns.SCHEDULE_FILE).read_text())["epochs"] == 3
    assert ns.read_schedule(tmp_path) == schedule


def test_the_sidecar_sits_beside_its_checkpoint(tmp_path):
    checkpoint = tmp_path / "checkpoint_final.pth"
    assert ns.read_sidecar(checkpoint) is None
    info = {"elapsed": 1.5, "best_epoch": 2, "time_to_best": None}
    ns.write_sidecar(str(checkpoint), info)
    assert (tmp_path / "checkpoint_final.pth.harness.json").is_file()
    assert ns.read_sidecar(checkpoint) == info


def test_the_trainer_module_still_offers_the_schedule_names():
    assert nt.Schedule is ns.Schedule and nt.LogStream is LogStream
    assert (nt.SCHEDULE_FILE, nt.SIDECAR) == (ns.SCHEDULE_FILE, ns.SIDECAR)


def test_importing_the_route_imports_neither_torch_nor_nnunet(tmp_path):
    """The configs resolve without torch; a grid is drawn without pyplot's global state."""
    code = (
        "import sys, numpy as np, pathlib;"
        "from lumbar_bench.approaches.nnunet import approach, overlays;"
        f"overlays.save_grid(pathlib.Path({str(tmp_path / 'g.png')!r}), [('a', np.zeros((4, 4, 3)))]);"
        "print([m for m in ('torch', 'nnunetv2', 'matplotlib.pyplot') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    assert (tmp_path / "g.png").stat().st_size > 0
