"""The synthetic lumbar phantom: layout, DICOM geometry, labels, pathology signal, determinism."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.uid import ExplicitVRLittleEndian
from scipy.stats import multivariate_normal

from lumbar_bench.constants import (
    CONDITION_TITLES,
    LABEL_COLUMNS,
    LEVEL_TITLES,
    PROB_COLUMNS,
    SERIES_TYPES,
    SEVERITIES,
    row_id,
)
from lumbar_bench.core.errors import ConfigError
from lumbar_bench.data.phantom import anatomy, disease, geometry, pathology, realism, reference
from lumbar_bench.data.phantom.cohort import LAYOUT_KINDS
from lumbar_bench.data.phantom.dicom_writer import SeriesInfo, uid, write_series
from lumbar_bench.data.phantom.drawing import T_CSF, T_FAT, T_NERVE
from lumbar_bench.data.phantom.render import draw_stack
from lumbar_bench.data.phantom.study import HARD_KINDS
from lumbar_bench.data.phantom.synth import PhantomConfig, plan_studies, synthesize

COORD_COLUMNS = ["study_id", "series_id", "instance_number", "condition", "level", "x", "y"]


def read_csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"study_id": np.int64}, keep_default_na=False)


@functools.cache
def series_headers(folder: Path) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(folder.glob("*.dcm"))]


def normal_of(ds: pydicom.Dataset) -> np.ndarray:
    o = np.asarray(ds.ImageOrientationPatient, dtype=float)
    return np.cross(o[:3], o[3:])


@pytest.fixture(scope="module")
def phantom(tiny_phantom: Path) -> Path:
    return tiny_phantom


@pytest.fixture(scope="module")
def tables(phantom: Path) -> dict[str, pd.DataFrame]:
    return {
        name: read_csv(phantom / f"{name}.csv")
        for name in (
            "train",
            "train_label_coordinates",
            "train_series_descriptions",
            "test_series_descriptions",
            "sample_submission",
        )
    }


# ---------------------------------------------------------------- layout and schemas


def test_csv_schemas(tables: dict[str, pd.DataFrame]) -> None:
    assert list(tables["train"].columns) == ["study_id", *LABEL_COLUMNS]
    values = set(tables["train"][list(LABEL_COLUMNS)].to_numpy().ravel())
    assert values <= {*SEVERITIES, ""} and set(SEVERITIES) <= values
    coords = tables["train_label_coordinates"]
    assert list(coords.columns) == COORD_COLUMNS
    assert set(coords["condition"]) == set(CONDITION_TITLES.values())
    assert set(coords["level"]) == set(LEVEL_TITLES.values())
    assert coords["x"].dtype == float and coords["y"].dtype == float
    for part in ("train", "test"):
        series = tables[f"{part}_series_descriptions"]
        assert list(series.columns) == ["study_id", "series_id", "series_description"]
        assert set(series["series_description"]) == set(SERIES_TYPES)
    sub = tables["sample_submission"]
    assert list(sub.columns) == ["row_id", *PROB_COLUMNS]
    test_ids = tables["test_series_descriptions"]["study_id"].unique()
    assert list(sub["row_id"]) == [row_id(s, lab) for s in test_ids for lab in LABEL_COLUMNS]
    assert np.allclose(sub[list(PROB_COLUMNS)].to_numpy(), 1 / 3)


def test_ids_realistic_unique_and_disjoint(tables: dict[str, pd.DataFrame]) -> None:
    train_ids = set(tables["train"]["study_id"])
    test_ids = set(tables["test_series_descriptions"]["study_id"])
    assert len(train_ids) == 30 and len(test_ids) == 2 and not train_ids & test_ids
    assert set(tables["train_series_descriptions"]["study_id"]) == train_ids
    series = pd.concat([tables["train_series_descriptions"], tables["test_series_descriptions"]])
    assert series["series_id"].is_unique
    for ident in [*train_ids, *test_ids, *series["series_id"]]:
        assert 7 <= len(str(ident)) <= 10


def test_image_folders_match_series_table(phantom: Path, tables: dict[str, pd.DataFrame]) -> None:
    for part in ("train", "test"):
        expected = {
            (int(r.study_id), int(r.series_id)) for r in tables[f"{part}_series_descriptions"].itertuples()
        }
        found = {
            (int(p.parent.name), int(p.name)) for p in (phantom / f"{part}_images").glob("*/*") if p.is_dir()
        }
        assert found == expected
        assert all(any((phantom / f"{part}_images" / str(st) / str(se)).glob("*.dcm")) for st, se in expected)


def test_metadata_and_summary_files(phantom: Path, tables: dict[str, pd.DataFrame]) -> None:
    meta = json.loads((phantom / "phantom.json").read_text())
    assert meta["generator_version"] >= 1 and meta["seed"] == 3 and meta["size"] == 64
    assert meta["train_studies"] == 30 and meta["reader_noise"] == pytest.approx(0.175)
    cases = read_csv(phantom / "truth" / "cases.csv")
    assert list(cases.columns) == ["study_id", *HARD_KINDS]
    assert list(cases["study_id"]) == list(tables["train"]["study_id"])
    truth = read_csv(phantom / "truth" / "train.csv")
    assert list(truth.columns) == list(tables["train"].columns)
    assert set(truth[list(LABEL_COLUMNS)].to_numpy().ravel()) <= set(SEVERITIES)


# ---------------------------------------------------------------- DICOM


def test_dicom_tags(phantom: Path, tables: dict[str, pd.DataFrame]) -> None:
    row = tables["train_series_descriptions"].iloc[0]
    folder = phantom / "train_images" / str(row.study_id) / str(row.series_id)
    ds = pydicom.dcmread(next(folder.glob("*.dcm")))
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert ds.Modality == "MR" and ds.SeriesDescription == row.series_description
    assert ds.BitsAllocated == 16 and ds.BitsStored in (12, 16) and ds.PixelRepresentation == 0
    assert ds.PhotometricInterpretation == "MONOCHROME2" and ds.SamplesPerPixel == 1
    assert "RescaleSlope" in ds and "RescaleIntercept" in ds
    assert str(ds.PatientName) == "ANON" and ds.PatientID == "phantom"
    assert "PatientBirthDate" not in ds and "StudyDate" not in ds
    assert ds.pixel_array.shape == (ds.Rows, ds.Columns) and ds.pixel_array.max() < 2**ds.BitsStored


def test_rescale_varies_between_series(phantom: Path, tables: dict[str, pd.DataFrame]) -> None:
    slopes = set()
    for r in tables["train_series_descriptions"].itertuples():
        path = next((phantom / "train_images" / str(r.study_id) / str(r.series_id)).glob("*.dcm"))
        slopes.add(float(pydicom.dcmread(path, stop_before_pixels=True).RescaleSlope))
    assert len(slopes) > 1


def test_slice_geometry_consistent(phantom: Path, tables: dict[str, pd.DataFrame]) -> None:
    checked = 0
    for r in tables["train_series_descriptions"].itertuples():
        headers = series_headers(phantom / "train_images" / str(r.study_id) / str(r.series_id))
        orientations = {tuple(np.round(np.asarray(h.ImageOrientationPatient, float), 6)) for h in headers}
        if r.series_description.startswith("Sagittal"):
            assert orientations == {(0.0, 1.0, 0.0, 0.0, 0.0, -1.0)}
        if len(orientations) > 1:  # tilted per-level blocks: only the orientation family is checked
            assert all(abs(o[0] - 1.0) < 1e-6 for o in orientations)
            continue
        normal = normal_of(headers[0])
        along = np.sort([np.dot(np.asarray(h.ImagePositionPatient, float), normal) for h in headers])
        steps, spacing = np.diff(along), float(headers[0].SpacingBetweenSlices)
        if r.series_description.startswith("Sagittal"):
            assert np.allclose(steps, spacing, atol=1e-3)
        else:  # a continuous stack, or untilted per-level blocks with gaps between them
            assert (steps > spacing - 1e-3).all() and np.isclose(steps, spacing, atol=1e-3).mean() >= 0.6
        assert float(headers[0].SliceThickness) <= float(headers[0].SpacingBetweenSlices) + 1e-6
        checked += 1
    assert checked >= 60


def test_instance_numbers_not_always_spatial(phantom: Path, tables: dict[str, pd.DataFrame]) -> None:
    kinds = set()
    for r in tables["train_series_descriptions"].itertuples():
        if r.series_description.startswith("Sagittal"):
            headers = series_headers(phantom / "train_images" / str(r.study_id) / str(r.series_id))
            by_x = [h.InstanceNumber for h in sorted(headers, key=lambda h: float(h.ImagePositionPatient[0]))]
            n = len(by_x)
            kinds.add(
                "right_to_left"
                if by_x == list(range(1, n + 1))
                else "left_to_right"
                if by_x == list(range(n, 0, -1))
                else "shuffled"
            )
    assert {"right_to_left", "left_to_right"} <= kinds


def test_fast_writer_is_byte_identical_to_pydicom(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    stack = geometry.sagittal(
        rng, "Sagittal T1", np.array([1.0, 2.0, 3.0]), fov=250, shape=(40, 56), n=5, spacing=4.1
    )
    stored = rng.integers(0, 4000, (5, 40, 56)).astype(np.uint16)
    info = SeriesInfo(123, 456, 1, uid("a"), uid("b"), "STIR", 2.0, -100.0, 12, 3.0)
    write_series(tmp_path / "fast", stack, stored, info, fast=True)
    write_series(tmp_path / "slow", stack, stored, info, fast=False)
    names = sorted(p.name for p in (tmp_path / "fast").glob("*.dcm"))
    assert len(names) == 5
    for name in names:
        assert (tmp_path / "fast" / name).read_bytes() == (tmp_path / "slow" / name).read_bytes()


def test_readable_by_project_reader(phantom: Path, tables: dict[str, pd.DataFrame]) -> None:
    dicom = pytest.importorskip("lumbar_bench.data.dicom")
    r = tables["train_series_descriptions"].iloc[1]
    volume = dicom.read_series(phantom / "train_images" / str(r.study_id) / str(r.series_id))
    files = list((phantom / "train_images" / str(r.study_id) / str(r.series_id)).glob("*.dcm"))
    assert volume.n_slices == len(files) and not volume.skipped
    assert volume.pixels.shape[1:] == pydicom.dcmread(files[0]).pixel_array.shape


# ---------------------------------------------------------------- coordinates


def test_coordinates_reference_existing_instances(phantom: Path, tables: dict[str, pd.DataFrame]) -> None:
    coords = tables["train_label_coordinates"]
    descs = tables["train_series_descriptions"].set_index("series_id")["series_description"]
    expected = {
        "Spinal Canal Stenosis": "Sagittal T2/STIR",
        "Left Neural Foraminal Narrowing": "Sagittal T1",
        "Right Neural Foraminal Narrowing": "Sagittal T1",
        "Left Subarticular Stenosis": "Axial T2",
        "Right Subarticular Stenosis": "Axial T2",
    }
    for r in coords.itertuples():
        path = phantom / "train_images" / str(r.study_id) / str(r.series_id) / f"{r.instance_number}.dcm"
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        assert 0 <= r.x <= ds.Columns - 1 and 0 <= r.y <= ds.Rows - 1
        assert descs[r.series_id] == expected[r.condition]


def test_foraminal_coordinates_on_their_side(phantom: Path, tables: dict[str, pd.DataFrame]) -> None:
    coords = tables["train_label_coordinates"]
    tilted = set(read_csv(phantom / "truth" / "cases.csv").query("tilt == 1")["study_id"])
    foraminal = coords[coords["condition"].str.contains("Foraminal") & ~coords["study_id"].isin(tilted)]
    assert len(foraminal) > 100
    for r in foraminal.itertuples():
        folder = phantom / "train_images" / str(r.study_id) / str(r.series_id)
        xs = {h.InstanceNumber: float(h.ImagePositionPatient[0]) for h in series_headers(folder)}
        mid = np.median(list(xs.values()))
        if r.condition.startswith("Left"):  # patient left is +x in LPS
            assert xs[r.instance_number] > mid
        else:
            assert xs[r.instance_number] < mid


def test_coordinates_fall_in_their_true_zone(phantom: Path, tables: dict[str, pd.DataFrame]) -> None:
    hits = []
    for r in tables["train_label_coordinates"].itertuples():
        code = (
            1
            + 5 * list(CONDITION_TITLES.values()).index(r.condition)
            + list(LEVEL_TITLES.values()).index(r.level)
        )
        with np.load(phantom / "truth" / "masks" / str(r.study_id) / f"{r.series_id}.npz") as z:
            k = int(np.flatnonzero(z["instance_numbers"] == r.instance_number)[0])
            les = z["lesion"][k]
        y, x = int(round(r.y)), int(round(r.x))
        hits.append(code in les[max(y - 2, 0) : y + 3, max(x - 2, 0) : x + 3])
    assert np.mean(hits) > 0.95


def test_blank_labels_have_no_coordinates(tables: dict[str, pd.DataFrame]) -> None:
    labels = tables["train"].set_index("study_id")
    coords = tables["train_label_coordinates"]
    keys = {
        (r.study_id, f"{r.condition.lower().replace(' ', '_')}_{r.level.lower().replace('/', '_')}")
        for r in coords.itertuples()
    }
    assert len(keys) == len(coords)
    for study, label in keys:
        assert labels.at[study, label] != ""


# ---------------------------------------------------------------- irregular and hard studies


def test_irregular_studies_present(tables: dict[str, pd.DataFrame]) -> None:
    series = tables["train_series_descriptions"]
    per_study = series.groupby("study_id")["series_description"].agg(list)
    assert any(len(set(s)) < 3 for s in per_study), "a study lacking a series type"
    assert any(s.count("Axial T2") == 2 for s in per_study), "a study with two axial series"
    assert any(s.count("Axial T2") >= 3 for s in per_study), "a study with one axial stack per disc"
    assert any(s.count("Sagittal T1") == 2 for s in per_study), "a study with two sagittal T1 series"
    assert (tables["train"][list(LABEL_COLUMNS)] == "").any(axis=1).any(), "a study with a blank label"
    coords = tables["train_label_coordinates"]
    for study, types in per_study.items():
        if "Sagittal T1" not in types:
            assert not coords[(coords.study_id == study) & coords.condition.str.contains("Foraminal")].size


def test_plan_forces_every_kind() -> None:
    plans = plan_studies(PhantomConfig(studies=60, seed=11))
    train = [p for p in plans if p.part == "train"]
    assert {p.layout for p in train} >= set(LAYOUT_KINDS)
    assert any((p.labels.observed < 0).any() for p in train)
    assert not any(p.layout for p in plan_studies(PhantomConfig(studies=60, seed=11, irregularity=0.0)))
    assert {p.hard for p in train} >= set(HARD_KINDS)
    assert len(plans) == 60 + 3


def test_config_validation() -> None:
    with pytest.raises(ConfigError, match="studies"):
        PhantomConfig(studies=0)
    with pytest.raises(ConfigError, match="reader_noise"):
        PhantomConfig(reader_noise=1.5)
    assert PhantomConfig(studies=200).n_test == 10 and PhantomConfig(studies=10).n_test == 2


# ---------------------------------------------------------------- labels, noise, oracle


def test_joint_model_matches_reference_marginals_and_clusters() -> None:
    model = disease.joint_model(0.175)
    rng = np.random.default_rng(0)
    latent = np.array([model.sample(rng).latent for _ in range(3000)])
    codes = pathology.grade(latent, model.cuts)
    observed = pathology.observe(rng, latent, model.cuts, 0.175)
    overall = np.bincount(observed.ravel(), minlength=3) / observed.size
    assert overall == pytest.approx([0.77, 0.16, 0.06], abs=0.035)
    by_label = codes.reshape(len(codes), 5, 5)  # study, condition, level
    diseased = (by_label > 0).mean(axis=0)
    assert (diseased[:, 3] > diseased[:, 0] + 0.15).all()  # L4/L5 vs L1/L2, every condition
    burden = (codes > 0).sum(axis=1)
    assert burden.var() > 2.0 * (codes > 0).mean(axis=0).dot(1 - (codes > 0).mean(axis=0))  # clustered
    neighbours = np.corrcoef(by_label[:, 0, 2], by_label[:, 0, 3])[0, 1]
    distant = np.corrcoef(by_label[:, 0, 0], by_label[:, 0, 3])[0, 1]
    assert neighbours > 0.1 and neighbours > distant  # spinal L3/L4 ~ L4/L5 beats L1/L2 ~ L4/L5


@pytest.mark.parametrize("noise", [0.0, 0.175])
def test_joint_model_expected_correlations_hit_both_tables(noise: float) -> None:
    """Within a level and between neighbouring levels, every real correlation is met (the
    reader's threshold noise no longer caps the rare labels' correlations)."""
    model = disease.joint_model(noise)
    within = disease.expected_correlations(model, noise)
    for name, ref in reference.CORRELATIONS.items():
        assert within[name] == pytest.approx(ref, abs=0.01)
    between = disease.expected_level_correlations(model, noise)
    for condition, ref in reference.LEVEL_CORRELATIONS.items():
        assert between[condition] == pytest.approx(ref, abs=0.01)
    assert (np.abs(model.chain_phi) < disease.MAX_PHI).all() and (model.own > 0).all()


def test_sampled_correlations_match_the_model() -> None:
    """The sampler draws what the fit promises: 20,000 patients, observed through the reader."""
    noise, model = 0.175, disease.joint_model(0.175)
    rng = np.random.default_rng(5)
    latent = np.array([model.sample(rng).latent for _ in range(20_000)])
    observed = pathology.observe(rng, latent, model.cuts, noise)
    got = realism.level_correlations(observed)
    want = disease.expected_level_correlations(model, noise)
    for condition in reference.LEVEL_CORRELATIONS:
        assert got[condition] == pytest.approx(want[condition], abs=0.035)
    assert realism.correlations(observed)["left~right foraminal"] == pytest.approx(
        disease.expected_correlations(model, noise)["left~right foraminal"], abs=0.035
    )


def test_bivariate_cdf_against_scipy() -> None:
    x, y = np.array([-1.2, 0.3, 2.0]), np.array([0.5, -0.7, 1.9])
    for rho in (0.0, 0.5, 0.95):
        want = [
            multivariate_normal([0, 0], [[1, rho], [rho, 1]]).cdf([u, v]) for u, v in zip(x, y, strict=True)
        ]
        assert disease.bivariate_cdf(x, y, rho) == pytest.approx(want, abs=1e-6)


def test_reader_errs_near_the_thresholds() -> None:
    """The reader's grade moves only where the latent lies near a threshold, as often as
    ``observation_probs`` says, and keeps the true marginals."""
    cuts, noise = np.array([[0.5, 1.5]]), 0.2
    rng = np.random.default_rng(1)
    latent = rng.standard_normal((200_000, 1))
    observed, codes = pathology.observe(rng, latent, cuts, noise), pathology.grade(latent, cuts)
    edges = pathology.reader_cuts(cuts, noise)[0]
    far = (np.abs(latent - edges) > 5 * noise).all(axis=1)  # five reader sds from both reader cuts
    assert (observed[far] == codes[far]).all() and (observed != codes).mean() > 0.05
    assert np.bincount(observed.ravel()) / observed.size == pytest.approx(
        np.bincount(codes.ravel()) / codes.size, abs=0.005
    )
    for lo, hi in ((0.3, 0.5), (0.5, 0.7), (1.4, 1.6)):
        band = (latent[:, 0] > lo) & (latent[:, 0] < hi)
        want = pathology.observation_probs(latent[band], cuts, noise)[:, 0].mean(axis=0)
        assert np.bincount(observed[band, 0], minlength=3) / band.sum() == pytest.approx(want, abs=0.01)
    # a latent exactly on a reader cut is read either side with even odds
    on_cut = pathology.observation_probs(edges[None, :1], cuts, noise)[0, 0]
    assert on_cut[:2] == pytest.approx([0.5, 0.5], abs=1e-3)
    assert pathology.observation_probs(latent[:5], cuts, 0.0) == pytest.approx(np.eye(3)[codes[:5]])


def test_oracle_submission(phantom: Path, tables: dict[str, pd.DataFrame]) -> None:
    oracle = pd.read_csv(phantom / "truth" / "oracle_submission.csv")
    assert list(oracle.columns) == ["row_id", *PROB_COLUMNS]
    ids = tables["train"]["study_id"]
    assert list(oracle["row_id"]) == [row_id(s, lab) for s in ids for lab in LABEL_COLUMNS]
    assert np.allclose(oracle[list(PROB_COLUMNS)].sum(axis=1), 1.0)
    meta = json.loads((phantom / "phantom.json").read_text())
    score = pytest.importorskip("lumbar_bench.metrics.score")
    assert meta["oracle_score"] is not None and 0.0 < meta["oracle_score"] < np.log(3)
    codes = tables["train"].set_index("study_id")[list(LABEL_COLUMNS)]
    codes = codes.apply(lambda c: c.map({s: i for i, s in enumerate(SEVERITIES)}).fillna(-1)).astype(np.int64)
    assert score.score(codes, oracle).score == pytest.approx(meta["oracle_score"])


# ---------------------------------------------------------------- determinism


def _bytes_of(root: Path, pattern: str) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.glob(pattern))}


def test_determinism(tmp_path: Path) -> None:
    cfg = PhantomConfig(studies=3, size=48, seed=5, spider_cases=1, test_studies=1)
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    synthesize(a, cfg, progress=False)
    synthesize(b, cfg, progress=False)
    synthesize(c, PhantomConfig(studies=3, size=48, seed=6, spider_cases=1, test_studies=1), progress=False)
    for pattern in ("*.csv", "truth/*.csv", "*_images/*/*/*.dcm", "spider/*/*.mha"):
        assert _bytes_of(a, pattern) == _bytes_of(b, pattern) and _bytes_of(a, pattern)
    for npz in sorted((a / "truth" / "masks").glob("*/*.npz")):
        with np.load(npz) as x, np.load(b / npz.relative_to(a)) as y:
            for key in ("instance_numbers", "anatomy", "lesion"):
                np.testing.assert_array_equal(x[key], y[key])
    assert (a / "train.csv").read_bytes() != (c / "train.csv").read_bytes()
    pixels_a = pydicom.dcmread(next((a / "train_images").glob("*/*/*.dcm"))).pixel_array
    pixels_c = pydicom.dcmread(next((c / "train_images").glob("*/*/*.dcm"))).pixel_array
    assert pixels_a.shape != pixels_c.shape or not np.array_equal(pixels_a, pixels_c)


# ---------------------------------------------------------------- truth masks and pathology signal


def test_truth_masks_match_series(phantom: Path, tables: dict[str, pd.DataFrame]) -> None:
    for r in tables["train_series_descriptions"].head(12).itertuples():
        with np.load(phantom / "truth" / "masks" / str(r.study_id) / f"{r.series_id}.npz") as z:
            numbers, anat, les = z["instance_numbers"], z["anatomy"], z["lesion"]
        folder = phantom / "train_images" / str(r.study_id) / str(r.series_id)
        assert sorted(numbers.tolist()) == sorted(int(p.stem) for p in folder.glob("*.dcm"))
        ds = pydicom.dcmread(folder / f"{numbers[0]}.dcm", stop_before_pixels=True)
        assert anat.shape == les.shape == (len(numbers), ds.Rows, ds.Columns)
        assert anat.dtype == np.uint16 and les.dtype == np.uint8 and les.max() <= 25
        if r.series_description == "Sagittal T2/STIR":
            assert anatomy.SPIDER_CANAL in anat and (anat == anatomy.SPIDER_DISC_BASE).any()
            assert set(np.unique(les)) & set(range(1, 6))  # canal zones


def test_canal_severity_visible_in_phantom(phantom: Path) -> None:
    truth = read_csv(phantom / "truth" / "train.csv").set_index("study_id")
    series = read_csv(phantom / "train_series_descriptions.csv")
    means: dict[str, list[float]] = {"Normal/Mild": [], "Severe": []}
    for r in series[series["series_description"] == "Sagittal T2/STIR"].itertuples():
        with np.load(phantom / "truth" / "masks" / str(r.study_id) / f"{r.series_id}.npz") as z:
            numbers, les = z["instance_numbers"], z["lesion"]
        folder = phantom / "train_images" / str(r.study_id) / str(r.series_id)
        pixels = np.stack([pydicom.dcmread(folder / f"{n}.dcm").pixel_array.astype(float) for n in numbers])
        pixels /= np.percentile(pixels, 99.5)
        for level in range(5):
            zone = les == 1 + level
            grade = truth.at[r.study_id, LABEL_COLUMNS[level]]
            if zone.sum() > 5 and grade in means:
                means[grade].append(float(pixels[zone].mean()))
    assert means["Severe"], "the tiny phantom should hold a severe canal level"
    assert np.mean(means["Severe"]) < np.mean(means["Normal/Mild"]) - 0.15


def _render(severity: np.ndarray, description: str) -> tuple[anatomy.Spine, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(42)
    spine = anatomy.sample_spine(rng, severity, 0.0)
    if description == "Axial T2":
        stack = geometry.axial_blocks(
            rng,
            spine,
            0.5 * spine.canal_v,
            np.zeros(3),
            fov=180.0,
            shape=(96, 96),
            per_level=[3] * 5,
            spacing=4.0,
            tilted=True,
        )
    else:
        centre = spine.point(float(spine.vert_center[2]), 0.0, 0.6 * spine.canal_v)
        stack = geometry.sagittal(rng, description, centre, fov=260.0, shape=(128, 128), n=15, spacing=3.5)
    maps = draw_stack(spine, stack)
    return spine, maps.cls, maps.les


@pytest.mark.parametrize(
    ("condition", "level", "series"),
    [
        (0, 3, "Sagittal T2/STIR"),  # canal at L4/L5
        (1, 4, "Sagittal T1"),  # left foramen at L5/S1
        (4, 2, "Axial T2"),  # right lateral recess at L3/L4
    ],
)
def test_severity_shrinks_the_zone(condition: int, level: int, series: str) -> None:
    open_fraction = []
    for amount in (0.1, 0.45, 0.8):  # normal, moderate and severe narrowing
        severity = np.full((5, 5), 0.1)
        severity[condition, level] = amount
        _, cls, les = _render(severity, series)
        zone = les == 1 + 5 * condition + level
        assert zone.sum() > 20
        open_fraction.append(float(np.isin(cls[zone], [T_CSF, T_FAT, T_NERVE]).mean()))
    normal, moderate, severe = open_fraction
    assert normal > moderate > severe
    assert normal - severe > 0.4 and normal - severe > moderate - severe


# ---------------------------------------------------------------- SPIDER


def test_spider_volumes(phantom: Path) -> None:
    images = sorted((phantom / "spider" / "images").glob("*.mha"))
    assert len(images) >= 12 and any(p.name.endswith("_t2.mha") for p in images)
    for path in images[:4]:
        image = sitk.ReadImage(str(path))
        mask = sitk.ReadImage(str(phantom / "spider" / "masks" / path.name))
        assert image.GetSize() == mask.GetSize() and np.allclose(image.GetSpacing(), mask.GetSpacing())
        spacing = image.GetSpacing()
        assert spacing[2] > max(spacing[:2]) and 3.3 <= spacing[2] <= max(4.8, 1.2 * spacing[0]) + 1e-9
        values = set(np.unique(sitk.GetArrayFromImage(mask)).tolist())
        assert 100 in values and 201 in values
        assert {1, 2, 3} <= values | {v - 100 for v in values}
        assert values <= {0, 100} | set(range(1, 26)) | set(range(101, 126)) | set(range(201, 226))


def test_spider_reader_accepts_output(phantom: Path) -> None:
    spider = pytest.importorskip("lumbar_bench.data.spider")
    case = next(spider.iter_spider(phantom / "spider"))
    assert case.image.shape == case.mask.shape and case.spacing[0] > case.spacing[1]


@pytest.mark.slow
def test_workers_do_not_change_the_output(tmp_path: Path) -> None:
    cfg = PhantomConfig(studies=4, size=48, seed=9, spider_cases=2, test_studies=1)
    synthesize(tmp_path / "one", cfg, progress=False, workers=1)
    synthesize(tmp_path / "two", cfg, progress=False, workers=2)
    for pattern in ("*.csv", "truth/*.csv", "*_images/*/*/*.dcm", "spider/*/*.mha"):
        assert _bytes_of(tmp_path / "one", pattern) == _bytes_of(tmp_path / "two", pattern)


def test_summary_paths_exist(tmp_path: Path) -> None:
    summary = synthesize(tmp_path, PhantomConfig(studies=2, size=40, spider_cases=1), progress=False)
    assert all(p.exists() for p in summary.paths.values())
    assert summary.train_studies == 2 and summary.test_studies == 2 and summary.spider_volumes == 2
    assert "oracle score" in summary.describe() and summary.images > 0
