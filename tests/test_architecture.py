"""The package's rooms and what each may import (docs/architecture.md), checked on the source."""

from __future__ import annotations

import ast
from pathlib import Path

import lumbar_bench

PACKAGE = Path(lumbar_bench.__file__).parent
_BASE = {"constants", "config", "core"}
#: Each room of ``lumbar_bench/`` and the rooms it may import, besides itself (docs/architecture.md).
MAY_IMPORT: dict[str, set[str]] = {
    "constants": set(),
    "config": {"core"},
    "core": set(),
    "metrics": _BASE,
    "data": _BASE | {"metrics"},
    "approaches": _BASE | {"data", "metrics"},
    "tracking": _BASE | {"data", "metrics", "approaches"},
    "run": _BASE | {"data", "metrics", "approaches", "tracking"},
    "board": _BASE | {"data", "metrics", "tracking"},
    "gate": _BASE | {"data", "metrics", "approaches", "tracking", "run", "board"},
    "scale": _BASE | {"data", "metrics", "approaches", "tracking", "run", "board"},
    "cli": _BASE | {"data", "metrics", "approaches", "tracking", "run", "board", "gate", "scale"},
}
#: At most this many modules stand at the top of ``lumbar_bench/`` (besides ``__init__``).
MAX_TOP_MODULES = 12


def room(module: str) -> str:
    """The room of ``lumbar_bench.<room>...``; ``__init__`` for the package itself."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imports_of(path: Path) -> set[str]:
    """Every ``lumbar_bench`` module ``path`` imports, at any depth of the file (functions included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lumbar_bench"):
            found.add(node.module)
            if node.module == "lumbar_bench":
                found.update(f"lumbar_bench.{a.name}" for a in node.names if a.name != "__version__")
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("lumbar_bench"))
    return found


def arrows(root: Path = PACKAGE) -> list[str]:
    """``room/file -> room`` for every import that the rules of :data:`MAY_IMPORT` do not allow."""
    out = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        own = rel.parts[0].removesuffix(".py") if len(rel.parts) > 1 or rel.stem != "__init__" else "__init__"
        allowed = MAY_IMPORT.get(own)
        if allowed is None:
            continue
        for target in sorted(imports_of(path)):
            other = room(target)
            if other not in (own, "__init__") and other not in allowed:  # __init__ holds __version__ alone
                out.append(f"{rel} -> {other} ({target})")
    return out


def test_every_room_has_a_rule():
    rooms = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    modules = {p.stem for p in PACKAGE.glob("*.py") if p.stem not in ("__init__", "__main__")}
    assert rooms | modules <= set(MAY_IMPORT) | {"api"}


def test_no_room_imports_one_above_it():
    assert arrows() == []


def test_the_check_finds_an_upward_import(tmp_path):
    fake = tmp_path / "lumbar_bench"
    (fake / "core").mkdir(parents=True)
    (fake / "core" / "x.py").write_text("from lumbar_bench.run.runner import run\n")
    assert arrows(fake) == ["core/x.py -> run (lumbar_bench.run.runner)"]


def test_few_modules_stand_at_the_top():
    top = [p.name for p in PACKAGE.glob("*.py") if p.stem not in ("__init__", "__main__")]
    assert len(top) <= MAX_TOP_MODULES, top


def test_no_file_is_over_400_lines():
    lines = {p.relative_to(PACKAGE): len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    assert {str(p): n for p, n in lines.items() if n > 400} == {}


def local_imports(root: Path = PACKAGE) -> list[str]:
    """``file:line`` of every import inside a function that does not say why (``# lazy: ...``).

    A function-local import is allowed only to keep torch and the like out of ``list``, ``--help``
    and the code that does not need them; the comment on its line, or the line above, says so.
    """
    found = []
    for path in sorted(root.rglob("*.py")):
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines), filename=str(path))):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for sub in ast.walk(node):
                if isinstance(sub, ast.Import | ast.ImportFrom):
                    above = next((t.strip() for t in reversed(lines[: sub.lineno - 1]) if t.strip()), "")
                    said = "lazy:" in lines[sub.lineno - 1] or "lazy:" in above
                    grouped = above.startswith(("import ", "from "))  # one comment serves a block of imports
                    if not said and not grouped:
                        found.append(f"{path.relative_to(root)}:{sub.lineno}")
    return found


def test_every_function_local_import_says_why():
    assert local_imports() == []
