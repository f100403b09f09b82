"""One handler per subcommand; each imports the heavy modules it needs inside."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable

from lumbar_bench.core.errors import LumbarBenchError, SubmissionError
from lumbar_bench.core.paths import default_cache_dir

log = logging.getLogger("lumbar_bench")

HANDLERS: dict[str, Callable[[argparse.Namespace], int]] = {}


def handler(
    name: str,
) -> Callable[[Callable[[argparse.Namespace], int]], Callable[[argparse.Namespace], int]]:
    """Register the function that runs subcommand ``name``."""

    def wrap(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        HANDLERS[name] = fn
        return fn

    return wrap


@handler("list")
def _list(args: argparse.Namespace) -> int:
    from lumbar_bench.approaches.registry import list_approaches

    specs = list_approaches(args.pattern)
    width = max((len(s.name) for s in specs), default=0)
    for s in specs:
        budgets = ", ".join(f"{k} {m:g}m {d}" for k, (m, d) in s.budgets.items())
        print(f"{s.name:<{width}}  {s.description}  [budget: {budgets}]")
    return 0


@handler("synth")
def _synth(args: argparse.Namespace) -> int:
    from lumbar_bench.data.phantom.synth import PhantomConfig, synthesize

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


@handler("splits")
def _splits(args: argparse.Namespace) -> int:
    from lumbar_bench.data import defaults
    from lumbar_bench.data.splits import make_split, save_split

    data = defaults.load_data(args.data, args.cache_dir or default_cache_dir(), not args.no_progress)
    split = make_split(data.labels, args.folds, args.seed, data.data_digest())
    if args.out:
        save_split(split, args.out)
        print(f"wrote {args.out}")
    sizes = [len(split.studies(f)) for f in range(split.folds)]
    print(f"digest {split.digest}  folds {split.folds}  studies per fold {sizes}")
    return 0


@handler("prepare")
def _prepare(args: argparse.Namespace) -> int:
    from lumbar_bench.data import defaults
    from lumbar_bench.data.ingest import prepare

    data = defaults.load_data(args.data, args.cache_dir or default_cache_dir(), not args.no_progress)
    summary = prepare(data, progress=not args.no_progress, workers=args.workers)
    print(summary.describe())
    return 0


@handler("score")
def _score(args: argparse.Namespace) -> int:
    import pandas as pd

    from lumbar_bench.data.labels import read_labels
    from lumbar_bench.metrics.score import score

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


@handler("run")
def _run(args: argparse.Namespace) -> int:
    from lumbar_bench.core import distributed
    from lumbar_bench.run.runner import RunRequest, run

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


@handler("sweep")
def _sweep(args: argparse.Namespace) -> int:
    from lumbar_bench.board import leaderboard as lb
    from lumbar_bench.scale import sweep

    request = sweep.SweepRequest(
        approaches=tuple(args.approaches),
        folds=sweep.parse_ints(args.folds, "--folds"),
        seeds=sweep.parse_ints(args.seeds, "--seeds"),
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
        print(sweep.describe(sweep.plan(request)))
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
        text = lb.render(result.board, "table")
        print(text, end="" if text.endswith("\n") else "\n")
    return 1 if result.count("FAILED") else 0


@handler("predict")
def _predict(args: argparse.Namespace) -> int:
    from lumbar_bench.run.predict import predict_from_run

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


@handler("leaderboard")
def _leaderboard(args: argparse.Namespace) -> int:
    from lumbar_bench.board import leaderboard as lb
    from lumbar_bench.tracking.names import ui_link

    request = lb.BoardRequest(
        tracking_uri=args.tracking_uri,
        experiment=args.experiment,
        split=args.split,
        subset=args.subset,
        baseline=args.baseline,
        n_boot=args.bootstrap,
    )
    board = lb.build(request)
    paths = lb.write(board, lb.results_dir(args.results_dir, args.experiment))
    run_id = lb.publish(board, args.tracking_uri, paths)
    text = lb.render(board, args.format, wide=args.wide)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        print(f"wrote {args.out}")
    else:
        print(text, end="" if text.endswith("\n") else "\n")
    log.info("board %s: %s; logged as run %s", board.board_id, paths["md"].parent, run_id)
    view = lb.share_view(board, args.tracking_uri)
    print(ui_link(args.tracking_uri, view), file=sys.stderr)
    if args.register:
        version, run = lb.register_top(board, args.tracking_uri, args.register)
        print(
            f"registered {args.register} version {version}: {run.tag('approach')} run {run.run_id}",
            file=sys.stderr,
        )
    return 0


@handler("check")
def _check(args: argparse.Namespace) -> int:
    from lumbar_bench.gate import check

    request = check.CheckRequest(
        baseline_path=args.baseline,
        tracking_uri=args.tracking_uri,
        experiment=args.experiment,
        cache_dir=args.cache_dir,
        data_dir=args.data,
        approaches=tuple(args.approaches or ()),
        from_runs=args.from_runs,
        overrides=tuple(args.overrides),
        progress=not args.no_progress,
    )
    if args.update:
        baseline = check.update(request)
        print(f"wrote {args.baseline}: {', '.join(baseline.approaches)} ({check.TOLERANCE_RULE})")
        for name, reason in baseline.generated["left_out"].items():
            print(f"left out: {name}: {reason}")
        return 0
    verdicts = check.check(request)
    if args.json:
        print(json.dumps([v.as_dict() for v in verdicts], indent=1))
    else:
        not_gated = [] if args.approaches else check.ungated(check.Baseline.load(args.baseline))
        print(check.render(verdicts, not_gated))
    return 0 if all(v.ok for v in verdicts) else 1


@handler("claims")
def _claims(args: argparse.Namespace) -> int:
    from lumbar_bench.board import claims

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
