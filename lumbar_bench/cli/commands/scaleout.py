"""``sweep``: approaches x folds x seeds through submitit."""

from __future__ import annotations

import argparse
import sys

from lumbar_bench.board.render import render
from lumbar_bench.scale import sweep, tasks


def sweep_cmd(args: argparse.Namespace) -> int:
    """``lumbar-bench sweep``."""
    request = tasks.SweepRequest(
        approaches=tuple(args.approaches),
        folds=tasks.parse_ints(args.folds, "--folds"),
        seeds=tasks.parse_ints(args.seeds, "--seeds"),
        subset=args.subset,
        overrides=tuple(args.overrides),
        data_dir=args.data,
        split_path=args.split,
        cache_dir=args.cache_dir,
        device=args.device,
        tracking_uri=args.tracking_uri,
        experiment=args.experiment,
        executor=args.executor,
        max_parallel=args.max_parallel,
        partition=args.partition,
        gpus_per_task=args.gpus_per_task,
        cpus_per_task=args.cpus_per_task,
        mem_gb=args.mem_gb,
        time_limit_min=args.time_limit_min,
        n_boot=args.bootstrap,
    )
    if args.dry_run:
        print(tasks.describe(tasks.plan(request)))
        return 0
    result = sweep.sweep(request, on_progress=lambda line: print(line, file=sys.stderr, flush=True))
    print(
        f"sweep run {result.sweep_run_id}: {result.count('FINISHED')} finished, "
        f"{result.count('SKIPPED')} skipped, {result.count('FAILED')} failed"
    )
    for o in (o for o in result.outcomes if o.status == "FAILED"):
        job = f", job {o.job_id}" if o.job_id else ""
        print(f"FAILED {o.task.label}: {o.reason}: {o.message} (run {o.run_id}{job})")
    if result.board is not None:
        text = render(result.board, "table")
        print(text, end="" if text.endswith("\n") else "\n")
    return 1 if result.count("FAILED") else 0
