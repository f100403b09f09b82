"""Class schemes: condition x severity classes, and left/right conditions sharing theirs (``merge_sides``)."""

from __future__ import annotations

import json

import numpy as np

from lumbar_bench.approaches.nnunet.schemes import ClassScheme, load_schemes, save_schemes
from lumbar_bench.approaches.nnunet.seg_eval import collapse_severity
from lumbar_bench.constants import condition_side, side_free

FORAMINA = ("left_neural_foraminal_narrowing", "right_neural_foraminal_narrowing")


def test_split_sides_give_each_condition_its_classes():
    t1 = ClassScheme("Sagittal T1", FORAMINA, ("vertebra", "disc"))
    assert t1.groups == FORAMINA and len(t1.names) == 9 and t1.ignore == 9
    assert t1.lesion(FORAMINA[0], 0) == 3 and t1.lesion(FORAMINA[1], 0) == 6


def test_merged_sides_share_one_set_of_classes():
    t1 = ClassScheme("Sagittal T1", FORAMINA, ("vertebra", "disc"), merge_sides=True)
    assert t1.groups == ("neural_foraminal_narrowing",)
    assert t1.names == [
        "background",
        "vertebra",
        "disc",
        "neural_foraminal_narrowing/normal_mild",
        "neural_foraminal_narrowing/moderate",
        "neural_foraminal_narrowing/severe",
    ]
    assert t1.ignore == 6
    for sev in range(3):
        assert t1.lesion(FORAMINA[0], sev) == t1.lesion(FORAMINA[1], sev) == 3 + sev
    canal = ClassScheme("Sagittal T2/STIR", ("spinal_canal_stenosis",), ("vertebra",), merge_sides=True)
    assert canal.groups == ("spinal_canal_stenosis",) and canal.lesion("spinal_canal_stenosis", 2) == 4
    assert side_free("left_subarticular_stenosis") == "subarticular_stenosis"


def test_the_side_of_a_condition_comes_from_its_prefix():
    assert [condition_side(c) for c in (*FORAMINA, "spinal_canal_stenosis")] == ["left", "right", ""]
    assert side_free("spinal_canal_stenosis") == "spinal_canal_stenosis"
    assert side_free("right_neural_foraminal_narrowing") == "neural_foraminal_narrowing"


def test_collapse_severity_counts_lesion_groups():
    t1 = ClassScheme("Sagittal T1", FORAMINA, ("vertebra", "disc"), merge_sides=True)
    label = np.array([0, 1, 2, 3, 4, 5, t1.ignore])
    assert collapse_severity(label, t1).tolist() == [0, 1, 2, 3, 3, 3, 4]


def test_schemes_round_trip_and_old_files_read_as_split(tmp_path):
    schemes = {"Sagittal T1": ClassScheme("Sagittal T1", FORAMINA, ("vertebra", "disc"), merge_sides=True)}
    save_schemes(schemes, tmp_path / "schemes.json")
    assert load_schemes(tmp_path / "schemes.json") == schemes
    old = {"Sagittal T1": {"series_type": "Sagittal T1", "conditions": list(FORAMINA), "anatomy": []}}
    (tmp_path / "old.json").write_text(json.dumps(old))
    assert load_schemes(tmp_path / "old.json")["Sagittal T1"].merge_sides is False
