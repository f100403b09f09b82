"""Seeds: one call seeds Python, numpy and torch; a derived seed frees a step from the steps before it.

A step that a cache may skip (the vertebra U-Net, nnU-Net planning) consumes random numbers
when it runs and none when it is a cache hit. Every training that follows such a step is
therefore seeded from the run's seed and its own identity (:func:`derived_seed`), so a run
scores the same with a cold or a warm cache.
"""

from __future__ import annotations

import hashlib
import random
import sys

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
