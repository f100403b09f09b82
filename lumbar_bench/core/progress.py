"""Progress bars for long work (rich), switched off with ``--no-progress`` or in tests."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sized
from typing import TypeVar

from rich.console import Console
from rich.progress import track

T = TypeVar("T")


def progress_bar(items: Iterable[T], description: str, enabled: bool = True) -> Iterator[T]:
    """Iterate ``items`` with a rich progress bar on stderr when ``enabled``."""
    if not enabled:
        yield from items
        return
    total = len(items) if isinstance(items, Sized) else None
    yield from track(
        items, description=description, total=total, console=Console(stderr=True), transient=True
    )
