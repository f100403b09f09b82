"""The small contract every approach fulfils.

The runner owns splits, scoring and tracking. An approach only learns from the
training studies and predicts probabilities for others; it never imports mlflow.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import pandas as pd

    from lumbar_bench.context import RunContext
    from lumbar_bench.data.rsna import RSNAData


class Approach(abc.ABC):
    """A way of turning RSNA studies into graded probabilities.

    Subclasses define a frozen ``Config`` dataclass with a ``for_subset`` classmethod
    (the schedule for ``ci``/``small``/``full``) and implement :meth:`fit` and
    :meth:`predict`. :meth:`save` and :meth:`load` persist the trained state.
    """

    name: ClassVar[str]
    Config: ClassVar[type]

    def __init__(self, config: Any) -> None:
        self.config = config

    @abc.abstractmethod
    def fit(self, data: RSNAData, study_ids: Sequence[int], ctx: RunContext) -> None:
        """Learn from the labelled ``study_ids`` of ``data``."""

    @abc.abstractmethod
    def predict(self, data: RSNAData, study_ids: Sequence[int], ctx: RunContext) -> pd.DataFrame:
        """Kaggle submission rows (``row_id, normal_mild, moderate, severe``) for ``study_ids``.

        Every one of the 25 rows of every study must be present, also where a series is missing.
        """

    @abc.abstractmethod
    def save(self, directory: Path) -> None:
        """Write the trained state into ``directory`` (becomes the ``model/`` artifact)."""

    @classmethod
    @abc.abstractmethod
    def load(cls, directory: Path, config: Any) -> Approach:
        """Rebuild a trained approach from what :meth:`save` wrote."""
