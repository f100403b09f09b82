"""The handler of each subcommand, named lazily: ``"module:function"``, as the approach registry does.

Each handler's module imports what its commands need at its top; :func:`handler` imports only the
module of the command being run, so ``lumbar-bench list`` and ``--help`` never import torch,
nnunetv2 or MLflow.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable

HANDLERS: dict[str, str] = {
    "list": "lumbar_bench.cli.commands.catalogue:list_cmd",
    "synth": "lumbar_bench.cli.commands.data:synth_cmd",
    "splits": "lumbar_bench.cli.commands.data:splits_cmd",
    "prepare": "lumbar_bench.cli.commands.data:prepare_cmd",
    "score": "lumbar_bench.cli.commands.data:score_cmd",
    "run": "lumbar_bench.cli.commands.runs:run_cmd",
    "predict": "lumbar_bench.cli.commands.runs:predict_cmd",
    "leaderboard": "lumbar_bench.cli.commands.boards:leaderboard_cmd",
    "claims": "lumbar_bench.cli.commands.boards:claims_cmd",
    "check": "lumbar_bench.cli.commands.gate:check_cmd",
    "sweep": "lumbar_bench.cli.commands.scaleout:sweep_cmd",
}


def handler(command: str) -> Callable[[argparse.Namespace], int]:
    """The function that runs ``command`` (imported now, with its module)."""
    module, _, name = HANDLERS[command].partition(":")
    return getattr(importlib.import_module(module), name)
