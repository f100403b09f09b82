"""Peak resident memory of this process and all its children, sampled while a block runs."""

from __future__ import annotations

import threading
from types import TracebackType

import psutil


class PeakRSS:
    """``with PeakRSS() as peak: ...`` then ``peak.gb``: the largest summed RSS of the process tree.

    Samples every ``interval`` seconds in a thread; worker processes count while they live.
    Entering again keeps the peak of all blocks.
    """

    def __init__(self, interval: float = 0.02) -> None:
        self.interval = interval
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def gb(self) -> float:
        """The peak in GB (10^9 bytes)."""
        return self.peak_bytes / 1e9

    def _sample(self) -> None:
        me = psutil.Process()
        while True:
            total = 0
            for proc in (me, *me.children(recursive=True)):
                try:
                    total += proc.memory_info().rss
                except psutil.Error:  # a worker that just ended
                    pass
            self.peak_bytes = max(self.peak_bytes, total)
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> PeakRSS:
        self._stop.clear()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
