import json

import numpy as np
import pandas as pd
import pytest

from lumbar_bench.cli import main
from lumbar_bench.constants import LABEL_COLUMNS, PROB_COLUMNS, row_id


@pytest.fixture
def scored_pair(tmp_path):
    labels = pd.DataFrame({"study_id": [11, 12], **{c: ["Normal/Mild", "Severe"] for c in LABEL_COLUMNS}})
    labels_path = tmp_path / "train.csv"
    labels.to_csv(labels_path, index=False)
    rows = [row_id(s, c) for s in (11, 12) for c in LABEL_COLUMNS]
    sub = pd.DataFrame({"row_id": rows, **{c: np.full(len(rows), 1 / 3) for c in PROB_COLUMNS}})
    sub_path = tmp_path / "sub.csv"
    sub.to_csv(sub_path, index=False)
    return labels_path, sub_path, sub


def test_score_json(scored_pair, capsys):
    labels_path, sub_path, _ = scored_pair
    assert main(["score", str(labels_path), str(sub_path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"score", "spinal", "foraminal", "subarticular", "any_severe_spinal"}
    assert out["spinal"] == pytest.approx(np.log(3))


def test_score_missing_row_exits_2_with_one_line(scored_pair, capsys, tmp_path):
    labels_path, _, sub = scored_pair
    bad = tmp_path / "bad.csv"
    sub.iloc[1:].to_csv(bad, index=False)
    assert main(["score", str(labels_path), str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "missing" in err


def test_score_negative_value_exits_2(scored_pair, capsys, tmp_path):
    labels_path, _, sub = scored_pair
    sub.loc[0, "severe"] = -1
    bad = tmp_path / "neg.csv"
    sub.to_csv(bad, index=False)
    assert main(["score", str(labels_path), str(bad)]) == 2
    assert "negative" in capsys.readouterr().err


@pytest.mark.parametrize(
    "command", ["run", "sweep", "score", "synth", "splits", "prepare", "predict", "list"]
)
def test_help_shows_examples(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "examples:" in capsys.readouterr().out


def test_unknown_approach_is_a_one_line_error(capsys, tmp_path):
    code = main(
        [
            "run",
            "--approach",
            "resnet-18",
            "--cache-dir",
            str(tmp_path),
            "--tracking-uri",
            f"sqlite:///{tmp_path}/m.db",
        ]
    )
    assert code == 2
    assert "did you mean resnet18" in capsys.readouterr().err


def test_run_json_prints_one_object(tiny_phantom, tmp_path, capsys):
    code = main(
        [
            "--no-progress",
            "run",
            "--approach",
            "prior",
            "--data",
            str(tiny_phantom),
            "--subset",
            "ci",
            "--cache-dir",
            str(tmp_path / "c"),
            "--tracking-uri",
            f"sqlite:///{tmp_path}/m.db",
            "--json",
        ]
    )
    assert code == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["approach"] == "prior" and out["fold"] == 0 and out["rsna_score"] > 0


def test_synth_prints_realism_and_takes_layout_options(capsys, tmp_path):
    out = tmp_path / "regular"
    args = ["synth", str(out), "--studies", "3", "--size", "40", "--irregularity", "0", "--cohort-draws", "2"]
    args += ["--workers", "1"]
    assert main(["--no-progress", *args]) == 0
    printed = capsys.readouterr().out
    assert "realism on 3 studies" in printed and "correlation mean |Δ|" in printed
    meta = json.loads((out / "phantom.json").read_text())
    assert meta["config"]["irregularity"] == 0.0 and meta["config"]["cohort_draws"] == 2
    assert meta["realism"]["layout"]["several_axial"]["phantom"] == 0.0


def test_prepare_in_two_workers_then_warm(tiny_phantom, tmp_path, capsys):
    args = ["--no-progress", "prepare", "--data", str(tiny_phantom), "--cache-dir", str(tmp_path / "c")]
    assert main([*args, "--workers", "2"]) == 0
    cold = capsys.readouterr().out
    assert main([*args, "--workers", "1"]) == 0
    warm = capsys.readouterr().out
    series = int(cold.split("prepared ")[1].split(" series")[0])
    assert series > 0 and ", 0 cache hits" in cold and f", {series} cache hits" in warm
