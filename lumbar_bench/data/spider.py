"""SPIDER lumbar MRI segmentation data: ``images/<case>.mha`` paired with ``masks/<case>.mha``.

Axis order in the files is not trusted: the slice axis is the one with the LARGEST voxel
spacing (sagittal slices are 3-5 mm apart, in-plane pixels under 1 mm), and arrays come
back as ``(n_slices, H, W)`` with that axis first. Mask values follow SPIDER: vertebrae
1-25 from the bottom (L5 = 1), spinal canal 100, partial vertebrae 101-125, discs 201-225.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from lumbar_bench.core.errors import DataError

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class SpiderCase:
    """One SPIDER series: ``image`` float32 and ``mask`` int16, both ``(n_slices, H, W)``.

    ``spacing`` is ``(slice, row, col)`` in mm, in the order of the returned arrays.
    """

    name: str
    image: np.ndarray
    mask: np.ndarray
    spacing: tuple[float, float, float]


def spider_pairs(root: Path) -> list[tuple[str, Path, Path]]:
    """``(case name, image path, mask path)`` for every ``images/*.mha``, sorted by name.

    DataError when a folder is missing or an image has no mask (or a mask no image).
    """
    root = Path(root)
    images_dir, masks_dir = root / "images", root / "masks"
    for folder in (images_dir, masks_dir):
        if not folder.is_dir():
            raise DataError(f"{folder}: SPIDER folder not found")
    images = {p.name: p for p in images_dir.glob("*.mha")}
    masks = {p.name: p for p in masks_dir.glob("*.mha")}
    if not images:
        raise DataError(f"{images_dir}: no .mha images")
    no_mask = sorted(images.keys() - masks.keys())
    if no_mask:
        raise DataError(
            f"{images[no_mask[0]]}: no matching mask {masks_dir / no_mask[0]}"
            + (f" (and {len(no_mask) - 1} more)" if len(no_mask) > 1 else "")
        )
    no_image = sorted(masks.keys() - images.keys())
    if no_image:
        raise DataError(
            f"{masks[no_image[0]]}: no matching image {images_dir / no_image[0]}"
            + (f" (and {len(no_image) - 1} more)" if len(no_image) > 1 else "")
        )
    return [(Path(name).stem, images[name], masks[name]) for name in sorted(images)]


def _read_mha(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Array in numpy (z, y, x) order and the spacing of each array axis."""
    try:
        img = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unreadable"
        raise DataError(f"{path}: cannot read ({first})") from None
    arr = sitk.GetArrayFromImage(img)
    if arr.ndim != 3:
        raise DataError(f"{path}: expected a 3-D volume, got shape {arr.shape}")
    return arr, np.asarray(img.GetSpacing(), dtype=np.float64)[::-1]


def read_case(name: str, image_path: Path, mask_path: Path) -> SpiderCase:
    """Read one image/mask pair; the largest-spacing axis becomes axis 0."""
    image, spacing = _read_mha(image_path)
    mask, mask_spacing = _read_mha(mask_path)
    if image.shape != mask.shape:
        raise DataError(f"{mask_path}: mask shape {mask.shape} differs from image shape {image.shape}")
    if not np.allclose(spacing, mask_spacing, rtol=1e-3):
        log.warning("%s: mask spacing %s differs from the image's %s", mask_path, mask_spacing, spacing)
    axis = int(np.argmax(spacing))
    order = [axis] + [a for a in range(3) if a != axis]
    return SpiderCase(
        name=name,
        image=np.ascontiguousarray(np.moveaxis(image, axis, 0), dtype=np.float32),
        mask=np.ascontiguousarray(np.moveaxis(mask, axis, 0)).astype(np.int16),
        spacing=tuple(float(spacing[a]) for a in order),  # type: ignore[arg-type]
    )


def iter_spider(root: Path) -> Iterator[SpiderCase]:
    """Read the cases of ``root`` one at a time (the full SPIDER set does not fit in memory)."""
    for name, image_path, mask_path in spider_pairs(root):
        yield read_case(name, image_path, mask_path)


def read_spider(root: Path) -> list[SpiderCase]:
    """Every case of a SPIDER folder (``images/`` and ``masks/``), sorted by name."""
    return list(iter_spider(root))


def sagittal_slices(case: SpiderCase) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(image, mask)`` 2-D pairs of each slice along the slice axis."""
    for i in range(case.image.shape[0]):
        yield case.image[i], case.mask[i]
