"""Mask QC: plausibility checks, manual and per-series-type decisions, and QC judged against truth."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from lumbar_bench.approaches.nnunet import qc
from lumbar_bench.approaches.nnunet.schemes import ClassScheme, save_schemes
from lumbar_bench.approaches.nnunet.seg_eval import LabelAudit, collapse_severity, pseudo_mask_truth_dice
from lumbar_bench.approaches.nnunet.training import merge
from lumbar_bench.constants import LABEL_COLUMNS
from lumbar_bench.core.errors import ConfigError
from lumbar_bench.data.labels import labels_to_frame

SAG_T2 = "Sagittal T2/STIR"
SCHEME = ClassScheme(SAG_T2, ("spinal_canal_stenosis",), ("vertebra", "disc"))


def _stage(tmp_path, n_vertebrae: dict[int, int]) -> pd.DataFrame:
    """series.csv and coords.csv of a QC stage: one series per id, types alternating T2 / T1."""
    rows, coords = [], []
    for i, (sid, nv) in enumerate(n_vertebrae.items()):
        desc = SAG_T2 if i % 2 == 0 else "Sagittal T1"
        rows.append(
            {
                "study_id": 1,
                "series_id": sid,
                "series_type": desc,
                "n_vertebrae": nv,
                "n_discs": nv,
                "order_ok": nv >= 5,
                "n_fragments": 0,
                "area_cv": 0.1,
            }
        )
        coords.append(
            {
                "series_id": sid,
                "series_type": desc,
                "condition": "spinal_canal_stenosis",
                "level": "l4_l5",
                "level_from_masks": "l4_l5" if nv >= 5 else "l1_l2",
                "side_from_slice": "mid",
                "inside": True,
                "region_area": 40,
                "vertebra_area": 100.0,
            }
        )
    pd.DataFrame(rows).to_csv(tmp_path / "series.csv", index=False)
    pd.DataFrame(coords).to_csv(tmp_path / "coords.csv", index=False)
    return pd.DataFrame(rows)


def test_fewer_vertebrae_score_lower_and_drop(tmp_path):
    _stage(tmp_path, {10: 5, 11: 5, 12: 2, 13: 4, 14: 1})
    report = qc.run_qc(tmp_path, qc.QCConfig()).set_index("series_id")
    assert report.loc[10, "score"] == 1.0 and report.loc[10, "keep"]
    assert report.loc[12, "check_vertebra_count"] < report.loc[13, "check_vertebra_count"] < 1.0  # graded
    assert report.loc[12, "score"] < report.loc[13, "score"] < 1.0
    assert not report.loc[12, "keep"] and not report.loc[14, "keep"]
    assert np.isnan(report.loc[14, "check_order"])  # one vertebra: nothing to order


def test_qc_series_limits_drops_to_one_series_type(tmp_path):
    _stage(tmp_path, {10: 1, 11: 1, 12: 5, 13: 5})  # 10 (T2) and 11 (T1) fail
    everywhere = qc.run_qc(tmp_path, qc.QCConfig()).set_index("series_id")
    assert not everywhere.loc[10, "keep"] and not everywhere.loc[11, "keep"]
    manual = tmp_path / "manual.csv"
    manual.write_text("series_id,action\n13,exclude\n")
    t2_only = qc.run_qc(tmp_path, qc.QCConfig(series="sagittal_t2", manual=str(manual))).set_index(
        "series_id"
    )
    assert not t2_only.loc[10, "keep"]  # Sagittal T2/STIR is judged
    assert t2_only.loc[11, "keep"] and t2_only.loc[13, "keep"]  # Sagittal T1 keeps all, even a manual exclude
    assert t2_only.loc[11, "score"] == everywhere.loc[11, "score"]  # still scored (for the truth check)
    assert list(t2_only["checked"].groupby(t2_only["series_type"]).all().items()) == [
        ("Sagittal T1", False),
        (SAG_T2, True),
    ]


def test_qc_series_must_name_a_series_type():
    assert qc.series_matches(SAG_T2, "sagittal_t2") and qc.series_matches(SAG_T2, "Sagittal T2/STIR")
    assert not qc.series_matches("Sagittal T1", "sagittal_t2") and not qc.series_matches(SAG_T2, "sagittal_t")
    with pytest.raises(ConfigError, match="qc_series"):
        qc.QCConfig(series="coronal")


def test_an_nnunet_config_with_a_bad_qc_series_is_refused():
    from lumbar_bench.approaches.nnunet.approach import NnUNetApproach, NnUNetQCConfig

    with pytest.raises(ConfigError, match="qc_series"):
        NnUNetApproach(NnUNetQCConfig(qc_series="sagital_t2"))
    assert NnUNetApproach(NnUNetQCConfig(qc_series="sagittal_t2")).config.qc_series == "sagittal_t2"


def _table(scores, dice, hard) -> pd.DataFrame:
    n = len(scores)
    report = pd.DataFrame(
        {
            "study_id": range(n),
            "series_id": range(100, 100 + n),
            "series_type": ["Axial T2", "Sagittal T1"] * (n // 2),
            "score": scores,
            "keep": True,
        }
    )
    truth = pd.DataFrame({"series_id": report["series_id"], "dice": dice})
    return qc.truth_table(report, truth, pd.Series(hard, index=range(n)))


def test_truth_metrics_rank_and_auroc():
    table = _table([0.2, 0.3, 0.5, 0.6, 0.9, 1.0], [0.1, 0.2, 0.3, 0.4, 0.5, 0.6], [1, 1, 0, 0, 0, 0])
    m = qc.truth_metrics(table)
    assert m["qc/truth_spearman"] == pytest.approx(1.0)
    assert m["qc/truth_spearman/axial_t2"] == pytest.approx(1.0)
    assert m["qc/truth_spearman_within_type"] == pytest.approx(1.0)
    assert m["qc/hard_case_auroc"] == pytest.approx(1.0)  # hard cases score lowest
    assert m["qc/truth_n_hard"] == 2
    assert list(table.columns) == [
        "study_id",
        "series_id",
        "series_type",
        "qc_score",
        "keep",
        "truth_dice",
        "hard",
    ]
    worse = qc.truth_metrics(_table([1.0, 0.9, 0.6, 0.5, 0.3, 0.2], table["truth_dice"], [1, 1, 0, 0, 0, 0]))
    assert worse["qc/truth_spearman"] == pytest.approx(-1.0) and worse["qc/hard_case_auroc"] == 0.0


def test_truth_metrics_leave_out_what_is_undefined():
    m = qc.truth_metrics(_table([0.5, 0.5, 0.5, 0.5], [0.1, 0.2, 0.3, 0.4], [0, 0, 0, 0]))
    assert "qc/truth_spearman" not in m and "qc/hard_case_auroc" not in m
    assert qc.truth_metrics(_table([], [], []))["qc/truth_n_series"] == 0


def _truth_folder(root, study: int, series: int, zone: np.ndarray, vertebra: np.ndarray) -> None:
    """``truth/``: train.csv (every label Normal/Mild) and one series' masks (one slice, instance 1)."""
    truth = root / "truth"
    (truth / "masks" / str(study)).mkdir(parents=True)
    codes = pd.DataFrame([[0] * len(LABEL_COLUMNS)], columns=list(LABEL_COLUMNS), index=[study])
    labels_to_frame(codes.rename_axis("study_id")).to_csv(truth / "train.csv", index=False)
    anatomy = np.where(vertebra, 3, 0).astype(np.uint16)[None]
    lesion = np.where(zone, 1 + 5 * 0 + 3, 0).astype(np.uint8)[None]  # spinal canal stenosis at l4_l5
    path = truth / "masks" / str(study) / f"{series}.npz"
    np.savez(path, instance_numbers=np.array([1]), anatomy=anatomy, lesion=lesion)


