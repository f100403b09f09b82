"""``lumbar-bench``: a thin command line over the package.

Heavy libraries (torch, nnunetv2, mlflow, pydicom) are imported inside the command
that needs them, so ``--help`` and ``list`` answer at once.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from lumbar_bench import __version__
from lumbar_bench.errors import LumbarBenchError

log = logging.getLogger("lumbar_bench")

EXAMPLES = """\
examples:
  lumbar-bench list                                    # registered approaches
  lumbar-bench run --approach prior --subset ci        # on the embedded phantom, logged to ./mlflow.db
  lumbar-bench run --approach resnet18 --json          # default schedule; prints one JSON line
  lumbar-bench run --approach resnet18 --data ~/rsna --device cuda --set epochs=20
  lumbar-bench synth /tmp/phantom --studies 50 --size 96
  lumbar-bench prepare --data ~/rsna                   # decode + cache every series once
  lumbar-bench score train.csv submission.csv --json   # the official competition score
  lumbar-bench leaderboard --subset ci --format markdown
  lumbar-bench check baselines/ci.json                 # CI regression gate
"""

_HANDLERS: dict[str, Callable[[argparse.Namespace], int]] = {}


def handler(
    name: str,
) -> Callable[[Callable[[argparse.Namespace], int]], Callable[[argparse.Namespace], int]]:
    """Register the function that runs subcommand ``name``."""

    def wrap(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        _HANDLERS[name] = fn
        return fn

    return wrap


def _sub(subs: argparse._SubParsersAction, name: str, help_: str, examples: str) -> argparse.ArgumentParser:
    return subs.add_parser(
        name,
        help=help_,
        description=help_,
        epilog=f"examples:\n{examples}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _common_data(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data",
        type=Path,
        default=None,
        help="RSNA-layout directory (default: the embedded synthetic phantom)",
    )
    p.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="stage, series and phantom cache (default: the user cache directory)",
    )


def _tracking(p: argparse.ArgumentParser) -> None:
    from lumbar_bench.tracking import DEFAULT_EXPERIMENT, DEFAULT_TRACKING_URI

    p.add_argument("--tracking-uri", default=DEFAULT_TRACKING_URI, help="MLflow store (default: %(default)s)")
    p.add_argument(
        "--experiment", default=DEFAULT_EXPERIMENT, help="MLflow experiment (default: %(default)s)"
    )


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (cheap: imports no heavy library)."""
    parser = argparse.ArgumentParser(
        prog="lumbar-bench",
        description="Benchmark harness for RSNA 2024 lumbar spine degeneration grading.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    subs = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = _sub(subs, "list", "list registered approaches", "  lumbar-bench list\n  lumbar-bench list 'nnunet*'")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter")

    p = _sub(
        subs,
        "synth",
        "write the synthetic lumbar phantom (RSNA + SPIDER layouts)",
        "  lumbar-bench synth /tmp/phantom\n  lumbar-bench synth big --studies 1975 --size 512",
    )
    p.add_argument("out", type=Path)
    p.add_argument("--studies", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=128, help="image size in pixels (default: %(default)s)")

    p = _sub(
        subs,
        "splits",
        "make a frozen, digested, study-level stratified K-fold split",
        "  lumbar-bench splits --folds 5 --out my-split.json\n  lumbar-bench splits --data ~/rsna",
    )
    _common_data(p)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--out", type=Path, default=None, help="JSON file (default: print the digest and fold sizes)"
    )

    p = _sub(
        subs,
        "prepare",
        "decode every DICOM series once into the content-keyed cache",
        "  lumbar-bench prepare\n  lumbar-bench prepare --data ~/rsna",
    )
    _common_data(p)

    p = _sub(
        subs,
        "score",
        "the official competition score of a submission",
        "  lumbar-bench score labels.csv predictions.csv\n  lumbar-bench score train.csv sub.csv --json",
    )
    p.add_argument("labels", type=Path, help="train.csv-form labels")
    p.add_argument("submission", type=Path, help="row_id,normal_mild,moderate,severe")
    p.add_argument("--json", action="store_true")

    p = _sub(
        subs,
        "run",
        "train an approach on the other folds and score the held-out fold",
        "  lumbar-bench run --approach prior\n"
        "  lumbar-bench run --approach resnet18 --subset small --fold 1 --json\n"
        "  lumbar-bench run --approach nnunet-qc --set qc_threshold=0.6 --budget-minutes 5",
    )
    p.add_argument("--approach", required=True)
    _common_data(p)
    p.add_argument("--split", type=Path, default=None, help="split JSON (default: the frozen default split)")
    p.add_argument("--fold", type=int, default=0)
    p.add_argument("--subset", choices=("ci", "small", "full"), default="full")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override an approach config field (repeatable)",
    )
    p.add_argument(
        "--budget-minutes", type=float, default=None, help="override the approach's compute budget"
    )
    p.add_argument("--system-metrics", action="store_true", help="log CPU/memory/GPU usage to MLflow")
    p.add_argument("--json", action="store_true", help="print one JSON object with the results")
    _tracking(p)

    p = _sub(
        subs,
        "predict",
        "write a Kaggle submission for the test part with a run's saved model",
        "  lumbar-bench predict --run 0123abcd --out submission.csv",
    )
    p.add_argument("--run", required=True, dest="run_id")
    _common_data(p)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--tracking-uri", default="sqlite:///mlflow.db")

    p = _sub(
        subs,
        "leaderboard",
        "rank comparable runs with bootstrap CIs and a paired test vs resnet18",
        "  lumbar-bench leaderboard --subset ci\n"
        "  lumbar-bench leaderboard --subset full --split 3f2a9c --format markdown --out board.md\n"
        "  lumbar-bench leaderboard --tracking-uri sqlite:///.ci-work/mlflow.db \\\n"
        "      --experiment lumbar-bench-ci",
    )
    _tracking(p)
    p.add_argument("--split", default=None, metavar="DIGEST", help="split digest (or its prefix) to rank")
    p.add_argument("--subset", choices=("ci", "small", "full"), default=None, help="subset to rank")
    p.add_argument("--format", choices=("table", "markdown", "csv"), default="table")
    p.add_argument("--out", type=Path, default=None, help="write the chosen format here instead of stdout")
    p.add_argument(
        "--results-dir",
        type=Path,
        default=Path("results"),
        help="leaderboard.md/.csv/.png go to DIR/<experiment>/ (default: %(default)s)",
    )
    p.add_argument("--baseline", default="resnet18", help="approach to pair against (default: %(default)s)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (default: %(default)s)")

    p = _sub(
        subs,
        "check",
        "CI regression gate: run baselined approaches on --subset ci, fail on regression",
        "  lumbar-bench check baselines/ci.json\n"
        "  lumbar-bench check baselines/ci.json --approach prior --from-runs\n"
        "  lumbar-bench check baselines/ci.json --update   # remake the baseline from fresh runs",
    )
    p.add_argument("baseline", type=Path, help="baseline JSON (made by --update)")
    p.add_argument("--tracking-uri", default="sqlite:///mlflow.db", help="MLflow store (default %(default)s)")
    p.add_argument("--experiment", default="lumbar-bench-ci", help="MLflow experiment (default: %(default)s)")
    _common_data(p)
    p.add_argument(
        "--approach",
        dest="approaches",
        nargs="+",
        default=None,
        metavar="NAME",
        help="only these approaches (default: every one in the baseline)",
    )
    p.add_argument("--from-runs", action="store_true", help="judge the latest runs in the store; run nothing")
    p.add_argument(
        "--update",
        action="store_true",
        help="write the baseline from fresh runs (every registered approach that runs)",
    )
    p.add_argument("--seeds", type=int, default=2, help="with --update: seeds to measure spread (default: 2)")
    p.add_argument("--json", action="store_true", help="print the verdicts as JSON")
    return parser


