"""``run`` and ``predict``: one approach on one fold, and a submission from a run's model."""

from __future__ import annotations

import argparse
import json

from lumbar_bench.core import distributed
from lumbar_bench.run.predict import predict_from_run
from lumbar_bench.run.runner import RunRequest, run


def run_cmd(args: argparse.Namespace) -> int:
    """``lumbar-bench run``."""
    result = run(
        RunRequest(
            approach=args.approach,
            data_dir=args.data,
            split_path=args.split,
            fold=args.fold,
            subset=args.subset,
            device=args.device,
            seed=args.seed,
            tracking_uri=args.tracking_uri,
            experiment=args.experiment,
            overrides=tuple(args.overrides),
            cache_dir=args.cache_dir,
            budget_minutes=args.budget_minutes,
            system_metrics=args.system_metrics,
            threads=args.threads,
            progress=not args.no_progress,
        )
    )
    if not distributed.from_env().is_main:
        return 0  # under torchrun, rank 0 alone reports
    if args.json:
        print(json.dumps(result.as_dict()))
    else:
        m = result.metrics
        floor = "".join(
            f"  {name} {m[key]:.4f}"
            for key, name in (
                ("reference/bayes_floor", "Bayes floor"),
                ("reference/oracle_score", "oracle (realised)"),
            )
            if key in m
        )
        print(
            f"{result.approach} fold {result.fold} ({result.subset}): rsna_score {m['rsna_score']:.4f}  "
            f"(prior {m['reference/prior_score']:.4f}{floor}; lower is better)\n"
            f"  accuracy {m['accuracy']:.3f}  balanced_accuracy {m['balanced_accuracy']:.3f}  "
            f"total {m['runtime/total_s']:.1f}s  run {result.run_id}"
        )
    return 0


def predict_cmd(args: argparse.Namespace) -> int:
    """``lumbar-bench predict``."""
    sub = predict_from_run(
        args.run_id,
        args.out,
        args.data,
        args.cache_dir,
        args.tracking_uri,
        args.device,
        progress=not args.no_progress,
    )
    print(f"wrote {args.out}: {len(sub)} rows for {len(sub) // 25} studies")
    return 0
