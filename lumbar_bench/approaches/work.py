"""Training work in FLOPs: one step counted per network and input shape, then multiplied by steps.

A run's seconds belong to the machine and the hour; its work does not. ``FlopBook.step`` counts
the floating-point operations of one training step (forward and backward) of a network on a batch
shape with :class:`torch.utils.flop_counter.FlopCounterMode`, on a copy of the network on the
``meta`` device (no memory, no arithmetic, the same count), and keeps the count under
``cache_dir/flops/`` keyed by the network's description and the shape, so each is counted once.
An approach multiplies the counts by the steps it trained and reports them as stage FLOPs
(:meth:`ReportBuilder.flops <lumbar_bench.approaches.base.ReportBuilder.flops>`); the runner logs
them as ``runtime/<stage>_flops`` and their sum as ``runtime/train_flops``.

What is counted is what FlopCounterMode counts: matrix products and convolutions (the ops that
dominate a network's cost), forward and backward. The optimiser update, normalisation and
element-wise ops are left out, so the figure is the usual "model FLOPs" of a training step.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from lumbar_bench.core.files import write_text_atomic

log = logging.getLogger(__name__)

#: Folder of the cached counts under the run's cache directory.
FLOPS_DIR = "flops"


def _outputs_sum(out: Any) -> torch.Tensor:
    """The sum of every floating tensor in a network's output (a tensor, or a tuple/list/dict of them)."""
    if isinstance(out, torch.Tensor):
        return out.float().sum()
    items = out.values() if isinstance(out, dict) else out
    return sum((_outputs_sum(o) for o in items), torch.zeros((), device=_device_of(out)))


def _device_of(out: Any) -> torch.device:
    if isinstance(out, torch.Tensor):
        return out.device
    items = list(out.values() if isinstance(out, dict) else out)
    return _device_of(items[0]) if items else torch.device("cpu")


def count_step(
    model: nn.Module, shapes: Sequence[Sequence[int]], forward: Callable[..., Any] | None = None
) -> int:
    """FLOPs of one training step (forward and backward) of ``model`` on zero inputs of ``shapes``.

    ``forward(model, *inputs)`` runs the network (default: ``model(*inputs)``). The count runs on
    a ``meta`` copy of the model, and falls back to a CPU copy where an op has no meta kernel;
    neither the model nor the CPU random state is touched.
    """
    run = forward or (lambda m, *xs: m(*xs))
    for device in ("meta", "cpu"):
        probe = copy.deepcopy(model).to(device).eval()  # the same products; no batch statistics needed
        inputs = [torch.zeros(tuple(s), device=device) for s in shapes]
        try:  # the random state is put back, so counting never changes what training draws
            with torch.random.fork_rng(devices=[]), FlopCounterMode(display=False) as counter:
                _outputs_sum(run(probe, *inputs)).backward()
        except (NotImplementedError, RuntimeError) as err:
            if device == "cpu":
                raise
            log.debug("flop count on meta failed (%s); counting on a CPU copy", err)
            continue
        return int(counter.get_total_flops())
    raise AssertionError("unreachable")


def network_key(name: str, model: nn.Module, shapes: Sequence[Sequence[int]]) -> str:
    """A key for ``name``'s network and input shapes: its parameter shapes and module layout hashed."""
    layout = [name, [list(s) for s in shapes], repr(model), [list(p.shape) for p in model.parameters()]]
    return f"{name}-{hashlib.sha256(json.dumps(layout).encode()).hexdigest()[:16]}"


class FlopBook:
    """Per-step FLOPs of networks, counted once and kept in memory and under ``cache_dir/flops/``.

    ``cache_dir`` None keeps the counts in memory only.
    """

    def __init__(self, cache_dir: Path | None) -> None:
        self._dir = Path(cache_dir) / FLOPS_DIR if cache_dir is not None else None
        self._known: dict[str, int] = {}

    def step(
        self,
        name: str,
        model: nn.Module,
        shapes: Sequence[Sequence[int]],
        forward: Callable[..., Any] | None = None,
    ) -> int:
        """FLOPs of one training step of ``model`` (called ``name``) on inputs of ``shapes``."""
        key = network_key(name, model, shapes)
        if key in self._known:
            return self._known[key]
        path = self._dir / f"{key}.json" if self._dir is not None else None
        if path is not None and path.is_file():
            flops = int(json.loads(path.read_text())["flops"])
        else:
            flops = count_step(model, shapes, forward)
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                write_text_atomic(
                    path, json.dumps({"name": name, "shapes": [list(s) for s in shapes], "flops": flops})
                )
        self._known[key] = flops
        return flops

    def epoch(
        self,
        name: str,
        model: nn.Module,
        samples: int,
        batch_size: int,
        sample_shape: Sequence[int],
        forward: Callable[..., Any] | None = None,
        min_batch: int = 1,
    ) -> int:
        """FLOPs of one epoch over ``samples`` in batches of ``batch_size``.

        A last batch smaller than ``min_batch`` is skipped, as the training loops skip it.
        """
        full, rest = divmod(samples, batch_size)
        flops = full * self.step(name, model, [(batch_size, *sample_shape)], forward) if full else 0
        if rest >= max(min_batch, 1):
            flops += self.step(name, model, [(rest, *sample_shape)], forward)
        return flops


__all__ = ["FLOPS_DIR", "FlopBook", "count_step", "network_key"]
