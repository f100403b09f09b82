"""``lumbar-bench``: a thin command line over the package.

The parser imports no heavy library, and each subcommand's handler is imported only when it
runs (:mod:`lumbar_bench.cli.commands`), so ``--help`` and ``list`` answer at once.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from lumbar_bench.cli.commands import handler
from lumbar_bench.cli.parser import build_parser
from lumbar_bench.core.errors import LumbarBenchError

__all__ = ["build_parser", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lumbar-bench`` console script."""
    args = build_parser().parse_args(argv)
    level = (logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return handler(args.command)(args)
    except LumbarBenchError as exc:
        print(f"lumbar-bench {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