@handler("list")
def _list(args: argparse.Namespace) -> int:
    from lumbar_bench.registry import list_approaches

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
        PhantomConfig(studies=args.studies, seed=args.seed, size=args.size),
        progress=not args.no_progress,
    )
    print(summary.describe())
    return 0


@handler("splits")
def _splits(args: argparse.Namespace) -> int:
    from lumbar_bench import datasets
    from lumbar_bench.splits import make_split, save_split

    data = datasets.load_data(args.data, args.cache_dir or datasets.default_cache_dir(), not args.no_progress)
    split = make_split(data.labels, args.folds, args.seed, data.data_digest())
    if args.out:
        save_split(split, args.out)
        print(f"wrote {args.out}")
    sizes = [len(split.studies(f)) for f in range(split.folds)]
    print(f"digest {split.digest}  folds {split.folds}  studies per fold {sizes}")
    return 0


@handler("prepare")
def _prepare(args: argparse.Namespace) -> int:
    from lumbar_bench import datasets
    from lumbar_bench.data.ingest import prepare

    data = datasets.load_data(args.data, args.cache_dir or datasets.default_cache_dir(), not args.no_progress)
    summary = prepare(data, progress=not args.no_progress)
    print(summary.describe())
    return 0


@handler("score")
def _score(args: argparse.Namespace) -> int:
    import pandas as pd

    from lumbar_bench.data.labels import read_labels
    from lumbar_bench.metrics.score import score

    try:
        submission = pd.read_csv(args.submission, dtype={"row_id": str})
    except (OSError, pd.errors.ParserError) as exc:
        raise LumbarBenchError(f"{args.submission}: cannot read submission ({exc})") from None
    result = score(read_labels(args.labels), submission)
    if args.json:
        print(json.dumps(result.as_dict()))
    else:
        parts = "  ".join(f"{k} {v:.4f}" for k, v in result.as_dict().items() if k != "score")
        print(f"score {result.score:.6f}  ({parts})")
    return 0


