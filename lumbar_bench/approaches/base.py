"""The small contract every approach fulfils.

The runner owns splits, scoring and tracking. An approach only learns from the
training studies and predicts probabilities for others; it never imports mlflow.
What it measures on the way comes back as a :class:`FitReport`: :meth:`Approach.fit`
returns one, and :meth:`Approach.last_predict_report` says what the last
:meth:`Approach.predict` measured. The runner logs both.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar

import pandas as pd

from lumbar_bench.approaches.context import RunContext
from lumbar_bench.data.rsna import RSNAData


@dataclass(frozen=True)
class FitReport:
    """What a fit (or a prediction) measured, for the runner to log once.

    ``metrics`` are logged under their own names (e.g. ``dice/<class>``, ``val/best_rsna_score``),
    ``stage_seconds`` as ``runtime/<stage>_s``, ``stage_flops`` (the training work the model
    carries, see :mod:`lumbar_bench.approaches.work`) as ``runtime/<stage>_flops`` with their sum
    as ``runtime/train_flops``, and ``time_to_best_s`` as ``runtime/time_to_best_s`` (not at all
    when None). The mappings are read-only; build bigger reports with :meth:`merge` or a
    :class:`ReportBuilder`.
    """

    metrics: Mapping[str, float] = field(default_factory=dict)
    stage_seconds: Mapping[str, float] = field(default_factory=dict)
    #: Seconds from the start of training to the best model; None when the approach does not know it.
    time_to_best_s: float | None = None
    stage_flops: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "metrics", MappingProxyType(dict(self.metrics)))
        object.__setattr__(self, "stage_seconds", MappingProxyType(dict(self.stage_seconds)))
        object.__setattr__(self, "stage_flops", MappingProxyType(dict(self.stage_flops)))

    def merge(self, other: FitReport) -> FitReport:
        """Both reports in one: ``other``'s metrics win on a clash; seconds, FLOPs, times to best add up."""
        times = [t for t in (self.time_to_best_s, other.time_to_best_s) if t is not None]
        return FitReport(
            {**self.metrics, **other.metrics},
            _added(self.stage_seconds, other.stage_seconds),
            sum(times) if times else None,
            _added(self.stage_flops, other.stage_flops),
        )

    def work_metrics(self) -> dict[str, float]:
        """``runtime/<stage>_flops`` and ``runtime/train_flops``; empty when no stage counted its work."""
        if not self.stage_flops:
            return {}
        per_stage = {f"runtime/{stage}_flops": float(v) for stage, v in self.stage_flops.items()}
        return {**per_stage, "runtime/train_flops": float(sum(self.stage_flops.values()))}


def _added(first: Mapping[str, float], second: Mapping[str, float]) -> dict[str, float]:
    """``first`` and ``second`` with the values of shared keys added."""
    out = dict(first)
    for key, value in second.items():
        out[key] = out.get(key, 0.0) + value
    return out


class ReportBuilder:
    """Accumulates a :class:`FitReport` over the stages of a multi-stage approach."""

    def __init__(self) -> None:
        self._report = FitReport()

    def add(self, report: FitReport) -> None:
        """Merge ``report`` in (see :meth:`FitReport.merge`)."""
        self._report = self._report.merge(report)

    def metrics(self, values: Mapping[str, float]) -> None:
        """Record ``values`` (a later value of the same name replaces an earlier one)."""
        self.add(FitReport(metrics=values))

    def seconds(self, stage: str, seconds: float) -> None:
        """Add ``seconds`` to ``stage`` (0 records the stage as having taken no time)."""
        self.add(FitReport(stage_seconds={stage: seconds}))

    def flops(self, stage: str, flops: float) -> None:
        """Add ``flops`` of training work to ``stage``."""
        self.add(FitReport(stage_flops={stage: flops}))

    def time_to_best(self, seconds: float) -> None:
        """Add ``seconds`` to the time to best (a multi-model approach sums its models')."""
        self.add(FitReport(time_to_best_s=seconds))

    def build(self) -> FitReport:
        """The report so far."""
        return self._report


class Approach(abc.ABC):
    """A way of turning RSNA studies into graded probabilities.

    Subclasses define a frozen ``Config`` dataclass with a ``for_subset`` classmethod
    (the schedule for ``ci``/``small``/``full``) and implement :meth:`fit` and
    :meth:`predict`. :meth:`save` and :meth:`load` persist the trained state.
    """

    name: ClassVar[str]
    Config: ClassVar[type]
    #: Trains with torch DDP when started by torchrun with several processes (``ctx.dist``);
    #: the runner refuses a multi-process run of an approach without it.
    supports_ddp: ClassVar[bool] = False
    #: What the last :meth:`predict` measured; a subclass that measures something sets it there.
    _predict_report: FitReport = FitReport()

    def __init__(self, config: Any) -> None:
        self.config = config

    @abc.abstractmethod
    def fit(self, data: RSNAData, study_ids: Sequence[int], ctx: RunContext) -> FitReport:
        """Learn from the labelled ``study_ids`` of ``data``; return what was measured on the way."""

    @abc.abstractmethod
    def predict(self, data: RSNAData, study_ids: Sequence[int], ctx: RunContext) -> pd.DataFrame:
        """Kaggle submission rows (``row_id, normal_mild, moderate, severe``) for ``study_ids``.

        Every one of the 25 rows of every study must be present, also where a series is missing.
        """

    def last_predict_report(self) -> FitReport:
        """What the last :meth:`predict` measured (e.g. its stage seconds); empty by default."""
        return self._predict_report

    @abc.abstractmethod
    def save(self, directory: Path) -> None:
        """Write the trained state into ``directory`` (becomes the ``model/`` artifact)."""

    @classmethod
    @abc.abstractmethod
    def load(cls, directory: Path, config: Any) -> Approach:
        """Rebuild a trained approach from what :meth:`save` wrote."""
