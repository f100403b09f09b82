"""Compute budgets: a soft deadline for training loops and a hard-limit watchdog.

The hard limit follows AMLB's rule: the smaller of twice the budget and the budget
plus 60 minutes. A run that is still going then is marked FAILED with reason
``budget`` and the process exits.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

BUDGET_EXIT_CODE = 124


@dataclass(frozen=True)
class Budget:
    """A compute budget in minutes on a device kind (``cpu`` or ``gpu``)."""

    minutes: float
    device: str = "cpu"

    @property
    def soft_seconds(self) -> float:
        """Seconds after which training stops and keeps its best checkpoint."""
        return self.minutes * 60.0

    @property
    def hard_seconds(self) -> float:
        """Seconds after which the watchdog ends the run: min(2 x budget, budget + 60 min)."""
        return min(2.0 * self.soft_seconds, self.soft_seconds + 3600.0)

    def label(self) -> str:
        """Human label such as ``3 min cpu``."""
        return f"{self.minutes:g} min {self.device}"


class Watchdog:
    """Calls ``on_expire`` and ends the process if not cancelled within ``seconds``."""

    def __init__(
        self, seconds: float, on_expire: Callable[[], None], exit_fn: Callable[[int], None] = os._exit
    ) -> None:
        self.seconds = seconds
        self._on_expire = on_expire
        self._exit = exit_fn
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True
        self.fired = threading.Event()

    def _fire(self) -> None:
        log.error("hard compute budget of %.0f s exceeded; stopping the run", self.seconds)
        self.fired.set()
        try:
            self._on_expire()
        finally:
            self._exit(BUDGET_EXIT_CODE)

    def __enter__(self) -> Watchdog:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()
