"""Seeds and threads: what makes a run's numbers repeatable.

One call seeds Python, numpy and torch; a derived seed frees a step from the steps before it;
:func:`torch_threads` fixes the thread count (float sums depend on it).

A step that a cache may skip (the vertebra U-Net, nnU-Net planning) consumes random numbers
when it runs and none when it is a cache hit. Every training that follows such a step is
therefore seeded from the run's seed and its own identity (:func:`derived_seed`), so a run
scores the same with a cold or a warm cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
import sys
from collections.abc import Iterator

import numpy as np


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and, when it has been imported, torch."""
    random.seed(seed)
    np.random.seed(seed)
    if "torch" in sys.modules:
        sys.modules["torch"].manual_seed(seed)


def derived_seed(seed: int, *keys: int | str) -> int:
    """A 31-bit seed for one step of a run, from the run's ``seed`` and the step's ``keys`` (stable)."""
    digest = hashlib.sha256(repr((seed, *keys)).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Use ``n`` torch threads inside the block (0 = leave as is); restores the previous count.

    On a small, shared CPU one thread avoids oversubscription, which slows small
    networks (instance norm especially) by up to ten times.
    """
    import torch  # lazy: seeding a torch-free run (the prior; `list`, `--help`) never imports torch

    before = torch.get_num_threads()
    if n > 0:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
