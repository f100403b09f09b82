"""SPIDER .mha reading: pairing, slice axis by spacing, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from lumbar_bench.core.errors import DataError
from lumbar_bench.data.spider import iter_spider, read_spider, sagittal_slices, spider_pairs


def write_mha(path: Path, array_zyx: np.ndarray, spacing_xyz: tuple[float, float, float]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = sitk.GetImageFromArray(array_zyx)
    img.SetSpacing(spacing_xyz)
    sitk.WriteImage(img, str(path))


def make_case(
    root: Path, name: str, spacing_xyz: tuple[float, float, float], shape_zyx=(6, 10, 5)
) -> np.ndarray:
    rng = np.random.default_rng(len(name))
    image = rng.normal(size=shape_zyx).astype(np.float32)
    mask = (np.arange(np.prod(shape_zyx)).reshape(shape_zyx) % 7).astype(np.uint8)
    mask[0, 0, 0] = 201
    write_mha(root / "images" / f"{name}.mha", image, spacing_xyz)
    write_mha(root / "masks" / f"{name}.mha", mask, spacing_xyz)
    return image


def test_slice_axis_is_largest_spacing(tmp_path: Path) -> None:
    # x (numpy axis 2) has the 3.5 mm spacing: it must come first.
    image = make_case(tmp_path, "1_t1", (3.5, 0.6, 0.7))
    (case,) = read_spider(tmp_path)
    assert case.name == "1_t1"
    assert case.image.shape == (5, 6, 10) and case.mask.shape == (5, 6, 10)
    assert case.image.dtype == np.float32 and np.issubdtype(case.mask.dtype, np.integer)
    assert case.spacing == pytest.approx((3.5, 0.7, 0.6))
    np.testing.assert_array_equal(case.image, np.moveaxis(image, 2, 0))
    assert case.mask.max() == 201


def test_slice_axis_already_first(tmp_path: Path) -> None:
    image = make_case(tmp_path, "2_t2", (0.5, 0.5, 4.0))
    (case,) = read_spider(tmp_path)
    assert case.image.shape == (6, 10, 5) and case.spacing == pytest.approx((4.0, 0.5, 0.5))
    np.testing.assert_array_equal(case.image, image)


def test_sagittal_slices_and_order(tmp_path: Path) -> None:
    make_case(tmp_path, "b", (3.5, 0.6, 0.7))
    make_case(tmp_path, "a", (3.5, 0.6, 0.7))
    assert [n for n, _, _ in spider_pairs(tmp_path)] == ["a", "b"]
    case = next(iter_spider(tmp_path))
    pairs = list(sagittal_slices(case))
    assert len(pairs) == 5 and pairs[0][0].shape == pairs[0][1].shape == (6, 10)


def test_missing_mask(tmp_path: Path) -> None:
    make_case(tmp_path, "a", (3.5, 0.6, 0.7))
    write_mha(tmp_path / "images" / "lonely.mha", np.zeros((2, 2, 2), np.float32), (1, 1, 1))
    with pytest.raises(DataError, match=r"lonely\.mha: no matching mask"):
        spider_pairs(tmp_path)


def test_missing_image(tmp_path: Path) -> None:
    make_case(tmp_path, "a", (3.5, 0.6, 0.7))
    write_mha(tmp_path / "masks" / "orphan.mha", np.zeros((2, 2, 2), np.uint8), (1, 1, 1))
    with pytest.raises(DataError, match=r"orphan\.mha: no matching image"):
        spider_pairs(tmp_path)


def test_missing_folder_and_shape_mismatch(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="SPIDER folder not found"):
        read_spider(tmp_path)
    make_case(tmp_path, "a", (3.5, 0.6, 0.7))
    write_mha(tmp_path / "masks" / "a.mha", np.zeros((2, 2, 2), np.uint8), (3.5, 0.6, 0.7))
    with pytest.raises(DataError, match="differs from image shape"):
        read_spider(tmp_path)


def test_unreadable_file(tmp_path: Path) -> None:
    make_case(tmp_path, "a", (3.5, 0.6, 0.7))
    (tmp_path / "images" / "a.mha").write_bytes(b"not an image")
    with pytest.raises(DataError, match=r"a\.mha: cannot read"):
        read_spider(tmp_path)