def _pseudo_stage(stage, cases: dict[tuple[int, int], np.ndarray]) -> None:
    (stage / "cases").mkdir(parents=True)
    rows = []
    for (study, series), label in cases.items():
        case_id = f"{study}_{series}_1"
        np.savez(stage / "cases" / f"{case_id}.npz", image=np.zeros(label.shape, np.float32), label=label)
        rows.append(
            {
                "case_id": case_id,
                "study_id": study,
                "series_id": series,
                "series_type": SAG_T2,
                "instance_number": 1,
            }
        )
    pd.DataFrame(rows).to_csv(stage / "cases.csv", index=False)
    save_schemes({SAG_T2: SCHEME}, stage / "schemes.json")


def _square(r0: int, c0: int, side: int = 8, size: int = 16) -> np.ndarray:
    out = np.zeros((size, size), dtype=bool)
    out[r0 : r0 + side, c0 : c0 + side] = True
    return out


def test_pseudo_mask_truth_dice_per_series(tmp_path):
    zone, vertebra = _square(0, 0), _square(8, 8)
    _truth_folder(tmp_path, 1, 11, zone, vertebra)
    series_dir = tmp_path / "truth" / "masks" / "1"
    (series_dir / "12.npz").write_bytes((series_dir / "11.npz").read_bytes())
    good = np.zeros((16, 16), np.uint8)
    good[vertebra] = SCHEME.anatomy_index("vertebra")
    good[zone] = SCHEME.lesion("spinal_canal_stenosis", 2)  # another grade: severity is not judged
    bad = np.zeros((16, 16), np.uint8)
    bad[_square(8, 0)] = SCHEME.lesion("spinal_canal_stenosis", 0)  # the region at the wrong place
    bad[0, 15] = SCHEME.ignore
    _pseudo_stage(tmp_path / "stage", {(1, 11): good, (1, 12): bad})
    dice = pseudo_mask_truth_dice(tmp_path / "stage", tmp_path / "truth").set_index("series_id")
    assert list(dice.columns) == ["study_id", "series_type", "dice"]
    assert dice.loc[11, "dice"] == pytest.approx(1.0)
    assert dice.loc[12, "dice"] == pytest.approx(0.0)
    assert pseudo_mask_truth_dice(tmp_path / "stage", tmp_path / "no-truth").empty  # real data: no truth


