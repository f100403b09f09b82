"""``check``: the CI regression gate, and ``check --update``."""

from __future__ import annotations

import argparse
import json

from lumbar_bench.gate import check


def check_cmd(args: argparse.Namespace) -> int:
    """``lumbar-bench check``."""
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
