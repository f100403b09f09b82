"""Small file helpers the harness shares."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def replace_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """``write(tmp)`` to a temporary sibling of ``path``, then move it into place: readers see all or none."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (:func:`replace_atomic`)."""
    replace_atomic(path, lambda tmp: tmp.write_text(text))


def torch_save_atomic(obj: object, path: Path) -> None:
    """``torch.save(obj)`` to ``path`` atomically (torch is imported here, not when this module is)."""
    import torch  # lazy: the many light users of this module (and `list`, `--help`) never need torch

    replace_atomic(path, lambda tmp: torch.save(obj, tmp))
