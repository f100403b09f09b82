"""Stage 5: grade the crops in 2.5D.

A torchvision CNN (random init, or a local weights file) encodes each slice of a crop; the
slices are pooled by attention; a head per condition group (spinal, foraminal, subarticular)
predicts the three severities, with the level as an extra input. The loss is cross-entropy
weighted 1/2/4 like the official score plus its any-severe-spinal term: per study, the largest
Severe probability over the spinal levels against "any level Severe", weighted 1/4 like the
score. Batches are whole studies, so that term sees all five spinal levels of each.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from lumbar_bench.constants import LABEL_COLUMNS, LEVELS, SCORE_GROUPS, SEVERITY_WEIGHTS, split_label
from lumbar_bench.core import distributed
from lumbar_bench.core.distributed import DistInfo
from lumbar_bench.core.errors import DataError
from lumbar_bench.core.files import torch_save_atomic

log = logging.getLogger(__name__)

GROUPS: tuple[str, ...] = tuple(SCORE_GROUPS)
#: Per label slot (``LABEL_COLUMNS`` order): its group index and level index.
SLOT_GROUP = np.array(
    [next(i for i, g in enumerate(GROUPS) if split_label(lab)[0] in SCORE_GROUPS[g]) for lab in LABEL_COLUMNS]
)
SLOT_LEVEL = np.array([LEVELS.index(split_label(lab)[1]) for lab in LABEL_COLUMNS])
SPINAL_SLOTS = np.flatnonzero(SLOT_GROUP == 0)
#: Batch-norm momentum of every encoder (torchvision's mobilenets use 0.01).
BN_MOMENTUM = 0.1
#: The official score's sample weights of the any-severe-spinal row: 1 without, 4 with a Severe level.
ANY_SEVERE_WEIGHTS = (1.0, 4.0)


def _feature_extractor(encoder: str, weights: str) -> tuple[nn.Module, int]:
    """A torchvision classifier with its last layer removed, and its feature width."""
    net = torchvision.models.get_model(encoder, weights=None)
    if weights:
        path = Path(weights)
        if not path.is_file():
            raise DataError(f"{path}: weights file not found")
        state = torch.load(path, map_location="cpu", weights_only=True)
        missing, unexpected = net.load_state_dict(state.get("state_dict", state), strict=False)
        log.info(
            "lsdc-2.5d: encoder weights %s (missing %d, unexpected %d)", path, len(missing), len(unexpected)
        )
    for module in net.modules():  # mobilenet's 0.01 leaves eval-mode statistics far from the
        if isinstance(module, nn.modules.batchnorm._BatchNorm):  # data after a few hundred steps
            module.momentum = BN_MOMENTUM
    for head in ("fc", "classifier", "head", "heads"):
        if hasattr(net, head):
            setattr(net, head, nn.Identity())
            break
    with torch.no_grad():
        width = int(net.eval()(torch.zeros(1, 3, 64, 64)).shape[-1])
    return net, width


class Grader(nn.Module):
    """Per-slice encoder, attention pooling over slices, one 3-way head per condition group."""

    def __init__(self, encoder: str, weights: str = "", hidden: int = 128, dropout: float = 0.2) -> None:
        super().__init__()
        self.encoder, width = _feature_extractor(encoder, weights)
        self.attention = nn.Sequential(nn.Linear(width, 64), nn.Tanh(), nn.Linear(64, 1))
        self.head = nn.Sequential(
            nn.Linear(width + len(LEVELS), hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, 3 * len(GROUPS)),
        )

    def forward(self, crops: torch.Tensor, group: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, 3)`` of ``crops`` ``(N, Z, S, S)`` in [0, 1], their groups and levels ``(N,)``."""
        n, z, h, w = crops.shape
        x = ((crops.reshape(n * z, 1, h, w) - 0.5) / 0.25).expand(-1, 3, -1, -1)
        feats = self.encoder(x).reshape(n, z, -1)
        weights = torch.softmax(self.attention(feats), dim=1)
        pooled = (weights * feats).sum(dim=1)
        out = self.head(torch.cat([pooled, F.one_hot(level, len(LEVELS)).to(pooled)], dim=1))
        return out.reshape(n, len(GROUPS), 3)[torch.arange(n), group]


