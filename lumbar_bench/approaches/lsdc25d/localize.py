"""Stage 1 and 3: heatmap U-Nets that find the label points on one series type.

One model per series type, one heatmap channel per level on sagittal series (spinal points on
T2/STIR, foraminal points on T1) and a single channel on axial slices (subarticular points).
Left and right are not channels: the two sides look alike, so a model that had to tell them
apart from the image alone would mix them up. Side comes from patient geometry instead
(:func:`split_sides`, :func:`two_peaks`). The input is a slice with its two neighbours (2.5D)
plus three coordinate planes (row, column, relative slice position), resized to a square
working size, so the model knows where in the field of view and in the stack it looks.

Sagittal models also learn a level-agnostic :data:`DISC` channel (every level's points in
one map); its peaks are the candidates the levels are assigned to in head-to-foot order
(:func:`candidates`, :func:`ordered_assignment`). Sagittal targets are Gaussians in the plane,
scaled down with the distance in slices from the annotated slice, so the peak over the whole
series gives the slice and the point ("a heatmap over slices"). Axial slices are chosen by
geometry (:mod:`.levels`), so the axial model only learns the plane: its training slices are
the annotated ones. A channel without an annotation on a series (a blank label, a missing
coordinate) is left out of the loss, never taught as "no point here".
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F

from lumbar_bench.constants import GROUP_SERIES, LEVELS
from lumbar_bench.data.dicom import SeriesVolume

log = logging.getLogger(__name__)

#: Bumped whenever the localisers' inputs, outputs, training or what their stage records change; part of
#: their stage key.
VERSION = 5  # 5: the stage also records the FLOPs of its training
#: Bumped whenever the decoding of their heatmaps into points changes; part of the grader's key.
DECODE_VERSION = 3
#: The points each series type's model finds: ``(condition, level)``; level "" on axial slices.
#: Sagittal models also learn :data:`DISC`, every level's points in one channel: a sharp,
#: level-agnostic map whose peaks the levels are then assigned to in order.
DISC = "disc"
CHANNELS: dict[str, tuple[str, ...]] = {
    GROUP_SERIES["spinal"]: (*LEVELS, DISC),
    GROUP_SERIES["foraminal"]: (*LEVELS, DISC),
    GROUP_SERIES["subarticular"]: ("",),
}
#: Input planes: three neighbouring slices, then row, column and relative slice position.
IN_CHANNELS = 6


@dataclass(frozen=True)
class Point:
    """A located point: slice index, pixel ``(row, col)`` in the series' own pixels, and peak value."""

    index: int
    row: float
    col: float
    peak: float


def working_stack(volume: SeriesVolume, size: int) -> np.ndarray:
    """The series resized to ``size`` x ``size``, float32 ``(n, size, size)``."""
    pixels = torch.from_numpy(np.ascontiguousarray(volume.pixels))[:, None]
    return F.interpolate(pixels, size=(size, size), mode="area")[:, 0].numpy()


def neighbours(stack: np.ndarray, index: int) -> np.ndarray:
    """Slices ``index - 1, index, index + 1`` (edges repeated) and the coordinate planes, ``(6, S, S)``."""
    n, h, w = stack.shape
    idx = np.clip([index - 1, index, index + 1], 0, n - 1)
    rows = np.broadcast_to(np.linspace(-1, 1, h, dtype=np.float32)[:, None], (h, w))
    cols = np.broadcast_to(np.linspace(-1, 1, w, dtype=np.float32)[None, :], (h, w))
    depth = np.full((h, w), 2 * index / max(n - 1, 1) - 1, dtype=np.float32)
    return np.concatenate([stack[idx], np.stack([rows, cols, depth])])


def build_model(channels: int, depth: int, decoder: Sequence[int]) -> torch.nn.Module:
    """An smp U-Net, random-init ResNet-18 encoder, :data:`IN_CHANNELS` inputs, ``channels`` heatmaps."""
    return smp.Unet(
        "resnet18",
        encoder_depth=depth,
        encoder_weights=None,
        in_channels=IN_CHANNELS,
        classes=channels,
        decoder_channels=tuple(decoder),
    )


