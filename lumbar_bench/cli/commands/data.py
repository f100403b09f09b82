"""The data commands: ``synth``, ``splits``, ``prepare`` and ``score`` (no torch, no MLflow)."""

from __future__ import annotations

import argparse
import json

import pandas as pd

from lumbar_bench.core.errors import LumbarBenchError, SubmissionError
from lumbar_bench.core.paths import default_cache_dir
from lumbar_bench.data import defaults
from lumbar_bench.data.ingest import prepare
from lumbar_bench.data.labels import read_labels
from lumbar_bench.data.phantom.synth import PhantomConfig, synthesize
from lumbar_bench.data.splits import make_split, save_split
from lumbar_bench.metrics.score import score


def synth_cmd(args: argparse.Namespace) -> int:
    """``lumbar-bench synth``."""
    summary = synthesize(
        args.out,
        PhantomConfig(
            studies=args.studies,
            seed=args.seed,
            size=args.size,
            irregularity=args.irregularity,
            cohort_draws=args.cohort_draws,
        ),
        progress=not args.no_progress,
        workers=args.workers,
    )
    print(summary.describe())
    return 0


def splits_cmd(args: argparse.Namespace) -> int:
    """``lumbar-bench splits``."""
    data = defaults.load_data(args.data, args.cache_dir or default_cache_dir(), not args.no_progress)
    split = make_split(data.labels, args.folds, args.seed, data.data_digest())
    if args.out:
        save_split(split, args.out)
        print(f"wrote {args.out}")
    sizes = [len(split.studies(f)) for f in range(split.folds)]
    print(f"digest {split.digest}  folds {split.folds}  studies per fold {sizes}")
    return 0


def prepare_cmd(args: argparse.Namespace) -> int:
    """``lumbar-bench prepare``."""
    data = defaults.load_data(args.data, args.cache_dir or default_cache_dir(), not args.no_progress)
    summary = prepare(data, progress=not args.no_progress, workers=args.workers)
    print(summary.describe())
    return 0


def score_cmd(args: argparse.Namespace) -> int:
    """``lumbar-bench score``."""
    try:
        submission = pd.read_csv(args.submission, dtype={"row_id": str})
    except pd.errors.EmptyDataError:
        raise LumbarBenchError(f"{args.submission}: empty file, not a submission") from None
    except (OSError, pd.errors.ParserError) as exc:
        raise LumbarBenchError(f"{args.submission}: cannot read submission ({exc})") from None
    try:
        result = score(read_labels(args.labels), submission)
    except SubmissionError as exc:
        raise SubmissionError(f"{args.submission}: {exc}") from None
    if args.json:
        print(json.dumps(result.as_dict()))
    else:
        parts = "  ".join(f"{k} {v:.4f}" for k, v in result.as_dict().items() if k != "score")
        print(f"score {result.score:.6f}  ({parts})")
    return 0
