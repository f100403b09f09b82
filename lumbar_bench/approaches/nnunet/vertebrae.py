"""Stage 1: an smp U-Net (ResNet encoder) learns spine anatomy from SPIDER-layout data.

SPIDER mask values collapse to four classes: background, vertebra (1-25 and the
partially visible 101-125), intervertebral disc (201-225) and spinal canal (100). The
model works on square slices of ``size`` pixels and is applied to RSNA sagittal slices.
Its validation Dice per structure is kept next to the weights.

torch (and smp) are imported inside the functions that use them. The approach imports this
module to build its configs; torch is first imported once a stage runs, as the run's
``seed_everything`` (which seeds torch only when it is imported) expects.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lumbar_bench.core.progress import progress_bar
from lumbar_bench.data.spider import iter_spider
from lumbar_bench.metrics.dice import dice_per_class

if TYPE_CHECKING:  # torch stays out of this module's import (see the module docstring)
    from torch import nn

log = logging.getLogger(__name__)

ANATOMY: tuple[str, ...] = ("background", "vertebra", "disc", "canal")
VERTEBRA, DISC, CANAL = 1, 2, 3


@dataclass(frozen=True)
class VertebraConfig:
    """U-Net encoder, input size and schedule of the vertebra model."""

    size: int = 128
    encoder: str = "resnet34"
    encoder_depth: int = 5
    decoder_channels: tuple[int, ...] = (256, 128, 64, 32, 16)
    epochs: int = 30
    batch_size: int = 16
    lr: float = 1e-3
    val_fraction: float = 0.2
    #: Keep at most this many slices per SPIDER case (the central ones); 0 = all.
    slices_per_case: int = 0
    weights: str = ""


def spider_classes(mask: np.ndarray) -> np.ndarray:
    """SPIDER label values -> ``ANATOMY`` class indices (uint8)."""
    out = np.zeros(mask.shape, dtype=np.uint8)
    out[((mask >= 1) & (mask <= 25)) | ((mask >= 101) & (mask <= 125))] = VERTEBRA
    out[(mask >= 201) & (mask <= 225)] = DISC
    out[mask == 100] = CANAL
    return out


def resize(stack: np.ndarray, size: int, nearest: bool = False) -> np.ndarray:
    """Resize ``(n, H, W)`` to ``(n, size, size)`` (area for images, nearest for labels)."""
    # lazy: importing this module must not import torch (see the module docstring)
    import torch
    import torch.nn.functional as F

    if stack.shape[-2:] == (size, size):
        return stack.copy()
    t = torch.from_numpy(np.ascontiguousarray(stack, dtype=np.float32))[:, None]
    mode = "nearest" if nearest else "area"
    out = F.interpolate(t, size=(size, size), mode=mode)[:, 0].numpy()
    return out.astype(stack.dtype) if nearest else out


def _normalise(image: np.ndarray) -> np.ndarray:
    """Scale a slice stack to [0, 1] with its 0.5/99.5 percentiles."""
    lo, hi = np.percentile(image, (0.5, 99.5))
    return np.clip((image - lo) / max(hi - lo, 1e-6), 0, 1).astype(np.float32)


def spider_digest(root: Path) -> list[tuple[str, int]]:
    """Names and sizes of the SPIDER files: the cache key of what the model learnt from."""
    return sorted((str(p.relative_to(root)), p.stat().st_size) for p in Path(root).rglob("*.mha"))


def load_spider(root: Path, cfg: VertebraConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Slices ``(N, S, S)`` in [0, 1], class maps ``(N, S, S)`` and the case index of each slice."""
    xs, ys, case_idx = [], [], []
    for i, case in enumerate(iter_spider(root)):
        n = case.image.shape[0]
        keep = np.arange(n)
        if cfg.slices_per_case and n > cfg.slices_per_case:
            mid, half = n // 2, cfg.slices_per_case // 2
            keep = keep[max(0, mid - half) : max(0, mid - half) + cfg.slices_per_case]
        xs.append(resize(_normalise(case.image[keep]), cfg.size))
        ys.append(resize(spider_classes(case.mask[keep]), cfg.size, nearest=True))
        case_idx.append(np.full(len(keep), i))
    if not xs:
        raise FileNotFoundError(f"{root}: no SPIDER cases")
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(case_idx)


def build_unet(cfg: VertebraConfig) -> nn.Module:
    """Smp U-Net with a random-init ResNet encoder, or ``cfg.weights`` loaded with weights_only."""
    # lazy: importing this module must not import torch (see the module docstring)
    import segmentation_models_pytorch as smp
    import torch

    model = smp.Unet(
        cfg.encoder,
        encoder_depth=cfg.encoder_depth,
        encoder_weights=None,
        in_channels=1,
        classes=len(ANATOMY),
        decoder_channels=tuple(cfg.decoder_channels),
    )
    if cfg.weights:
        state = torch.load(cfg.weights, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state)
        missing, unexpected = model.encoder.load_state_dict(state, strict=False)
        log.info(
            "vertebrae: encoder weights %s (missing %d, unexpected %d)",
            cfg.weights,
            len(missing),
            len(unexpected),
        )
    return model