@dataclass(frozen=True)
class Annotation:
    """The annotated points of one series for one model: ``(channel, slice, row, col)`` in working px."""

    stack: np.ndarray
    points: list[tuple[int, int, float, float]]


def target(
    shape: tuple[int, int],
    points: Sequence[tuple[int, int, float, float]],
    index: int,
    channels: int,
    sigma: float,
    sigma_z: float,
) -> tuple[np.ndarray, np.ndarray]:
    """``(heatmaps, mask)`` for slice ``index``: a Gaussian per point, scaled by slice distance.

    Points of one channel (left and right) merge by maximum. ``mask`` is 1 for annotated
    channels, 0 for the others (left out of the loss).
    """
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
    maps = np.zeros((channels, *shape), dtype=np.float32)
    mask = np.zeros(channels, dtype=np.float32)
    for ch, k, r, c in points:
        scale = np.exp(-((index - k) ** 2) / (2 * sigma_z**2)) if sigma_z > 0 else float(index == k)
        bump = scale * np.exp(-((rows - r) ** 2 + (cols - c) ** 2) / (2 * sigma**2))
        maps[ch] = np.maximum(maps[ch], bump)
        mask[ch] = 1.0
    return maps, mask


def training_slices(ann: Annotation, extra: int, rng: np.random.Generator, axial: bool) -> list[int]:
    """The annotated slices of a series, plus ``extra`` random ones on sagittal series."""
    marked = sorted({k for _, k, _, _ in ann.points})
    if axial:
        return marked
    others = rng.choice(len(ann.stack), size=min(extra, len(ann.stack)), replace=False).tolist()
    return sorted(set(marked) | set(others))


