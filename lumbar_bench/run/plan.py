"""One run, resolved once: what was asked (:class:`RunRequest`), and what that means (:class:`RunPlan`).

The runner resolves a request exactly once, into two frozen values that it hands down:

- :class:`RunPlan`: the approach's spec and class, its config and config hash, the budget, the
  device, the cache directory, the package versions and this process's place in a torchrun job;
- :class:`RunInputs`: the data, the split and where it came from, the fold's training and
  evaluated studies, and the work directory.

Nothing downstream looks the approach up in the registry again or recomputes a hash.
"""

from __future__ import annotations

import platform
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from types import MappingProxyType
from typing import Any

from lumbar_bench.approaches.base import Approach
from lumbar_bench.approaches.registry import ApproachSpec, get_approach, get_spec
from lumbar_bench.config import SUBSETS, apply_overrides, config_hash
from lumbar_bench.core import distributed
from lumbar_bench.core.budget import Budget
from lumbar_bench.core.devices import resolve_device
from lumbar_bench.core.errors import ConfigError, LumbarBenchError
from lumbar_bench.core.paths import default_cache_dir
from lumbar_bench.data import defaults
from lumbar_bench.data.rsna import RSNAData
from lumbar_bench.data.splits import Split, subset_studies
from lumbar_bench.tracking.names import DEFAULT_EXPERIMENT, DEFAULT_TRACKING_URI

#: Studies per subset: (training studies, evaluated studies); None = all of them.
SUBSET_SIZES: dict[str, tuple[int | None, int | None]] = {
    "ci": (48, 24),
    "small": (160, 60),
    "full": (None, None),
}
#: Subsets whose training is cut by epochs and iterations only, never by the clock, so one seed
#: gives one score; their budget is still checked (``budget_exceeded``) and guarded by the watchdog.
SCHEDULE_ONLY = frozenset({"ci"})
_VERSIONED = (
    "torch",
    "torchvision",
    "numpy",
    "pandas",
    "pydicom",
    "scikit-learn",
    "mlflow",
    "segmentation-models-pytorch",
    "nnunetv2",
    "SimpleITK",
)


@dataclass(frozen=True)
class RunRequest:
    """Everything ``lumbar-bench run`` was asked to do."""

    approach: str
    data_dir: Path | None = None
    split_path: Path | None = None
    fold: int = 0
    subset: str = "ci"
    device: str = "auto"
    seed: int = 0
    tracking_uri: str = DEFAULT_TRACKING_URI
    experiment: str = DEFAULT_EXPERIMENT
    overrides: tuple[str, ...] = ()
    cache_dir: Path | None = None
    budget_minutes: float | None = None
    system_metrics: bool = False
    #: torch CPU threads during the run; 0 leaves torch's default (the core count).
    threads: int = 0
    progress: bool = True
    #: The sweep this run is a task of (its MLflow run id): the run is nested under it and tagged.
    sweep_run_id: str | None = None

    @property
    def run_name(self) -> str:
        """The MLflow run name: ``<approach>-f<fold>-<subset>``."""
        return f"{self.approach}-f{self.fold}-{self.subset}"


@dataclass(frozen=True)
class RunPlan:
    """A request resolved: every choice the run makes before it reads any data."""

    request: RunRequest
    spec: ApproachSpec
    cls: type[Approach]
    config: Any
    config_hash: str
    budget: Budget
    #: ``cpu`` or ``cuda``: ``auto`` resolved against what torch sees.
    device: str
    cache_dir: Path
    versions: Mapping[str, str]
    dist: distributed.DistInfo

    @property
    def deadline_bound(self) -> bool:
        """True where the soft budget may cut training (every subset but the schedule-only ones)."""
        return self.request.subset not in SCHEDULE_ONLY


@dataclass(frozen=True)
class RunInputs:
    """What the plan reads: the data, the split, the fold's studies and the run's work directory."""

    data: RSNAData
    split: Split
    split_source: str
    train_ids: list[int]
    eval_ids: list[int]
    workdir: Path


def make_plan(request: RunRequest) -> RunPlan:
    """Resolve ``request`` once; an unknown approach, subset or device fails here, before any data is read."""
    if request.subset not in SUBSETS:
        raise ConfigError(f"--subset {request.subset!r}: choose one of {', '.join(SUBSETS)}")
    spec = get_spec(request.approach)
    device = resolve_device(request.device)
    config, chash = resolve_config(request.approach, request.subset, request.overrides)
    default = spec.budget(request.subset)
    return RunPlan(
        request=request,
        spec=spec,
        cls=get_approach(request.approach),
        config=config,
        config_hash=chash,
        budget=Budget(request.budget_minutes or default.minutes, "gpu" if device == "cuda" else "cpu"),
        device=device,
        cache_dir=request.cache_dir or default_cache_dir(),
        versions=MappingProxyType(package_versions()),
        dist=distributed.from_env(device),
    )


def resolve_config(approach: str, subset: str, overrides: tuple[str, ...]) -> tuple[Any, str]:
    """The config ``approach`` runs with on ``subset`` after ``overrides``, and its config hash."""
    config = apply_overrides(get_approach(approach).Config.for_subset(subset), overrides)
    return config, config_hash(approach, config)


def load_inputs(plan: RunPlan, progress: bool) -> RunInputs:
    """The plan's data, split, studies and work directory; under torchrun rank 0 first, writing the caches."""
    request = plan.request
    with distributed.main_first(plan.dist):  # the other ranks read the data caches rank 0 wrote
        data = defaults.load_data(request.data_dir, plan.cache_dir, progress=progress)
        split, split_source = defaults.resolve_split(data, request.split_path, plan.cache_dir)
    train_ids, eval_ids = select_studies(data, split, request.fold, request.subset)
    return RunInputs(data, split, split_source, train_ids, eval_ids, workdir(plan, split.digest))


def select_studies(data: RSNAData, split: Split, fold: int, subset: str) -> tuple[list[int], list[int]]:
    """Training and evaluated studies of ``fold`` and ``subset``; refuses any overlap."""
    n_train, n_eval = SUBSET_SIZES[subset]
    labelled = set(data.labels.index)
    train_ids = subset_studies([s for s in split.train_studies(fold) if s in labelled], n_train)
    eval_ids = subset_studies([s for s in split.studies(fold) if s in labelled], n_eval)
    if set(train_ids) & set(eval_ids):
        raise LumbarBenchError("leakage: a study is both trained on and evaluated")
    return train_ids, eval_ids


def workdir(plan: RunPlan, split_digest: str) -> Path:
    """The run's work directory, keyed by approach, config, split, fold, subset, seed and world size.

    A checkpoint written by one number of torchrun processes never resumes another.
    """
    r = plan.request
    key = f"{r.approach}-{plan.config_hash}-{split_digest[:8]}-f{r.fold}-{r.subset}-s{r.seed}"
    world = plan.dist.world_size
    return plan.cache_dir / "runs" / (key if world == 1 else f"{key}-w{world}")


def package_versions() -> dict[str, str]:
    """Installed versions of the libraries that shape results."""
    out = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out