def train_vertebra_model(
    spider_root: Path,
    cfg: VertebraConfig,
    out: Path,
    device: str = "cpu",
    seed: int = 0,
    progress: bool = False,
    deadline: float | None = None,
) -> dict[str, float]:
    """Train on ``spider_root``; write ``model.pt``, ``metrics.json`` and ``work.json`` into ``out``.

    Returns the metrics. ``work.json`` holds the training FLOPs (``{"flops": ...}``; see
    :mod:`lumbar_bench.approaches.work`).
    """
    # lazy: importing this module must not import torch (see the module docstring)
    import torch
    import torch.nn.functional as F

    from lumbar_bench.approaches.work import FlopBook  # lazy: it imports torch

    torch.manual_seed(seed)
    x, y, case_idx = load_spider(spider_root, cfg)
    n_cases = int(case_idx.max()) + 1
    rng = np.random.default_rng(seed)
    val_cases = set(rng.permutation(n_cases)[: max(1, round(n_cases * cfg.val_fraction))].tolist())
    is_val = np.isin(case_idx, list(val_cases))
    xt, yt = torch.from_numpy(x[~is_val])[:, None], torch.from_numpy(y[~is_val].astype(np.int64))
    model = build_unet(cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(cfg.epochs, 1))
    gen = torch.Generator().manual_seed(seed)
    t0, epochs_done = time.monotonic(), 0
    for epoch in progress_bar(range(cfg.epochs), "vertebrae: U-Net", progress):
        model.train()
        order = torch.randperm(len(xt), generator=gen)
        for i in range(0, len(xt), cfg.batch_size):
            idx = order[i : i + cfg.batch_size]
            xb, yb = xt[idx].to(device), yt[idx].to(device)
            if torch.rand(1, generator=gen).item() < 0.5:  # intensity jitter; no flips (anatomy is oriented)
                xb = xb * (0.8 + 0.4 * torch.rand(len(xb), 1, 1, 1, generator=gen).to(device))
            logits = model(xb)
            probs = logits.softmax(1)
            onehot = F.one_hot(yb, len(ANATOMY)).permute(0, 3, 1, 2).float()
            inter, denom = (probs * onehot).sum((0, 2, 3)), (probs + onehot).sum((0, 2, 3))
            loss = F.cross_entropy(logits, yb) + 1 - ((2 * inter + 1) / (denom + 1))[1:].mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sched.step()
        epochs_done += 1
        if deadline is not None and time.monotonic() > deadline:
            log.warning("vertebrae: soft budget reached after epoch %d of %d", epoch + 1, cfg.epochs)
            break
    pred = segment(model, x[is_val], device)
    dice = dice_per_class(pred, y[is_val], len(ANATOMY))
    metrics = {f"vertebrae/val_dice/{name}": float(d) for name, d in zip(ANATOMY[1:], dice[1:], strict=True)}
    metrics["vertebrae/train_s"] = time.monotonic() - t0
    epoch_flops = FlopBook(None).epoch("vertebrae", model, len(xt), cfg.batch_size, tuple(xt.shape[1:]))
    _write_outputs(out, model, metrics, epochs_done * epoch_flops)
    return metrics


def _write_outputs(out: Path, model: nn.Module, metrics: dict[str, float], flops: int) -> None:
    """``model.pt``, ``metrics.json`` and ``work.json`` of a trained vertebra U-Net."""
    import torch  # lazy: importing this module must not import torch (see the module docstring)

    torch.save(model.state_dict(), out / "model.pt")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    (out / "work.json").write_text(json.dumps({"flops": flops}))
    log.info("vertebrae: validation Dice %s", {k.rsplit("/", 1)[1]: round(v, 3) for k, v in metrics.items()})


def segment(model: nn.Module, pixels: np.ndarray, device: str = "cpu", batch: int = 32) -> np.ndarray:
    """Argmax ``ANATOMY`` classes ``(n, S, S)`` of slices already at the model's size."""
    import torch  # lazy: importing this module must not import torch (see the module docstring)

    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(pixels), batch):
            xb = torch.from_numpy(np.ascontiguousarray(pixels[i : i + batch], dtype=np.float32))[:, None]
            out.append(model.to(device)(xb.to(device)).argmax(1).cpu().numpy().astype(np.uint8))
    return np.concatenate(out) if out else np.zeros((0,) + pixels.shape[1:], np.uint8)


def load_vertebra_model(stage_dir: Path, cfg: VertebraConfig, device: str = "cpu") -> nn.Module:
    """Load the trained U-Net of a ``vertebrae`` stage folder (``torch.load(weights_only=True)``)."""
    import torch  # lazy: importing this module must not import torch (see the module docstring)

    model = build_unet(VertebraConfig(**{**cfg.__dict__, "weights": ""}))
    model.load_state_dict(torch.load(Path(stage_dir) / "model.pt", map_location="cpu", weights_only=True))
    return model.to(device).eval()