@handler("run")
def _run(args: argparse.Namespace) -> int:
    from lumbar_bench.runner import RunRequest, run

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
            progress=not args.no_progress,
        )
    )
    if args.json:
        print(json.dumps(result.as_dict()))
    else:
        m = result.metrics
        floor = f"  oracle floor {m['reference/oracle_score']:.4f}" if "reference/oracle_score" in m else ""
        print(
            f"{result.approach} fold {result.fold} ({result.subset}): rsna_score {m['rsna_score']:.4f}  "
            f"(prior {m['reference/prior_score']:.4f}{floor}; lower is better)\n"
            f"  accuracy {m['accuracy']:.3f}  balanced_accuracy {m['balanced_accuracy']:.3f}  "
            f"total {m['runtime/total_s']:.1f}s  run {result.run_id}"
        )
    return 0


@handler("predict")
def _predict(args: argparse.Namespace) -> int:
    from lumbar_bench.runner import predict_from_run

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
    from lumbar_bench import leaderboard as lb

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
    text = lb.render(board, args.format)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        print(f"wrote {args.out}")
    else:
        print(text, end="" if text.endswith("\n") else "\n")
    log.info("board %s: %s; logged as run %s", board.board_id, paths["md"].parent, run_id)
    return 0


@handler("check")
def _check(args: argparse.Namespace) -> int:
    from lumbar_bench import check

    request = check.CheckRequest(
        baseline_path=args.baseline,
        tracking_uri=args.tracking_uri,
        experiment=args.experiment,
        cache_dir=args.cache_dir,
        data_dir=args.data,
        approaches=tuple(args.approaches or ()),
        from_runs=args.from_runs,
        seeds=args.seeds,
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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lumbar-bench`` console script."""
    args = build_parser().parse_args(argv)
    level = (logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return _HANDLERS[args.command](args)
    except LumbarBenchError as exc:
        print(f"lumbar-bench {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
