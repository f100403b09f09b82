"""``lumbar-bench list``: the registered approaches, one line each."""

from __future__ import annotations

import argparse

from lumbar_bench.approaches.registry import list_approaches


def list_cmd(args: argparse.Namespace) -> int:
    """``lumbar-bench list``."""
    specs = list_approaches(args.pattern)
    width = max((len(s.name) for s in specs), default=0)
    for s in specs:
        budgets = ", ".join(f"{k} {m:g}m {d}" for k, (m, d) in s.budgets.items())
        print(f"{s.name:<{width}}  {s.description}  [budget: {budgets}]")
    return 0