@dataclass
class CropSet:
    """Crops of whole studies, one slot per label.

    ``crops`` ``(V, n, 25, Z, S, S)`` float16 holds V variants of each crop (jittered copies),
    ``valid`` ``(n, 25)`` says which slots have a crop, ``labels`` ``(n, 25)`` their codes (-1 blank).
    """

    crops: np.ndarray
    valid: np.ndarray
    labels: np.ndarray

    def batch(self, studies: np.ndarray, variants: np.ndarray) -> tuple[torch.Tensor, ...]:
        """``(crops, group, level, labels, study_row)`` of the valid crops of ``studies``."""
        picked = self.crops[variants[:, None], studies[:, None], np.arange(len(LABEL_COLUMNS))[None]]
        valid = self.valid[studies]
        rows, slots = np.nonzero(valid)
        return (
            torch.from_numpy(picked[rows, slots].astype(np.float32)),
            torch.from_numpy(SLOT_GROUP[slots]),
            torch.from_numpy(SLOT_LEVEL[slots]),
            torch.from_numpy(self.labels[studies][rows, slots].astype(np.int64)),
            torch.from_numpy(rows * len(LABEL_COLUMNS) + slots),
        )


def grading_loss(
    logits: torch.Tensor, labels: torch.Tensor, flat_slot: torch.Tensor, n_studies: int, any_weight: float
) -> torch.Tensor:
    """Weighted cross-entropy plus ``any_weight`` times the any-severe-spinal term."""
    weights = torch.tensor(SEVERITY_WEIGHTS, dtype=logits.dtype, device=logits.device)
    loss = F.cross_entropy(logits, labels, weight=weights, ignore_index=-1)
    if any_weight <= 0:
        return loss
    slots = len(LABEL_COLUMNS)
    severe = torch.zeros(n_studies * slots, dtype=logits.dtype, device=logits.device)
    severe = severe.index_put((flat_slot,), torch.softmax(logits, -1)[:, 2]).reshape(n_studies, slots)
    codes = torch.full((n_studies * slots,), -1, dtype=torch.long, device=logits.device)
    codes = codes.index_put((flat_slot,), labels).reshape(n_studies, slots)
    spinal_idx = torch.as_tensor(SPINAL_SLOTS, device=logits.device)
    spinal, spinal_codes = severe[:, spinal_idx], codes[:, spinal_idx]
    known = (spinal_codes >= 0).any(dim=1)
    if not bool(known.any()):
        return loss
    p_any = spinal.max(dim=1).values.clamp(1e-6, 1 - 1e-6)[known]
    truth = (spinal_codes == 2).any(dim=1)[known].to(logits.dtype)
    w = torch.where(truth > 0, ANY_SEVERE_WEIGHTS[1], ANY_SEVERE_WEIGHTS[0])
    bce = F.binary_cross_entropy(p_any, truth, weight=w, reduction="sum") / w.sum()
    return loss + any_weight * bce


def forward_on_crops(model: nn.Module, crops: torch.Tensor) -> torch.Tensor:
    """``model(crops, group, level)`` with every crop in group and level 0: for counting work."""
    index = torch.zeros(crops.shape[0], dtype=torch.long, device=crops.device)
    return model(crops, index, index)


