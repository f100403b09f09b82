"""Default places on disk: the user cache directory that every command falls back on."""

from __future__ import annotations

from pathlib import Path

from platformdirs import user_cache_dir


def default_cache_dir() -> Path:
    """The user cache directory (``~/.cache/lumbar-bench`` on Linux)."""
    return Path(user_cache_dir("lumbar-bench"))
