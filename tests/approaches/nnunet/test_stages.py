"""Each stage of the segmentation route on the tiny phantom."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from lumbar_bench.approaches.nnunet import grading as gr
from lumbar_bench.approaches.nnunet.pseudo_masks import load_case, load_schemes
from lumbar_bench.approaches.nnunet.schemes import derive_schemes
from lumbar_bench.approaches.prior import fit_prior

pytestmark = pytest.mark.slow


def test_schemes_follow_where_conditions_are_annotated(phantom_data):
    schemes = derive_schemes(phantom_data.coordinates, phantom_data.series)
    assert schemes["Sagittal T2/STIR"].conditions == ("spinal_canal_stenosis",)
    assert set(schemes["Sagittal T1"].conditions) == {
        "left_neural_foraminal_narrowing",
        "right_neural_foraminal_narrowing",
    }
    assert set(schemes["Axial T2"].conditions) == {
        "left_subarticular_stenosis",
        "right_subarticular_stenosis",
    }
    t1 = schemes["Sagittal T1"]
    assert t1.names[:3] == ["background", "vertebra", "disc"] and len(t1.names) == 9 and t1.ignore == 9
    assert schemes["Axial T2"].anatomy == ()


def test_split_sides_paint_a_set_of_foraminal_classes_per_side(phantom_data, vertebrae, stage_cache):
    from lumbar_bench.approaches.nnunet import pipeline as pl
    from lumbar_bench.approaches.nnunet.pseudo_masks import MaskConfig

    from .conftest import VCFG

    studies = sorted(phantom_data.labels.index)[:8]
    split = MaskConfig(size=64, merge_sides=False)
    result = pl.mask_stage(phantom_data, studies, vertebrae[0], VCFG, split, stage_cache, "cpu", False)
    t1 = load_schemes(result.path / "schemes.json")["Sagittal T1"]
    assert not t1.merge_sides and len(t1.groups) == 2 and t1.ignore == 9
    cases = pd.read_csv(result.path / "cases.csv")
    painted = set()
    for case_id in cases[cases["series_type"] == "Sagittal T1"]["case_id"]:
        painted |= set(np.unique(load_case(result.path, case_id)[1]).tolist())
    assert painted & {3, 4, 5} and painted & {6, 7, 8} and painted <= set(range(10))
    metrics = pl.mask_metrics(result)
    for side in ("left", "right"):
        assert f"pseudo_masks/truth_dice/sagittal_t1/{side}_neural_foraminal_narrowing" in metrics


def test_vertebra_unet_reports_dice_per_structure(vertebrae):
    result, metrics = vertebrae
    assert (result.path / "model.pt").exists()
    for name in ("vertebra", "disc", "canal"):
        assert 0 <= metrics[f"vertebrae/val_dice/{name}"] <= 1
    assert metrics["vertebrae/val_dice/vertebra"] > 0.3


def test_pseudo_masks_paint_every_series_type(masks):
    result, studies = masks
    cases = pd.read_csv(result.path / "cases.csv")
    schemes = load_schemes(result.path / "schemes.json")
    assert set(cases["series_type"]) == set(schemes)
    # by default left and right share their classes: one foraminal set on sagittal T1
    t1 = schemes["Sagittal T1"]
    assert t1.merge_sides and t1.groups == ("neural_foraminal_narrowing",) and t1.ignore == 6
    assert set(cases["study_id"]) <= set(studies)
    for desc, scheme in schemes.items():
        case_id = cases[cases["series_type"] == desc]["case_id"].iloc[0]
        image, label = load_case(result.path, case_id)
        assert image.shape == label.shape == (64, 64)
        lesions = label[(label > len(scheme.anatomy)) & (label < scheme.ignore)]
        assert lesions.size > 0, desc
        assert (label == scheme.ignore).any()
    coords = pd.read_csv(result.path / "coords.csv", keep_default_na=False)
    sag = coords[coords["series_type"].str.startswith("Sagittal")]
    assert (sag["level_from_masks"] == sag["level"]).mean() > 0.5


def test_a_study_without_vertebrae_falls_back_to_the_prior(phantom_data, masks, caplog):
    result, studies = masks
    schemes = load_schemes(result.path / "schemes.json")

    def blank(image):  # a model that finds nothing: all background
        n = max(len(s.names) for s in schemes.values())
        out = np.zeros((n,) + image.shape, np.float32)
        out[0] = 1
        return out

    grader = gr.StudyGrader({d: blank for d in schemes}, schemes, {}, gr.GradingConfig(size=64))
    grades = grader.grade(phantom_data, studies[0])
    assert np.isnan(grades.probs).all()
    assert any("no vertebrae" in p for p in grades.problems)
    prior = fit_prior(phantom_data.labels)
    assert np.allclose(gr.blend_with_prior(grades.probs, prior, 0.6), prior)


def test_blend_keeps_rows_normalised():
    prior = np.full((25, 3), 1 / 3)
    probs = np.full((25, 3), np.nan)
    probs[0] = [1, 0, 0]
    out = gr.blend_with_prior(probs, prior, 0.5)
    assert np.allclose(out.sum(1), 1) and out[0, 0] == pytest.approx(0.5 + 0.5 / 3)
    assert logging.getLogger("lumbar_bench").name


def test_blend_is_calibrated_towards_the_prior_when_segmentation_misleads():
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 3, size=(20, 25))
    prior = np.full((25, 3), 1 / 3)
    wrong = np.zeros((20, 25, 3))
    wrong[np.arange(20)[:, None], np.arange(25)[None], (codes + 1) % 3] = 1.0  # always wrong
    right = np.zeros((20, 25, 3))
    right[np.arange(20)[:, None], np.arange(25)[None], codes] = 1.0
    assert set(gr.calibrate_blend(wrong, codes, prior, 0.6).values()) == {0.0}
    assert min(gr.calibrate_blend(right, codes, prior, 0.6).values()) >= 0.9


def test_mask_stage_judges_its_geometry_and_its_masks_against_truth(masks, tiny_phantom, tmp_path):
    from lumbar_bench.approaches.nnunet import pipeline as pl

    result, _ = masks
    metrics = pl.mask_metrics(result)
    # every labelled subarticular coordinate's axial slice gets its level from the slice's own plane
    assert metrics["geometry/axial_level_accuracy"] >= 0.98
    coords = pd.read_csv(result.path / "coords.csv", keep_default_na=False)
    axial = coords[coords["series_type"] == "Axial T2"]
    assert metrics["geometry/axial_level_accuracy"] == pytest.approx(
        (axial["level_from_masks"] == axial["level"]).mean()
    )
    table = pd.read_csv(result.path / "truth_dice.csv")
    assert set(table["series_type"]) == {"Sagittal T1", "Sagittal T2/STIR", "Axial T2"}
    for desc in ("sagittal_t1", "sagittal_t2_stir", "axial_t2"):
        assert 0 < metrics[f"pseudo_masks/truth_dice/{desc}"] <= 1
    assert 0 < metrics["pseudo_masks/truth_dice"] <= 1
    # real data has no truth/: the Dice is left out, silently
    import shutil

    copy = shutil.copytree(result.path, tmp_path / "stage")
    assert set(pl.write_mask_metrics(copy, tmp_path / "no-truth")) == {"geometry/axial_level_accuracy"}
