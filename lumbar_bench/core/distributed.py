"""Multi-process training under ``torchrun``: who this process is, and the few collectives approaches use.

``torchrun --nproc_per_node N -m lumbar_bench.cli run ...`` starts N copies of the run and sets
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` in each one's
environment. :func:`from_env` is the one place in the package that reads them; everything else
gets a :class:`DistInfo`. With a world size of 1 (no torchrun, or one process) every helper here
is a no-op, so a plain run takes exactly the code path it always took.

Rank 0 is the main process: only it talks to MLflow and writes artifacts, checkpoints and stage
caches. The others train on their shard of every batch and wait at a barrier where rank 0
writes something they then read (:func:`main_first`). torch is imported inside the helpers.
"""

from __future__ import annotations

import contextlib
import datetime
import gc
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in a torchrun job; the default is a single process."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    #: ``gloo`` on CPU, ``nccl`` on CUDA (see :func:`backend_for`).
    backend: str = "gloo"

    @property
    def enabled(self) -> bool:
        """True when more than one process trains together."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on rank 0, the process that tracks, checkpoints and writes caches."""
        return self.rank == 0

    def shard(self, items: Sequence[T]) -> Sequence[T]:
        """The share of one global batch this rank trains on: every ``world_size``-th item from ``rank`` on.

        Striding each global batch is what a seeded ``DistributedSampler`` with ``set_epoch`` and a
        per-rank batch of ``batch / world_size`` yields when the batch divides by the world size:
        the ranks' batches of one step together are the 1-process batch of that step.
        """
        return items[self.rank :: self.world_size] if self.enabled else items


def backend_for(device: str) -> str:
    """``nccl`` for a CUDA device, ``gloo`` otherwise."""
    return "nccl" if device.startswith("cuda") else "gloo"


def from_env(device: str = "cpu", env: Mapping[str, str] | None = None) -> DistInfo:
    """The :class:`DistInfo` torchrun's variables describe (``env`` defaults to ``os.environ``)."""
    env = os.environ if env is None else env
    world = int(env.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return DistInfo(backend=backend_for(device))
    return DistInfo(
        rank=int(env["RANK"]),
        world_size=world,
        local_rank=int(env.get("LOCAL_RANK", env["RANK"])),
        backend=backend_for(device),
    )


@contextlib.contextmanager
def process_group(info: DistInfo, timeout_s: float) -> Iterator[None]:
    """Join torchrun's process group for the block (nothing for one process); leave it after.

    On CUDA each process uses the GPU of its local rank. ``timeout_s`` bounds every collective,
    barriers included (rank 0 may build a stage the others wait for).
    """
    if not info.enabled:
        yield
        return
    import torch  # lazy: one process (and `list`, `--help`) never imports torch here
    import torch.distributed as dist

    if info.backend == "nccl":
        torch.cuda.set_device(info.local_rank)
    dist.init_process_group(info.backend, timeout=datetime.timedelta(seconds=max(timeout_s, 60.0)))
    log.info("rank %d of %d joined (%s)", info.rank, info.world_size, info.backend)
    try:
        yield
        dist.barrier()  # no rank tears its connections down while another is still in a collective
    finally:
        # A DDP model left in a reference cycle keeps the group (and gloo's work objects) alive
        # into interpreter shutdown, where freeing them can abort the process: free them first.
        gc.collect()
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    """Wait until every rank gets here (nothing for one process)."""
    if info.enabled:
        # lazy: one process (and `list`, `--help`) never imports torch here
        import torch.distributed as dist

        dist.barrier()


@contextlib.contextmanager
def main_first(info: DistInfo) -> Iterator[None]:
    """Rank 0 runs the block first (building a cache); the others run it after, reading what it wrote."""
    if not info.is_main:
        barrier(info)
    yield
    if info.is_main:
        barrier(info)


def agree(info: DistInfo, flag: bool) -> bool:
    """Rank 0's ``flag`` on every rank (early stopping, the budget): all ranks leave a loop together."""
    if not info.enabled:
        return flag
    return bool(broadcast_object(info, flag))


def broadcast_object(info: DistInfo, obj: Any) -> Any:
    """Rank 0's ``obj`` (picklable) on every rank."""
    if not info.enabled:
        return obj
    import torch.distributed as dist  # lazy: one process (and `list`, `--help`) never imports torch here

    box = [obj if info.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def sum_over_ranks(info: DistInfo, values: Sequence[float]) -> list[float]:
    """``values`` summed element-wise over the ranks (e.g. a loss total and a sample count)."""
    if not info.enabled:
        return list(values)
    import torch  # lazy: one process (and `list`, `--help`) never imports torch here
    import torch.distributed as dist

    tensor = torch.tensor(list(values), dtype=torch.float64)
    if info.backend == "nccl":
        tensor = tensor.cuda()
    dist.all_reduce(tensor)
    return tensor.cpu().tolist()


def wrap(model: torch.nn.Module, info: DistInfo, device: str) -> torch.nn.Module:
    """``model`` in :class:`~torch.nn.parallel.DistributedDataParallel` (gradients averaged), or as is."""
    if not info.enabled:
        return model
    # lazy: one process (and `list`, `--help`) never imports torch here
    from torch.nn.parallel import DistributedDataParallel

    ids = [info.local_rank] if device.startswith("cuda") else None
    return DistributedDataParallel(model, device_ids=ids)


def shard_weight(info: DistInfo, n_shard: int, n_batch: int) -> float:
    """Factor on a rank's mean loss so DDP's average over ranks is the mean over the global batch.

    A rank holding ``n_shard`` of ``n_batch`` samples weighs ``n_shard * world / n_batch``
    (1 when the batch divides evenly; e.g. 5/4.5 and 4/4.5 for a last batch of 9 on 2 ranks).
    """
    return n_shard * info.world_size / n_batch if info.enabled and n_batch else 1.0
