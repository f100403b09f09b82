"""What a board is made of: its request, its rows and the board itself (frozen values, no I/O).

:mod:`lumbar_bench.board.leaderboard` builds them, :mod:`lumbar_bench.board.render` draws them.
"""

from __future__ import annotations

from dataclasses import dataclass

from lumbar_bench.metrics.bootstrap import Paired
from lumbar_bench.tracking.names import DEFAULT_EXPERIMENT, DEFAULT_TRACKING_URI

BASELINE = "resnet18"
#: The board's table artifact of the leaderboard run, and its first columns.
TABLE = "leaderboard.json"
TABLE_FIRST = ("rank", "approach", "rsna_score", "ci_low", "ci_high", "paired_diff", "runtime/total_s")


@dataclass(frozen=True)
class BoardRequest:
    """Which runs to rank and how to bootstrap them."""

    tracking_uri: str = DEFAULT_TRACKING_URI
    experiment: str = DEFAULT_EXPERIMENT
    split: str | None = None
    subset: str | None = None
    baseline: str = BASELINE
    n_boot: int = 1000
    seed: int = 0
    #: Rank only these runs (e.g. the tasks of a sweep); empty ranks every comparable run.
    run_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class BoardRow:
    """One approach and config hash on the board: its runs over folds and seeds.

    ``folds`` and ``seeds`` are the distinct folds and seeds of its runs; ``seed_std`` is
    the standard deviation (ddof=1) over seeds of each seed's fold-mean score, over the
    seeds that ran every fold (NaN with fewer than two such seeds); ``collapsed`` counts
    runs tagged ``collapsed_to_prior=true``.
    """

    approach: str
    config_hash: str
    folds: tuple[int, ...]
    run_ids: tuple[str, ...]
    metrics: dict[str, float]
    ci_low: float
    ci_high: float
    n_studies: int
    budget: str
    budget_exceeded: int
    paired: Paired | None = None
    seeds: tuple[int, ...] = (0,)
    seed_std: float = float("nan")
    collapsed: int = 0

    @property
    def score(self) -> float:
        """Mean over seeds of the mean official score over folds."""
        return self.metrics["rsna_score"]

    @property
    def n_seeds(self) -> int:
        """How many distinct seeds the row pools."""
        return len(self.seeds)


@dataclass(frozen=True)
class Leaderboard:
    """A ranked board of comparable runs and what it says about them."""

    board_id: str
    experiment: str
    split_digest: str
    subset: str
    data_digest: str
    rows: tuple[BoardRow, ...]
    notes: tuple[str, ...] = ()
    n_boot: int = 1000
    baseline: str = BASELINE

    @property
    def run_ids(self) -> list[str]:
        """Every run that went into the board."""
        return [r for row in self.rows for r in row.run_ids]