def test_collapse_severity_keeps_anatomy_and_ignore_apart():
    label = np.array([0, 1, 2, 3, 4, 5, SCHEME.ignore])
    assert collapse_severity(label, SCHEME).tolist() == [0, 1, 2, 3, 3, 3, 4]


def test_refined_labels_differ_from_the_pseudo_masks_and_are_judged_against_truth():
    """Refinement takes anatomy from the stage-1 prediction and keeps the annotated lesions."""
    truth = np.zeros((8, 8), np.uint8)
    truth[4:, :] = SCHEME.anatomy_index("vertebra")
    truth[0:2, 0:2] = SCHEME.lesion("spinal_canal_stenosis", 0)
    pseudo = np.zeros_like(truth)
    pseudo[6:, :] = SCHEME.anatomy_index("vertebra")  # the U-Net found only half the vertebra
    pseudo[0:2, 0:2] = SCHEME.lesion("spinal_canal_stenosis", 0)
    pseudo[2, :] = SCHEME.ignore
    pred = np.where(truth == SCHEME.anatomy_index("vertebra"), truth, 0).astype(np.uint8)
    refined = merge(pseudo, pred, SCHEME)
    assert (refined != pseudo).any()
    assert (refined[0:3] == pseudo[0:3]).all()  # annotated lesions and ignore pixels are kept
    audit = LabelAudit({SAG_T2: SCHEME})
    audit.add(SAG_T2, pseudo, refined, truth)
    m = audit.metrics()
    assert m["refine/labels_changed_fraction"] == pytest.approx(16 / 56)
    assert m["refine/labels_truth_dice_after"] > m["refine/labels_truth_dice_before"]
    assert m["refine/labels_truth_dice_after"] == pytest.approx(1.0)
    no_truth = LabelAudit({SAG_T2: SCHEME})
    no_truth.add(SAG_T2, pseudo, refined, None)
    assert set(no_truth.metrics()) == {"refine/labels_changed_fraction"}


