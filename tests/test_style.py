"""Style rules the code base keeps: no function in ``lumbar_bench/`` over 60 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import lumbar_bench

MAX_LINES = 60
PACKAGE = Path(lumbar_bench.__file__).parent


def long_functions(root: Path, limit: int = MAX_LINES) -> list[str]:
    """``path:name (n lines)`` of every function under ``root`` longer than ``limit`` lines.

    A function's length runs from its ``def`` to its last line, so nested functions and
    classes count towards the function that holds them (and are also checked on their own).
    """
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = node.end_lineno - node.lineno + 1
                if n > limit:
                    found.append(f"{path.relative_to(root.parent)}:{node.name} ({n} lines)")
    return found


def test_the_scan_finds_a_long_function_and_its_nested_helpers(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(60))
    source = f"def long():\n    def inner():\n        pass\n{body}\n\ndef short():\n    pass\n"
    (tmp_path / "m.py").write_text(source)
    assert long_functions(tmp_path) == [f"{tmp_path.name}/m.py:long (63 lines)"]


def test_no_function_in_the_package_is_over_60_lines():
    assert long_functions(PACKAGE) == []
