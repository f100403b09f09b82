"""Colour overlays in the original study's scheme and the QC contact sheet.

Vertebrae grey (discs a lighter grey), Normal/Mild green, Moderate blue, Severe red;
the ignore label is a faint yellow. Figures are built with :class:`matplotlib.figure.Figure`
directly, never pyplot, so no global backend or figure state is touched.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

SEVERITY_RGB: dict[str, tuple[float, float, float]] = {
    "normal_mild": (0.1, 0.8, 0.1),
    "moderate": (0.15, 0.35, 1.0),
    "severe": (1.0, 0.1, 0.1),
}
ANATOMY_RGB: dict[str, tuple[float, float, float]] = {"vertebra": (0.6, 0.6, 0.6), "disc": (0.85, 0.85, 0.85)}
IGNORE_RGB = (0.9, 0.9, 0.2)


def class_colours(names: Sequence[str]) -> np.ndarray:
    """RGB per class index; background and unknown names black, the ignore label last."""
    out = np.zeros((len(names) + 1, 3))
    for i, name in enumerate(names):
        sev = name.rsplit("/", 1)[-1]
        out[i] = SEVERITY_RGB.get(sev, ANATOMY_RGB.get(name, (0.0, 0.0, 0.0)))
    out[len(names)] = IGNORE_RGB
    return out


def overlay(image: np.ndarray, label: np.ndarray, names: Sequence[str], alpha: float = 0.55) -> np.ndarray:
    """RGB image ``(H, W, 3)``: grey-scale ``image`` with every non-background class tinted."""
    grey = np.clip(image, 0, 1)[..., None].repeat(3, axis=2)
    colours = class_colours(names)
    lab = np.clip(label.astype(np.int64), 0, len(colours) - 1)
    tint = colours[lab]
    mask = (lab > 0)[..., None]
    return np.where(mask, (1 - alpha) * grey + alpha * tint, grey)


def save_grid(path: Path, panels: list[tuple[str, np.ndarray]], columns: int = 4, title: str = "") -> Path:
    """Save RGB ``panels`` (title, image) as one PNG grid."""
    rows = max(1, -(-len(panels) // columns))
    fig = Figure(figsize=(2.4 * columns, 2.6 * rows))
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (name, img) in zip(axes.ravel(), panels, strict=False):
        ax.imshow(img, interpolation="nearest")
        ax.set_title(name, fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    return path


def label_vs_prediction(
    path: Path,
    items: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]],
    names: Sequence[str],
    title: str = "",
) -> Path:
    """For each ``(name, image, label, prediction)`` two panels side by side: label, then prediction."""
    panels = []
    for name, image, label, pred in items:
        panels += [
            (f"{name} label", overlay(image, label, names)),
            (f"{name} pred", overlay(image, pred, names)),
        ]
    return save_grid(path, panels, columns=4, title=title)
