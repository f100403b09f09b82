"""SPIDER-layout volumes from the same anatomy model: ``images/{case}_t1.mha`` + ``masks/...``.

Each case is a sagittal volume of a fresh patient (not one of the RSNA studies), written
with SimpleITK: numpy ``(slices, rows, cols)``, spacing ``(col, row, slice)`` mm, the
origin at the first slice's top-left pixel and a direction matrix with columns +y
(posterior), -z (down) and -x (slices step from the patient's left to right). Mask values:
vertebrae 1.. from L5 up, 101.. when cut by the field of view, canal 100, discs 201.. from
L5/S1 up. In-plane spacing is the field of view over ``size`` (SPIDER-like, 0.4-0.8 mm, at
384-640 px); the slice spacing (3.3-4.8 mm) always exceeds it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from lumbar_bench.data.phantom import disease, geometry, imaging, pathology
from lumbar_bench.data.phantom.anatomy import sample_spine
from lumbar_bench.data.phantom.render import draw_stack, mark_partial, partial_vertebrae
from lumbar_bench.data.phantom.study import PART_CODES


def write_spider_case(out: Path, i: int, *, seed: int, size: int) -> list[str]:
    """Case ``i``: a T1 volume (plus T2 for even ``i``) and mask(s); returns the case names."""
    rng = np.random.default_rng([seed, PART_CODES["spider"], i])
    patient = disease.joint_model(pathology.DEFAULT_READER_NOISE).sample(rng)
    spine = sample_spine(
        rng, pathology.severity_grid(patient.amounts), patient.degeneration, scoliosis=rng.random() < 0.05
    )
    fov = rng.uniform(230.0, 300.0)
    spacing = max(rng.uniform(3.3, 4.8), 1.2 * fov / size)
    n = int(rng.integers(13, 20))
    centre = spine.point(float(spine.vert_center[2]), 0.0, 0.6 * spine.canal_v) + rng.uniform(-12, 12, 3)
    stack = geometry.sagittal(rng, "Sagittal T1", centre, fov=fov, shape=(size, size), n=n, spacing=spacing)
    maps = draw_stack(spine, stack)
    mask = mark_partial(maps.anat, partial_vertebrae(spine, stack))[::-1]
    origin = stack.positions[-1]
    direction = np.column_stack([geometry.SAGITTAL_ROW, geometry.SAGITTAL_COL, [-1.0, 0.0, 0.0]])
    names = []
    for contrast, suffix in (("T1", "t1"), ("T2", "t2"))[: 2 if i % 2 == 0 else 1]:
        acq = imaging.Acquisition(contrast, rng.uniform(0.02, 0.05), 0.0, rng.uniform(0.4, 0.8), 1)
        img = imaging.render(maps.cls, imaging.lookup(rng, spine, contrast), acq, rng)[::-1]
        stored = imaging.to_stored(img, rng.uniform(500.0, 1500.0), 1.0, 0.0, 16)
        name = f"{i + 1}_{suffix}"
        for folder, arr in (("images", stored), ("masks", mask)):
            image = sitk.GetImageFromArray(np.ascontiguousarray(arr))
            image.SetSpacing((stack.pixel_spacing, stack.pixel_spacing, spacing))
            image.SetOrigin(tuple(float(c) for c in origin))
            image.SetDirection(tuple(float(c) for c in direction.ravel()))
            (out / folder).mkdir(parents=True, exist_ok=True)
            sitk.WriteImage(image, str(out / folder / f"{name}.mha"), True)
        names.append(name)
    return names