# ---------------------------------------------------------------- on the tiny phantom's stages


@pytest.mark.slow
def test_qc_scores_and_manual_overrides(masks, tmp_path):
    result, _ = masks
    report = qc.run_qc(result.path, qc.QCConfig())
    assert {"score", "keep", "reasons", "check_level", "check_region_size", "checked"} <= set(report.columns)
    assert report["score"].between(0, 1).all()
    worst = int(report.iloc[0]["series_id"])
    best = int(report.iloc[-1]["series_id"])
    manual = tmp_path / "manual.csv"
    manual.write_text(f"series_id,action\n{worst},include\n{best},exclude\n")
    again = qc.run_qc(result.path, qc.QCConfig(manual=str(manual))).set_index("series_id")
    assert again.loc[worst, "keep"] and not again.loc[best, "keep"]
    assert "manual_exclude" in again.loc[best, "reasons"]
    summary = qc.summarise(again.reset_index())
    assert summary["qc/n_series"] == len(report) and summary["qc/n_dropped"] >= 1


@pytest.mark.slow
def test_qc_catches_the_phantoms_hard_cases(masks, tiny_phantom):
    result, _ = masks
    report = qc.run_qc(result.path, qc.QCConfig())
    hard = pd.read_csv(tiny_phantom / "truth" / "cases.csv").set_index("study_id")
    flags = [c for c in hard.columns if c != "study_id"]
    report["hard"] = report["study_id"].map(hard[flags].astype(bool).any(axis=1)).fillna(False)
    if report["hard"].any() and (~report["hard"]).any():
        assert (
            report.loc[report["hard"], "score"].mean() <= report.loc[~report["hard"], "score"].mean() + 0.05
        )


@pytest.mark.slow
def test_qc_is_judged_against_the_phantoms_truth(masks, tiny_phantom, tmp_path):
    result, _ = masks
    dice = pseudo_mask_truth_dice(result.path, tiny_phantom / "truth")
    assert len(dice) and dice["dice"].between(0, 1).all()
    report = qc.run_qc(result.path, qc.QCConfig())
    table = qc.truth_table(report, dice, qc.read_hard_cases(tiny_phantom / "truth"))
    assert len(table) == len(dice)
    metrics = qc.truth_metrics(table)
    assert -1 <= metrics["qc/truth_spearman"] <= 1
    (tmp_path / "m.json").write_text(json.dumps(metrics))  # JSON-clean: no NaN left in
    assert "NaN" not in (tmp_path / "m.json").read_text()


@pytest.mark.slow
@pytest.mark.nnunet
def test_the_gate_runs_judge_qc_and_refinement_against_truth(gate, tmp_path):
    from lumbar_bench.tracking.search import get_run, local_artifact

    uri = gate.request.tracking_uri
    run_id = gate.run_id("nnunet-qc")
    logged = get_run(uri, run_id).metrics
    table = pd.read_csv(local_artifact(uri, run_id, "qc/qc_vs_truth.csv", tmp_path))
    recomputed = qc.truth_metrics(table)  # the logged numbers come back from the artifact
    for key in ("qc/truth_spearman", "qc/hard_case_auroc"):
        assert logged[key] == pytest.approx(recomputed[key]), key
    refined = get_run(uri, gate.run_id("nnunet-refined")).metrics
    assert refined["refine/labels_changed_fraction"] > 0  # the refined labels are not the pseudo-masks
    for key in ("refine/labels_truth_dice_before", "refine/labels_truth_dice_after"):
        assert 0 <= refined[key] <= 1, key