def batches(
    annotations: Sequence[Annotation],
    channels: int,
    cfg_sigma: float,
    cfg_sigma_z: float,
    extra: int,
    batch_size: int,
    rng: np.random.Generator,
    axial: bool,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Shuffled ``(inputs, heatmaps, mask)`` batches over one epoch of ``annotations``."""
    items = [(a, k) for a in annotations for k in training_slices(a, extra, rng, axial)]
    order = rng.permutation(len(items))
    for start in range(0, len(items), batch_size):
        xs, ys, ms = [], [], []
        for i in order[start : start + batch_size]:
            ann, k = items[i]
            xs.append(neighbours(ann.stack, k))
            maps, mask = target(ann.stack.shape[1:], ann.points, k, channels, cfg_sigma, cfg_sigma_z)
            ys.append(maps)
            ms.append(mask)
        yield torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys)), torch.from_numpy(np.stack(ms))


def heatmap_loss(
    logits: torch.Tensor, maps: torch.Tensor, mask: torch.Tensor, pos_weight: float
) -> torch.Tensor:
    """Binary cross-entropy per pixel against the Gaussians, positives up-weighted, masked channels out."""
    weight = 1.0 + (pos_weight - 1.0) * maps
    per = F.binary_cross_entropy_with_logits(logits, maps, weight=weight, reduction="none").mean(dim=(2, 3))
    return (per * mask).sum() / mask.sum().clamp(min=1.0)


@torch.no_grad()
def heatmaps(model: torch.nn.Module, stack: np.ndarray, indices: Sequence[int], device: str) -> np.ndarray:
    """Sigmoid heatmaps ``(len(indices), channels, S, S)`` of the given slices."""
    model.eval()
    out = []
    for start in range(0, len(indices), 32):
        x = np.stack([neighbours(stack, k) for k in indices[start : start + 32]])
        out.append(torch.sigmoid(model(torch.from_numpy(x).to(device))).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0, *stack.shape[1:]), dtype=np.float32)


def peak(maps: np.ndarray, indices: Sequence[int], scale: tuple[float, float]) -> Point | None:
    """The arg-max of one channel's ``(n, S, S)`` maps over slices and pixels; None without slices.

    The point is in the series' own pixels (``scale`` = H/S, W/S).
    """
    if not len(indices):
        return None
    k, r, c = np.unravel_index(int(np.argmax(maps)), maps.shape)
    return Point(int(indices[k]), r * scale[0], c * scale[1], float(maps[k, r, c]))


def split_sides(
    maps: np.ndarray,
    indices: Sequence[int],
    x: np.ndarray,
    midline: float,
    scale: tuple[float, float],
    near: tuple[float, float, float] | None = None,
) -> tuple[Point | None, Point | None]:
    """``(left, right)`` peaks of one channel: over slices with patient x above, then below, ``midline``.

    DICOM patient x grows to the patient's left. ``near`` = ``(row, col, radius)`` in working
    pixels keeps each search within that disc (see :func:`peak_near`).
    """
    idx = np.asarray(indices)
    left, right = x[idx] > midline, x[idx] <= midline
    if near is None:
        return peak(maps[left], idx[left], scale), peak(maps[right], idx[right], scale)
    return peak_near(maps[left], idx[left], scale, *near), peak_near(maps[right], idx[right], scale, *near)


def _disc(shape: tuple[int, int], row: float, col: float, radius: float) -> np.ndarray:
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]]
    return (rows - row) ** 2 + (cols - col) ** 2 <= radius**2


def peak_near(
    maps: np.ndarray,
    indices: Sequence[int],
    scale: tuple[float, float],
    row: float,
    col: float,
    radius: float,
) -> Point | None:
    """:func:`peak` over the pixels within ``radius`` of ``(row, col)`` (working pixels) only."""
    inside = _disc(maps.shape[1:], row, col, radius)
    return peak(np.where(inside[None], maps, -1.0), indices, scale) if inside.any() else None


def value_near(maps: np.ndarray, row: float, col: float, radius: float) -> float:
    """The largest value of ``maps`` ``(n, S, S)`` within ``radius`` of ``(row, col)``; 0 when none."""
    inside = _disc(maps.shape[1:], row, col, radius)
    return float(maps[:, inside].max()) if inside.any() and len(maps) else 0.0


def candidates(maps: np.ndarray, radius: float, count: int, floor: float = 0.01) -> list[tuple[int, int]]:
    """Up to ``count`` peaks ``(row, col)`` of ``maps`` ``(n, C, S, S)``, over slices and channels.

    Each is at least ``radius`` working pixels from the higher ones (greedy suppression) and
    above ``floor``.
    """
    flat = maps.max(axis=(0, 1)).astype(np.float64)
    out: list[tuple[int, int]] = []
    while len(out) < count and flat.max() > floor:
        r, c = np.unravel_index(int(np.argmax(flat)), flat.shape)
        out.append((int(r), int(c)))
        flat[_disc(flat.shape, r, c, radius)] = -np.inf
    return out


def ordered_assignment(scores: np.ndarray, pair: np.ndarray | None = None) -> tuple[list[int], float]:
    """Channel -> candidate, candidates in anatomical order, maximising the summed scores.

    ``scores`` ``(C, K)`` scores channel c (a level, top to bottom) at candidate k (sorted top to
    bottom); channel c + 1 must take a later candidate than channel c. ``pair`` ``(K, K)``, if
    given, adds ``pair[j, k]`` when consecutive channels take candidates j and k. Needs ``K >= C``.
    Returns the chosen candidates and their total score.
    """
    n_ch, n_cand = scores.shape
    later = np.triu(np.ones((n_cand, n_cand), dtype=bool), k=1)
    step = np.where(later, 0.0 if pair is None else pair, -np.inf)
    best = np.full((n_ch, n_cand), -np.inf)
    back = np.zeros((n_ch, n_cand), dtype=int)
    best[0] = scores[0]
    for ch in range(1, n_ch):
        total = best[ch - 1][:, None] + step  # (previous candidate, this candidate)
        back[ch] = np.argmax(total, axis=0)
        best[ch] = total[back[ch], np.arange(n_cand)] + scores[ch]
    chosen = [int(np.argmax(best[-1]))]
    for ch in range(n_ch - 1, 0, -1):
        chosen.append(int(back[ch, chosen[-1]]))
    return chosen[::-1], float(best[-1, chosen[0]])


def regular_assignment(
    scores: np.ndarray, positions: np.ndarray, spacings: np.ndarray, spread: float
) -> list[int]:
    """:func:`ordered_assignment` with evenly spaced levels: the best over candidate ``spacings``.

    ``positions`` ``(K, 2)`` are the candidates in mm. For each spacing d, consecutive levels
    whose candidates lie ``g`` mm apart add the log-normal term ``-(log(g / d))^2 / (2 spread^2)``,
    so that a spurious peak between two discs, half a spacing away from both, cannot take a level.
    """
    gaps = np.linalg.norm(positions[:, None] - positions[None], axis=-1)
    log_gaps = np.log(np.maximum(gaps, 1e-3))
    results = [ordered_assignment(scores, -((log_gaps - np.log(d)) ** 2) / (2 * spread**2)) for d in spacings]
    return max(results, key=lambda r: r[1])[0]


def two_peaks(heat: np.ndarray, radius: float) -> list[tuple[int, int, float]]:
    """The two highest peaks ``(row, col, value)`` of one ``(S, S)`` map at least ``radius`` px apart."""
    first = np.unravel_index(int(np.argmax(heat)), heat.shape)
    rows, cols = np.mgrid[0 : heat.shape[0], 0 : heat.shape[1]]
    far = (rows - first[0]) ** 2 + (cols - first[1]) ** 2 >= radius**2
    rest = np.where(far, heat, -np.inf)
    second = np.unravel_index(int(np.argmax(rest)), heat.shape)
    return [
        (int(first[0]), int(first[1]), float(heat[first])),
        (int(second[0]), int(second[1]), float(heat[second])),
    ]


@dataclass(frozen=True)
class LocalizerSettings:
    """How one localiser is trained (taken from the approach's config)."""

    size: int
    epochs: int
    extra_slices: int
    batch_size: int
    lr: float
    sigma: float
    sigma_z: float
    pos_weight: float
    depth: int
    decoder: tuple[int, ...]


def train_localizer(
    annotations: Sequence[Annotation],
    series_type: str,
    settings: LocalizerSettings,
    seed: int,
    device: str,
    over_budget: Callable[[], bool],
) -> tuple[torch.nn.Module, list[float], int]:
    """Train the heatmap model of ``series_type`` on ``annotations``.

    Returns the model, the loss per epoch and the samples trained on over all epochs (its work
    is that many times one sample's step; see :func:`sample_shape`).
    """
    channels = len(CHANNELS[series_type])
    torch.manual_seed(seed)
    model = build_model(channels, settings.depth, settings.decoder).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(settings.epochs, 1))
    rng = np.random.default_rng(seed)
    axial = series_type == GROUP_SERIES["subarticular"]
    losses: list[float] = []
    samples = 0
    for epoch in range(settings.epochs):
        if over_budget():
            log.warning("lsdc-2.5d: budget reached; %s localiser stops at epoch %d", series_type, epoch)
            break
        model.train()
        total, seen = 0.0, 0
        for x, maps, mask in batches(
            annotations,
            channels,
            settings.sigma,
            settings.sigma_z,
            settings.extra_slices,
            settings.batch_size,
            rng,
            axial,
        ):
            loss = heatmap_loss(model(x.to(device)), maps.to(device), mask.to(device), settings.pos_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total, seen = total + float(loss.detach()) * len(x), seen + len(x)
        sched.step()
        losses.append(total / max(seen, 1))
        samples += seen
        log.info("lsdc-2.5d: %s localiser epoch %d loss %.4f", series_type, epoch, losses[-1])
    return model.eval(), losses, samples


def sample_shape(settings: LocalizerSettings) -> tuple[int, int, int]:
    """The shape of one training sample of a localiser: its input planes, size, size."""
    return (IN_CHANNELS, settings.size, settings.size)
