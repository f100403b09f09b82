"""``lumbar-bench claims``: the original study's three claims, decided from finished runs.

The study claimed that segmentation (nnU-Net) beats ResNet-18, that mask QC helps and that
self-refinement helps. Each claim compares two approaches on one subset and fold of the
frozen split: ``Δ = score(claimed better) - score(reference)`` of the official RSNA score
(lower is better), from the same paired two-level bootstrap as the leaderboard (seeds, then
studies; :func:`lumbar_bench.metrics.bootstrap.paired_bootstrap`) over every seed found.

A claim is **supported** when the whole 95% interval of Δ lies below 0, **not supported**
when it lies above 0, and **undecided: CI spans 0** otherwise. Beside each Δ stand both
sides' seeds and compute (the mean per run of ``runtime/total_s`` plus ``runtime/reused_s``,
the recorded build time of cached stages it reused), so a reader sees whether a gap is bought
with compute. Runs are read through :mod:`lumbar_bench.tracking.client` and the
leaderboard's selection (FINISHED top-level runs, one comparable split, the latest run per
fold and seed).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from lumbar_bench.board.runs import latest_per_fold_and_seed, load_evidence, select_comparable
from lumbar_bench.core.errors import DataError
from lumbar_bench.metrics.bootstrap import Evidence, Paired, paired_bootstrap, point_estimate
from lumbar_bench.tracking.names import DEFAULT_EXPERIMENT, DEFAULT_TRACKING_URI
from lumbar_bench.tracking.search import RunRecord, find_runs

log = logging.getLogger(__name__)

FORMATS = ("table", "markdown")
SUPPORTED, NOT_SUPPORTED, UNDECIDED = "supported", "not supported", "undecided: CI spans 0"


@dataclass(frozen=True)
class Claim:
    """``approach`` scores lower (better) than ``reference``."""

    name: str
    approach: str
    reference: str

    @property
    def label(self) -> str:
        """The claim as one line: ``nnunet-qc < nnunet-raw``."""
        return f"{self.approach} < {self.reference}"


CLAIMS: tuple[Claim, ...] = (
    Claim("segmentation beats ResNet-18", "nnunet-raw", "resnet18"),
    Claim("QC helps", "nnunet-qc", "nnunet-raw"),
    Claim("self-refinement helps", "nnunet-refined", "nnunet-raw"),
)


@dataclass(frozen=True)
class ClaimsRequest:
    """Which runs decide the claims and how to bootstrap them."""

    tracking_uri: str = DEFAULT_TRACKING_URI
    experiment: str = DEFAULT_EXPERIMENT
    subset: str = "small"
    fold: int = 0
    n_boot: int = 1000
    seed: int = 0


@dataclass(frozen=True)
class Side:
    """One approach's runs on the fold: its score, seeds and compute."""

    approach: str
    config_hash: str
    score: float
    seeds: tuple[int, ...]
    runtime_s: float
    run_ids: tuple[str, ...]
    evidence: Evidence
    #: Mean ``runtime/train_flops`` per run; NaN when the runs did not count their work.
    work_flops: float = float("nan")


@dataclass(frozen=True)
class ClaimResult:
    """A claim with both sides and its paired Δ; ``missing`` says why it cannot be decided."""

    claim: Claim
    side: Side | None = None
    reference: Side | None = None
    paired: Paired | None = None
    missing: str = ""

    @property
    def verdict(self) -> str:
        """``supported``, ``not supported``, ``undecided: CI spans 0``, or why there is none."""
        if self.missing:
            return self.missing
        if self.paired is None:
            return "undecided: no shared studies"
        if self.paired.ci_high < 0:
            return SUPPORTED
        if self.paired.ci_low > 0:
            return NOT_SUPPORTED
        return UNDECIDED


@dataclass(frozen=True)
class ClaimsReport:
    """The three claims on one subset and fold, with notes on how the runs were chosen."""

    subset: str
    fold: int
    results: tuple[ClaimResult, ...]
    notes: tuple[str, ...] = ()
    n_boot: int = 1000