def train_epoch(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    data: CropSet,
    studies_per_batch: int,
    any_weight: float,
    rng: np.random.Generator,
    device: str,
    ema: AveragedModel | None = None,
    dist: DistInfo = DistInfo(),  # noqa: B008 (frozen, immutable)
) -> float:
    """One epoch over ``data`` in shuffled batches of whole studies, a random variant per crop.

    ``ema``, if given, is updated after every step. Under torchrun (``dist``) ``model`` is the
    DDP-wrapped grader; every rank draws the same order and variants and trains on its shard of
    each batch's studies (see :meth:`~lumbar_bench.core.distributed.DistInfo.shard`).
    """
    model.train()
    order = rng.permutation(data.valid.shape[0])
    total, seen = 0.0, 0
    for start in range(0, len(order), studies_per_batch):
        batch = order[start : start + studies_per_batch]
        variants = rng.integers(0, data.crops.shape[0], size=len(batch))
        if len(batch) < dist.world_size or not data.valid[batch].any():  # every rank skips alike
            continue
        studies = dist.shard(batch)
        crops, group, level, labels, flat = (t.to(device) for t in data.batch(studies, dist.shard(variants)))
        loss = _step_loss(model, (crops, group, level, labels, flat), len(studies), any_weight)
        opt.zero_grad(set_to_none=True)
        if dist.enabled:
            (loss * distributed.shard_weight(dist, len(studies), len(batch))).backward()
        else:
            loss.backward()
        opt.step()
        if ema is not None:
            ema.update_parameters(getattr(model, "module", model))
        total, seen = total + float(loss.detach()) * len(studies), seen + len(studies)
    total, seen = distributed.sum_over_ranks(dist, [total, seen])
    return total / max(seen, 1)


def _step_loss(
    model: nn.Module, batch: tuple[torch.Tensor, ...], n_studies: int, any_weight: float
) -> torch.Tensor:
    """:func:`grading_loss` of one batch; zero (through the model, so DDP still averages) without crops.

    Only a DDP rank whose shard has no crop at all gets here with an empty batch: it must still
    run the model once for the gradient exchange of the step.
    """
    crops, group, level, labels, flat = batch
    if len(crops):
        return grading_loss(model(crops, group, level), labels, flat, n_studies, any_weight)
    blank = torch.zeros((1, *crops.shape[1:]), dtype=crops.dtype, device=crops.device)
    zero = torch.zeros(1, dtype=torch.long, device=crops.device)
    return model(blank, zero, zero).sum() * 0.0


@torch.no_grad()
def logits_of(model: nn.Module, data: CropSet, device: str, variant: int = 0) -> np.ndarray:
    """Logits ``(n, 25, 3)`` of every study's crops (zeros where a crop is missing)."""
    model.eval()
    n = data.valid.shape[0]
    out = np.zeros((n, len(LABEL_COLUMNS), 3), dtype=np.float64)
    for start in range(0, n, 8):
        studies = np.arange(start, min(start + 8, n))
        crops, group, level, _, flat = data.batch(studies, np.full(len(studies), variant))
        if len(crops):
            values = model(crops.to(device), group.to(device), level.to(device)).double().cpu().numpy()
            out.reshape(-1, 3)[start * len(LABEL_COLUMNS) + flat.numpy()] = values
    return out


def mean_logits(model: nn.Module, data: CropSet, device: str) -> np.ndarray:
    """Logits ``(n, 25, 3)`` averaged over every variant of each crop (test-time augmentation)."""
    return np.mean([logits_of(model, data, device, v) for v in range(data.crops.shape[0])], axis=0)


@dataclass(frozen=True)
class Schedule:
    """How the grader trains."""

    epochs: int
    lr: float
    studies_per_batch: int
    any_weight: float
    patience: int
    #: Decay of the exponential moving average of the weights that is validated and kept; 0: off.
    ema: float = 0.0


def _fresh_state() -> dict:
    return {"epoch": 0, "best": float("inf"), "best_epoch": -1, "best_state": None, "temperature": 1.0}


