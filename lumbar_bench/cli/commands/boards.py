"""``leaderboard`` and ``claims``: boards and the original study's claims read back from tracking."""

from __future__ import annotations

import argparse
import logging
import sys

from lumbar_bench.board import claims, publish
from lumbar_bench.board import leaderboard as lb
from lumbar_bench.board.render import render
from lumbar_bench.tracking.names import ui_link

log = logging.getLogger("lumbar_bench")


def leaderboard_cmd(args: argparse.Namespace) -> int:
    """``lumbar-bench leaderboard``."""
    request = lb.BoardRequest(
        tracking_uri=args.tracking_uri,
        experiment=args.experiment,
        split=args.split,
        subset=args.subset,
        baseline=args.baseline,
        n_boot=args.bootstrap,
    )
    board = lb.build(request)
    paths = publish.write(board, publish.results_dir(args.results_dir, args.experiment))
    run_id = publish.publish(board, args.tracking_uri, paths)
    text = render(board, args.format, wide=args.wide)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        print(f"wrote {args.out}")
    else:
        print(text, end="" if text.endswith("\n") else "\n")
    log.info("board %s: %s; logged as run %s", board.board_id, paths["md"].parent, run_id)
    view = publish.share_view(board, args.tracking_uri)
    print(ui_link(args.tracking_uri, view), file=sys.stderr)
    if args.register:
        version, run = publish.register_top(board, args.tracking_uri, args.register)
        print(
            f"registered {args.register} version {version}: {run.tag('approach')} run {run.run_id}",
            file=sys.stderr,
        )
    return 0


def claims_cmd(args: argparse.Namespace) -> int:
    """``lumbar-bench claims``."""
    request = claims.ClaimsRequest(
        tracking_uri=args.tracking_uri,
        experiment=args.experiment,
        subset=args.subset,
        fold=args.fold,
        n_boot=args.bootstrap,
    )
    text = claims.render(claims.build(request), args.format)
    print(text, end="")
    return 0
