"""The argument parser of ``lumbar-bench`` (cheap to build: imports no heavy library)."""

from __future__ import annotations

import argparse
from pathlib import Path

from lumbar_bench import __version__
from lumbar_bench.config import SUBSETS
from lumbar_bench.core.devices import DEVICES
from lumbar_bench.tracking.names import CI_EXPERIMENT, DEFAULT_EXPERIMENT, DEFAULT_TRACKING_URI

EXAMPLES = """\
examples:
  lumbar-bench list                                    # registered approaches
  lumbar-bench run --approach prior --subset ci        # on the embedded phantom, logged to ./mlflow.db
  lumbar-bench run --approach resnet18 --json          # default schedule; prints one JSON line
  lumbar-bench run --approach resnet18 --data ~/rsna --device cuda --set epochs=20
  lumbar-bench sweep --approach prior --approach resnet18 --folds 0-4 --seeds 0,1,2 --subset ci
  lumbar-bench synth /tmp/phantom --studies 50 --size 96
  lumbar-bench prepare --data ~/rsna                   # decode + cache every series once
  lumbar-bench score train.csv submission.csv --json   # the official competition score
  lumbar-bench leaderboard --subset ci --format markdown
  lumbar-bench check baselines/ci.json                 # CI regression gate
  lumbar-bench claims --subset small                   # the original study's three claims
"""


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


def _overrides(p: argparse.ArgumentParser, help_: str) -> None:
    """``--set KEY=VALUE``, repeatable, into ``args.overrides``."""
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=help_)


def _tracking(p: argparse.ArgumentParser, experiment: str | None = DEFAULT_EXPERIMENT) -> None:
    """``--tracking-uri`` and (unless ``experiment`` is None) ``--experiment``, with their defaults."""
    p.add_argument("--tracking-uri", default=DEFAULT_TRACKING_URI, help="MLflow store (default: %(default)s)")
    if experiment is not None:
        p.add_argument("--experiment", default=experiment, help="MLflow experiment (default: %(default)s)")


def _subset(p: argparse.ArgumentParser, default: str | None, help_: str = "default: %(default)s") -> None:
    """``--subset``, one of :data:`lumbar_bench.config.SUBSETS`."""
    p.add_argument("--subset", choices=SUBSETS, default=default, help=help_)


def _device(p: argparse.ArgumentParser) -> None:
    """``--device``, one of :data:`lumbar_bench.core.devices.DEVICES`."""
    p.add_argument("--device", choices=DEVICES, default="auto", help="default: %(default)s")


def _add_list(subs: argparse._SubParsersAction) -> None:
    """``lumbar-bench list``: arguments and examples."""
    p = _sub(subs, "list", "list registered approaches", "  lumbar-bench list\n  lumbar-bench list 'nnunet*'")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter")


def _add_synth(subs: argparse._SubParsersAction) -> None:
    """``lumbar-bench synth``: arguments and examples."""
    p = _sub(
        subs,
        "synth",
        "write the synthetic lumbar phantom (RSNA + SPIDER layouts)",
        "  lumbar-bench synth /tmp/phantom\n  lumbar-bench synth big --studies 1975 --size 512 --workers 2\n"
        "  lumbar-bench synth regular --irregularity 0   # one series of each type, no blank labels",
    )
    _workers(p, "processes drawing studies; the files are byte-identical for any count")
    p.add_argument("out", type=Path)
    p.add_argument("--studies", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=128, help="image size in pixels (default: %(default)s)")
    p.add_argument(
        "--irregularity",
        type=float,
        default=1.0,
        help="scale on the real rates of extra or missing series and blank labels (default: %(default)s)",
    )
    p.add_argument(
        "--cohort-draws",
        type=int,
        default=8,
        help="label draws of the training cohort; the one closest to the real data is kept",
    )


def _add_splits(subs: argparse._SubParsersAction) -> None:
    """``lumbar-bench splits``: arguments and examples."""
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


def _add_prepare(subs: argparse._SubParsersAction) -> None:
    """``lumbar-bench prepare``: arguments and examples."""
    p = _sub(
        subs,
        "prepare",
        "decode every DICOM series once into the content-keyed cache",
        "  lumbar-bench prepare\n  lumbar-bench prepare --data ~/rsna --workers 8",
    )
    _common_data(p)
    _workers(p, "processes decoding series")


