"""MR contrast and acquisition effects: tissue intensities, blur, coil shading, ghosts, noise.

Intensities are relative (about 0-1): on T1 fat is bright, CSF dark and discs intermediate;
on T2 CSF and healthy nuclei are bright; STIR additionally suppresses fat and marrow.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

from lumbar_bench.data.phantom import drawing as dr
from lumbar_bench.data.phantom.anatomy import Spine

#: Base intensity of each tissue class per contrast (class order: see ``drawing.T_*``).
_BASE = {
    "T1": {
        dr.T_MUSCLE: 0.30,
        dr.T_FAT: 0.90,
        dr.T_MARROW: 0.62,
        dr.T_CORTEX: 0.10,
        dr.T_ANNULUS: 0.28,
        dr.T_CSF: 0.10,
        dr.T_NERVE: 0.36,
        dr.T_FIBROUS: 0.14,
        dr.T_VISCERA: 0.42,
        dr.T_VESSEL: 0.05,
        dr.T_JOINT: 0.12,
    },
    "T2": {
        dr.T_MUSCLE: 0.20,
        dr.T_FAT: 0.52,
        dr.T_MARROW: 0.36,
        dr.T_CORTEX: 0.06,
        dr.T_ANNULUS: 0.16,
        dr.T_CSF: 1.00,
        dr.T_NERVE: 0.28,
        dr.T_FIBROUS: 0.09,
        dr.T_VISCERA: 0.45,
        dr.T_VESSEL: 0.04,
        dr.T_JOINT: 0.80,
    },
    "STIR": {
        dr.T_MUSCLE: 0.18,
        dr.T_FAT: 0.07,
        dr.T_MARROW: 0.14,
        dr.T_CORTEX: 0.05,
        dr.T_ANNULUS: 0.15,
        dr.T_CSF: 1.00,
        dr.T_NERVE: 0.26,
        dr.T_FIBROUS: 0.08,
        dr.T_VISCERA: 0.40,
        dr.T_VESSEL: 0.04,
        dr.T_JOINT: 0.85,
    },
}


@dataclass(frozen=True)
class Acquisition:
    """Per-series acquisition effects."""

    contrast: str
    noise: float
    ghost: float
    blur: float
    posterior_axis: int


def lookup(rng: np.random.Generator, spine: Spine, contrast: str) -> np.ndarray:
    """Intensity of every tissue class ``(N_CLASSES,)`` for one series, jittered per study."""
    lut = np.zeros(dr.N_CLASSES, dtype=np.float32)
    for cls, value in _BASE[contrast].items():
        lut[cls] = value * rng.uniform(0.9, 1.1)
    marrow = lut[dr.T_MARROW]
    for i in range(len(spine.hydration)):
        h = float(spine.hydration[i])
        lut[dr.T_NUCLEUS + i] = 0.30 * (0.85 + 0.15 * h) if contrast == "T1" else lut[dr.T_ANNULUS] + 0.75 * h
        lut[dr.T_VERT + i] = marrow * rng.uniform(0.9, 1.1)
    return lut


def render(cls: np.ndarray, lut: np.ndarray, acq: Acquisition, rng: np.random.Generator) -> np.ndarray:
    """Float32 magnitude images ``(n, H, W)`` from tissue classes."""
    img = lut[cls]
    if acq.blur > 0:
        img = gaussian_filter(img, sigma=(0.0, acq.blur, acq.blur), mode="nearest")
    img *= _coil(img.shape[1:], acq.posterior_axis, rng)[None]
    if acq.ghost > 0:
        axis = 1 + acq.posterior_axis
        shift = int(img.shape[axis] * rng.uniform(0.15, 0.35))
        img = img + acq.ghost * (np.roll(img, shift, axis=axis) + np.roll(img, -shift, axis=axis)) / 2
    n1 = rng.standard_normal(img.shape, dtype=np.float32) * np.float32(acq.noise)
    n2 = rng.standard_normal(img.shape, dtype=np.float32) * np.float32(acq.noise)
    return np.sqrt((img + n1) ** 2 + n2**2)


def _coil(shape: tuple[int, int], posterior_axis: int, rng: np.random.Generator) -> np.ndarray:
    """Smooth shading: brighter towards the posterior spine coil, mild random curvature."""
    rows, cols = shape
    y = np.linspace(-1.0, 1.0, rows, dtype=np.float32)[:, None]
    x = np.linspace(-1.0, 1.0, cols, dtype=np.float32)[None, :]
    post = x if posterior_axis == 1 else y
    other = y if posterior_axis == 1 else x
    g = rng.uniform(0.10, 0.25)
    c1, c2 = rng.uniform(-0.08, 0.08, 2)
    return (1.0 + g * post + c1 * other + c2 * (x * x + y * y)).astype(np.float32)


def to_stored(img: np.ndarray, scale: float, slope: float, intercept: float, bits: int) -> np.ndarray:
    """Quantise to uint16 stored values whose ``stored * slope + intercept`` is ``img * scale``."""
    stored = np.rint((img * np.float32(scale) - np.float32(intercept)) / np.float32(slope))
    return np.clip(stored, 0, 2**bits - 1).astype(np.uint16)