def train_grader(
    model: Grader,
    train: CropSet,
    schedule: Schedule,
    validate: Callable[[nn.Module], tuple[float, float]],
    checkpoint: Path,
    seed: int,
    device: str,
    hooks: EpochHooks,
    key: str = "",
    dist: DistInfo = DistInfo(),  # noqa: B008 (frozen, immutable)
) -> dict:
    """Train, validating each epoch with ``validate(model)`` (score, temperature); resumable.

    With ``schedule.ema``, the weights validated and kept are an exponential moving average of
    the trained ones (batch-norm statistics included). Training stops after ``schedule.patience``
    epochs without a better score.

    ``key`` names what the training depends on (config, localisers); a checkpoint written under
    another key is ignored. Under torchrun (``dist``) every rank trains the DDP-wrapped grader on
    its shard of each batch; rank 0 alone validates, checkpoints and decides when all ranks stop.

    Returns the training state: ``best`` score, ``best_epoch``, ``best_state`` (its weights),
    ``temperature``, and ``final_state`` (the weights at the end). After every epoch the whole
    state (optimiser and random generator included) is written atomically to ``checkpoint``.
    """
    opt = torch.optim.AdamW(model.parameters(), lr=schedule.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(schedule.epochs, 1))
    rng = np.random.default_rng(seed)
    ema = _ema(model, schedule.ema)
    kept = model if ema is None else ema.module
    parts = {"model": model, "opt": opt, "sched": sched, **({} if ema is None else {"ema": ema})}
    state = _resume(checkpoint, key, parts, rng) or _fresh_state()
    distributed.barrier(dist)  # every rank has read the checkpoint before rank 0 writes the next
    trained = distributed.wrap(model, dist, device)
    if state["epoch"]:
        hooks.resumed(state["epoch"] >= schedule.epochs)
    for epoch in range(state["epoch"], schedule.epochs):
        if distributed.agree(dist, hooks.over_budget()):
            log.warning("lsdc-2.5d: budget reached before grader epoch %d; keeping the model so far", epoch)
            break
        loss = train_epoch(
            trained, opt, train, schedule.studies_per_batch, schedule.any_weight, rng, device, ema, dist
        )
        sched.step()
        stop = False
        if dist.is_main:
            score, temperature = validate(kept)
            hooks.epoch(epoch, loss, score)
            if score < state["best"]:
                state.update(best=score, best_epoch=epoch, best_state=_weights(kept), temperature=temperature)
            state["epoch"] = epoch + 1
            saved = {name: part.state_dict() for name, part in parts.items()}
            torch_save_atomic({**saved, "rng": rng.bit_generator.state, "key": key, **state}, checkpoint)
            hooks.checkpointed()
            stop = epoch - state["best_epoch"] >= schedule.patience
        if distributed.agree(dist, stop):
            log.info("lsdc-2.5d: grader stops early at epoch %d (best %d)", epoch, state["best_epoch"])
            break
    return {**state, "final_state": _weights(kept)}


def _resume(checkpoint: Path, key: str, parts: dict, rng: np.random.Generator) -> dict | None:
    """The training state in ``checkpoint``, with ``parts`` and ``rng`` restored; None if none for ``key``."""
    if not checkpoint.exists():
        return None
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    if saved.get("key") != key:
        log.warning("lsdc-2.5d: %s was written for other inputs; training afresh", checkpoint)
        return None
    for name, part in parts.items():
        part.load_state_dict(saved[name])
    rng.bit_generator.state = saved["rng"]
    state = {k: saved[k] for k in _fresh_state()}
    log.info("lsdc-2.5d: grader resumes at epoch %d from %s", state["epoch"], checkpoint)
    return state


def _weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _ema(model: nn.Module, decay: float) -> AveragedModel | None:
    if decay <= 0:
        return None
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


class EpochHooks:
    """What :func:`train_grader` reports to and asks of the run (the approach fills it from its context)."""

    def __init__(
        self,
        epoch: Callable[[int, float, float], None],
        over_budget: Callable[[], bool],
        checkpointed: Callable[[], None],
        resumed: Callable[[bool], None],
    ) -> None:
        self.epoch, self.over_budget, self.checkpointed, self.resumed = (
            epoch,
            over_budget,
            checkpointed,
            resumed,
        )