def _runs(request: ClaimsRequest) -> tuple[dict[str, list[RunRecord]], list[str]]:
    """Finished runs of the subset and fold, one per seed, grouped by approach; notes on choices."""
    runs = find_runs(
        request.tracking_uri,
        request.experiment,
        subset=request.subset,
        fold=request.fold,
        status="FINISHED",
        top_level=True,
    )
    runs = select_comparable([r for r in runs if r.tag("approach")])
    runs, notes = latest_per_fold_and_seed(runs)
    by_config: dict[tuple[str, str], list[RunRecord]] = {}
    for run in runs:
        by_config.setdefault((run.tag("approach"), run.tag("config_hash")), []).append(run)
    out: dict[str, list[RunRecord]] = {}
    for (approach, chash), group in sorted(by_config.items(), key=lambda kv: _rank(kv[1]), reverse=True):
        if approach in out:
            notes.append(
                f"{approach}: config {chash} ({len(group)} runs) left out; the one with most seeds "
                "(then the latest) counts"
            )
            continue
        out[approach] = group
    return out, notes


def _rank(group: list[RunRecord]) -> tuple[int, int]:
    """Most seeds first, then the most recent run."""
    return len(group), max(r.start_time for r in group)


def _side(uri: str, approach: str, runs: list[RunRecord]) -> Side:
    """Score, seeds and mean compute of one approach's runs (one per seed)."""
    evidence = load_evidence(uri, runs)
    finite = [t for t in map(compute_s, runs) if np.isfinite(t)]
    work = [float(w) for r in runs if (w := r.metric("runtime/train_flops")) is not None and np.isfinite(w)]
    return Side(
        approach,
        runs[0].tag("config_hash"),
        point_estimate(evidence),
        tuple(sorted({int(r.tag("seed", "0")) for r in runs})),
        float(np.mean(finite)) if finite else float("nan"),
        tuple(r.run_id for r in runs),
        evidence,
        float(np.mean(work)) if len(work) == len(runs) else float("nan"),
    )


def compute_s(run: RunRecord) -> float:
    """A run's compute: ``runtime/total_s`` plus the recorded build seconds of the cached stages it reused."""
    total, reused = run.metric("runtime/total_s"), run.metric("runtime/reused_s")
    if total is None:
        return float("nan")
    return float(total) + (float(reused) if reused is not None and np.isfinite(reused) else 0.0)


def _decide(claim: Claim, sides: dict[str, Side | str], request: ClaimsRequest) -> ClaimResult:
    """Pair the two sides of ``claim``; a missing side gives a result that says so."""
    a, b = sides[claim.approach], sides[claim.reference]
    missing = [side for side in (a, b) if isinstance(side, str)]
    if missing:
        return ClaimResult(claim, missing="; ".join(missing))
    paired = paired_bootstrap(a.evidence, b.evidence, claim.reference, request.n_boot, request.seed)
    return ClaimResult(claim, a, b, paired)


def build(request: ClaimsRequest) -> ClaimsReport:
    """Read the runs and decide every claim (a side without runs makes its claim say so)."""
    groups, notes = _runs(request)
    where = f"{request.subset} fold {request.fold}"
    sides: dict[str, Side | str] = {}
    for approach in sorted({n for c in CLAIMS for n in (c.approach, c.reference)}):
        if approach not in groups:
            sides[approach] = f"no finished {approach} runs on {where}"
            continue
        try:
            sides[approach] = _side(request.tracking_uri, approach, groups[approach])
        except DataError as exc:
            sides[approach] = f"{approach}: no evidence ({exc})"
    results = tuple(_decide(c, sides, request) for c in CLAIMS)
    return ClaimsReport(request.subset, request.fold, results, tuple(notes), request.n_boot)


def _fmt(value: float, digits: int = 3, sign: bool = False) -> str:
    if value is None or not np.isfinite(value):
        return "–"
    text = f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"
    return text.replace("-", "−")


