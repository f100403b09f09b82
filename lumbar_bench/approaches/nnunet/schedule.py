"""What the harness hands one nnU-Net training, and what it keeps beside its checkpoints.

:class:`Schedule` says how long a training runs. A multi-GPU training finds it in
:data:`SCHEDULE_FILE` in its fold folder, because nnU-Net's spawned trainers can be given
nothing else. Beside each checkpoint a sidecar (:data:`SIDECAR`) keeps the harness's training
seconds and best epoch. Both the driver (:mod:`.trainer`) and the trainer (:mod:`.harness_trainer`)
use this module, and it imports neither torch nor nnunetv2.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from lumbar_bench.core.files import write_text_atomic

#: Suffix of the JSON beside each checkpoint with the harness's training seconds and best epoch.
SIDECAR = ".harness.json"
#: Written into a fold folder before a multi-GPU training: the schedule its spawned trainers adopt.
SCHEDULE_FILE = "harness_schedule.json"


@dataclass(frozen=True)
class Schedule:
    """How long one nnU-Net trains: epochs x iterations, checkpoint cadence, soft deadline."""

    epochs: int = 10
    iterations: int = 10
    val_iterations: int = 2
    save_every: int = 1
    initial_lr: float = 1e-2
    #: ``sgd`` (nnU-Net's SGD, Nesterov momentum 0.99) or ``adam`` (AdamW: learns faster in short schedules).
    optimizer: str = "sgd"
    #: ``time.monotonic()`` value after which training stops at the end of the epoch; None = none.
    deadline: float | None = None


def write_schedule(fold_dir: Path, schedule: Schedule) -> None:
    """Write ``schedule`` as :data:`SCHEDULE_FILE` into ``fold_dir``."""
    (fold_dir / SCHEDULE_FILE).write_text(json.dumps(dataclasses.asdict(schedule)))


def read_schedule(fold_dir: Path) -> Schedule | None:
    """The schedule :func:`write_schedule` left in ``fold_dir``; None when there is none."""
    planned = fold_dir / SCHEDULE_FILE
    return Schedule(**json.loads(planned.read_text())) if planned.exists() else None


def write_sidecar(checkpoint: str | Path, info: dict) -> None:
    """Write ``info`` atomically as the sidecar of ``checkpoint``."""
    write_text_atomic(Path(f"{checkpoint}{SIDECAR}"), json.dumps(info))


def read_sidecar(checkpoint: str | Path) -> dict | None:
    """The sidecar of ``checkpoint``; None when there is none (checkpoints from before sidecars)."""
    side = Path(f"{checkpoint}{SIDECAR}")
    return json.loads(side.read_text()) if side.exists() else None
