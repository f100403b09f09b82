"""Frozen-dataclass configs: ``--set key=value`` overrides and a stable config hash."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from collections.abc import Iterable
from typing import Any, TypeVar

from lumbar_bench.core.errors import ConfigError

C = TypeVar("C")

SUBSETS: tuple[str, ...] = ("ci", "small", "full")


def _coerce(raw: str, annotation: Any, key: str) -> Any:
    """Turn the string ``raw`` into a value of the field's annotated type."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if raw.lower() in ("none", "null", "") and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(raw, inner[0], key)
    if annotation is bool:
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"--set {key}={raw}: expected a boolean (true/false)")
    if origin is tuple:
        return tuple(_coerce(part, args[0], key) for part in raw.split(",") if part)
    try:
        return annotation(raw) if annotation in (int, float, str) else raw
    except ValueError as exc:
        raise ConfigError(f"--set {key}={raw}: expected {annotation.__name__}") from exc


def apply_overrides(config: C, overrides: Iterable[str]) -> C:
    """Return ``config`` with ``key=value`` overrides applied; unknown keys raise ConfigError."""
    hints = typing.get_type_hints(type(config))
    names = {f.name for f in dataclasses.fields(config)}
    changes: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep:
            raise ConfigError(f"--set {item!r}: expected key=value")
        if key not in names:
            raise ConfigError(f"--set {key}: unknown key; valid keys: {', '.join(sorted(names))}")
        changes[key] = _coerce(raw.strip(), hints[key], key)
    return dataclasses.replace(config, **changes)


def config_dict(config: Any) -> dict[str, Any]:
    """Plain JSON-able dict of a config dataclass (tuples become lists, paths strings)."""
    return json.loads(json.dumps(dataclasses.asdict(config), default=str))


def config_hash(approach: str, config: Any) -> str:
    """Short, stable hash of an approach name and its resolved config."""
    payload = json.dumps({"approach": approach, "config": config_dict(config)}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def config_from_dict(config_cls: type[C], values: dict[str, Any]) -> C:
    """Rebuild a config dataclass from :func:`config_dict` output (lists back to tuples)."""
    names = {f.name for f in dataclasses.fields(config_cls)}
    clean = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items() if k in names}
    return config_cls(**clean)