def _cells(result: ClaimResult) -> list[str]:
    """Scores, Δ [CI], p, seeds and runtime of a decided claim (dashes where missing)."""
    a, b, p = result.side, result.reference, result.paired
    if a is None or b is None:
        return ["–"] * 6
    delta = "–"
    if p is not None:
        delta = f"{_fmt(p.diff, sign=True)} [{_fmt(p.ci_low, sign=True)}, {_fmt(p.ci_high, sign=True)}]"
    return [
        f"{_fmt(a.score)} vs {_fmt(b.score)}",
        delta,
        "–" if p is None else f"{p.p_value:.3f}",
        f"{len(a.seeds)}/{len(b.seeds)}",
        f"{_fmt(a.runtime_s, 0)}/{_fmt(b.runtime_s, 0)}",
        f"{_tflop(a.work_flops)}/{_tflop(b.work_flops)}",
    ]


def _tflop(flops: float) -> str:
    """Training work in TFLOP, 3 significant digits (``–``: not counted)."""
    return "–" if not np.isfinite(flops) else f"{flops / 1e12:.3g}"


#: Widest line of the text table.
TEXT_WIDTH = 120
HEADER = ("claim", "scores", "Δ [95% CI]", "p", "seeds", "compute s", "work TFLOP", "verdict")


def header_lines(report: ClaimsReport) -> list[str]:
    """What the table shows, in four lines."""
    return [
        f"The original study's claims on {report.subset} fold {report.fold} (RSNA score, lower is better).",
        f"Δ = first − second: paired bootstrap over seeds, then studies ({report.n_boot} resamples).",
        "seeds, compute s (mean runtime/total_s + runtime/reused_s per run) and work TFLOP",
        "(mean runtime/train_flops per run; – where not counted) are given as first/second.",
    ]


def to_text_table(report: ClaimsReport) -> str:
    """A plain table that fits 120 columns.

    An undecidable claim says why on its own line; so does a verdict too long for its row.
    """
    rows = [[r.claim.label, *_cells(r), r.verdict] for r in report.results]
    shown = [row for row, r in zip(rows, report.results, strict=True) if not r.missing]
    widths = [max([len(h), *(len(row[i]) for row in shown)]) for i, h in enumerate(HEADER)]
    widths[0] = max(widths[0], *(len(row[0]) for row in rows))
    verdict_at = sum(widths[:-1]) + 2 * (len(widths) - 1)
    if verdict_at + widths[-1] > TEXT_WIDTH:
        widths[-1] = len(HEADER[-1])  # long verdicts go below their rows
    head = "  ".join(h.ljust(w) for h, w in zip(HEADER, widths, strict=True)).rstrip()
    lines = [*header_lines(report), "", head]
    for row, result in zip(rows, report.results, strict=True):
        if result.missing:
            lines.append(f"{row[0].ljust(widths[0])}  {result.missing}")
            continue
        line = "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        if len(line) > TEXT_WIDTH:
            line = "  ".join(c.ljust(w) for c, w in zip(row[:-1], widths, strict=False)).rstrip()
            lines += [line, f"{' ' * 4}→ {row[-1]}"]
        else:
            lines.append(line)
    lines += [f"note: {n}" for n in report.notes]
    return "\n".join(lines) + "\n"


def to_markdown(report: ClaimsReport) -> str:
    """The same table in Markdown."""
    lines = [*header_lines(report), "", "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for r in report.results:
        lines.append("| " + " | ".join([r.claim.label, *_cells(r), r.verdict]) + " |")
    lines += ["", *(f"- {n}" for n in report.notes)] if report.notes else []
    return "\n".join(lines) + "\n"


def render(report: ClaimsReport, fmt: str = "table") -> str:
    """``table`` or ``markdown``."""
    return to_markdown(report) if fmt == "markdown" else to_text_table(report)


__all__ = [
    "CLAIMS",
    "FORMATS",
    "Claim",
    "ClaimResult",
    "ClaimsReport",
    "ClaimsRequest",
    "build",
    "render",
    "to_markdown",
    "to_text_table",
]