def _workers(p: argparse.ArgumentParser, what: str) -> None:
    """``--workers N``: 0 (the default) means one per CPU core."""
    p.add_argument("--workers", type=int, default=0, help=f"{what} (default: one per CPU core)")


def _add_score(subs: argparse._SubParsersAction) -> None:
    """``lumbar-bench score``: arguments and examples."""
    p = _sub(
        subs,
        "score",
        "the official competition score of a submission",
        "  lumbar-bench score labels.csv predictions.csv\n  lumbar-bench score train.csv sub.csv --json",
    )
    p.add_argument("labels", type=Path, help="train.csv-form labels")
    p.add_argument("submission", type=Path, help="row_id,normal_mild,moderate,severe")
    p.add_argument("--json", action="store_true")


def _add_run(subs: argparse._SubParsersAction) -> None:
    """``lumbar-bench run``: arguments and examples."""
    p = _sub(
        subs,
        "run",
        "train an approach on the other folds and score the held-out fold",
        "  lumbar-bench run --approach prior\n"
        "  lumbar-bench run --approach resnet18 --subset small --fold 1 --json\n"
        "  lumbar-bench run --approach nnunet-qc --set qc_threshold=0.6 --budget-minutes 5\n"
        "  lumbar-bench run --approach lsdc-2.5d --set jitter=false   # one training aid off",
    )
    p.add_argument("--approach", required=True)
    _common_data(p)
    p.add_argument("--split", type=Path, default=None, help="split JSON (default: the frozen default split)")
    p.add_argument("--fold", type=int, default=0)
    _subset(p, "full")
    _device(p)
    p.add_argument("--seed", type=int, default=0)
    _overrides(p, "override an approach config field (repeatable)")
    p.add_argument(
        "--budget-minutes", type=float, default=None, help="override the approach's compute budget"
    )
    p.add_argument("--system-metrics", action="store_true", help="log CPU/memory/GPU usage to MLflow")
    p.add_argument(
        "--threads", type=int, default=0, help="torch CPU threads (default: 0, torch's own choice)"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object with the results")
    _tracking(p)


def _add_sweep(subs: argparse._SubParsersAction) -> None:
    """``lumbar-bench sweep``: arguments and examples."""
    p = _sub(
        subs,
        "sweep",
        "run approaches x folds x seeds (one run each) through submitit; finished tasks are skipped",
        "  lumbar-bench sweep --approach prior --folds 0-1 --seeds 0,1 --subset ci --dry-run\n"
        "  lumbar-bench sweep --approach prior --approach resnet18 --folds 0-4 --seeds 0,1,2 --subset ci\n"
        "  lumbar-bench sweep --approach resnet18 --subset full --executor slurm --partition gpu \\\n"
        "      --gpus-per-task 1 --cpus-per-task 8 --mem-gb 32 --max-parallel 10",
    )
    p.add_argument("--approach", dest="approaches", action="append", required=True, help="repeatable")
    _common_data(p)
    p.add_argument("--split", type=Path, default=None, help="split JSON (default: the frozen default split)")
    p.add_argument("--folds", default="0", help="held-out folds, e.g. 0-4 or 0,2 (default: %(default)s)")
    p.add_argument("--seeds", default="0", help="seeds, e.g. 0,1,2 or 0-2 (default: %(default)s)")
    _subset(p, "full")
    _device(p)
    _overrides(p, "override a config field of every approach (repeatable)")
    p.add_argument("--executor", choices=("local", "slurm", "debug"), default="local")
    p.add_argument(
        "--max-parallel", type=int, default=0, help="tasks at once (default: what fits the cores, local)"
    )
    p.add_argument("--partition", default=None, help="SLURM partition")
    p.add_argument("--gpus-per-task", type=int, default=0)
    p.add_argument(
        "--cpus-per-task", type=int, default=0, help="cores and torch threads per task (default: a share)"
    )
    p.add_argument("--mem-gb", type=float, default=None)
    p.add_argument(
        "--time-limit-min",
        type=int,
        default=0,
        help="each job's time limit in minutes (SLURM --time; default: the hard budget + 10)",
    )
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples of the final board")
    p.add_argument("--dry-run", action="store_true", help="list the tasks and which would be skipped")
    _tracking(p)


def _add_predict(subs: argparse._SubParsersAction) -> None:
    """``lumbar-bench predict``: arguments and examples."""
    p = _sub(
        subs,
        "predict",
        "write a Kaggle submission for the test part with a run's saved model",
        "  lumbar-bench predict --run 0123abcd --out submission.csv",
    )
    p.add_argument("--run", required=True, dest="run_id")
    _common_data(p)
    p.add_argument("--out", type=Path, required=True)
    _device(p)
    _tracking(p, experiment=None)


def _add_leaderboard(subs: argparse._SubParsersAction) -> None:
    """``lumbar-bench leaderboard``: arguments and examples."""
    p = _sub(
        subs,
        "leaderboard",
        "rank comparable runs with bootstrap CIs and a paired test vs resnet18",
        "  lumbar-bench leaderboard --subset ci\n"
        "  lumbar-bench leaderboard --subset full --split 3f2a9c --format markdown --out board.md\n"
        "  lumbar-bench leaderboard --tracking-uri sqlite:///.ci-work/mlflow.db \\\n"
        f"      --experiment {CI_EXPERIMENT}\n"
        "  lumbar-bench leaderboard --subset small --register lumbar-bench-best\n"
        "  lumbar-bench leaderboard --subset full --baseline lsdc-2.5d:23fc94   # pair against one config",
    )
    _tracking(p)
    p.add_argument("--split", default=None, metavar="DIGEST", help="split digest (or its prefix) to rank")
    _subset(p, None, "subset to rank")
    p.add_argument("--format", choices=("table", "markdown", "csv"), default="table")
    p.add_argument(
        "--wide",
        action="store_true",
        help="table: every column (score parts, accuracies, Dice, seed sd, grading blend), not 120 wide",
    )
    p.add_argument("--out", type=Path, default=None, help="write the chosen format here instead of stdout")
    p.add_argument(
        "--results-dir",
        type=Path,
        default=Path("results"),
        help="leaderboard.md/.csv/.png go to DIR/<experiment>/ (default: %(default)s)",
    )
    p.add_argument(
        "--baseline",
        default="resnet18",
        help="approach to pair against, or APPROACH:HASH for one config of it (default: %(default)s)",
    )
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (default: %(default)s)")
    p.add_argument(
        "--register",
        default=None,
        metavar="NAME",
        help="register the top row's model in the MLflow Model Registry as a new version of NAME",
    )


def _add_check(subs: argparse._SubParsersAction) -> None:
    """``lumbar-bench check``: arguments and examples."""
    p = _sub(
        subs,
        "check",
        "CI regression gate: run baselined approaches on --subset ci, fail on regression",
        "  lumbar-bench check baselines/ci.json\n"
        "  lumbar-bench check baselines/ci.json --approach prior --from-runs\n"
        "  lumbar-bench check baselines/ci.json --approach resnet18 --set lr=0   # must FAIL\n"
        "  lumbar-bench check baselines/ci.json --update   # remake the baseline from measurement runs",
    )
    p.add_argument("baseline", type=Path, help="baseline JSON (made by --update)")
    _tracking(p, experiment=CI_EXPERIMENT)
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
    _overrides(p, "override a config field of every approach run (e.g. break one on purpose: lr=0)")
    p.add_argument("--json", action="store_true", help="print the verdicts as JSON")


def _add_claims(subs: argparse._SubParsersAction) -> None:
    """``lumbar-bench claims``: arguments and examples."""
    p = _sub(
        subs,
        "claims",
        "decide the original study's three claims (nnU-Net vs resnet18, QC, refinement) from finished runs",
        "  lumbar-bench claims                                # small fold 0, every seed found\n"
        "  lumbar-bench claims --subset ci --format markdown\n"
        f"  lumbar-bench claims --tracking-uri sqlite:///.ci-work/mlflow.db --experiment {CI_EXPERIMENT}",
    )
    _tracking(p)
    _subset(p, "small")
    p.add_argument("--fold", type=int, default=0, help="held-out fold (default: %(default)s)")
    p.add_argument("--format", choices=("table", "markdown"), default="table")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (default: %(default)s)")


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
    _add_list(subs)
    _add_synth(subs)
    _add_splits(subs)
    _add_prepare(subs)
    _add_score(subs)
    _add_run(subs)
    _add_sweep(subs)
    _add_predict(subs)
    _add_leaderboard(subs)
    _add_check(subs)
    _add_claims(subs)
    return parser
