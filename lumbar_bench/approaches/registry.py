"""The approach registry: small, explicit and lazy.

Entries name their class as a ``"module:Class"`` string, so listing approaches or
printing ``--help`` imports neither torch nor nnunetv2. A class is imported only
when :func:`get_approach` asks for it.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from lumbar_bench.core.budget import Budget
from lumbar_bench.core.errors import ConfigError

if TYPE_CHECKING:
    from lumbar_bench.approaches.base import Approach


#: The budget (minutes, device) of a subset an approach's spec does not name.
DEFAULT_BUDGET: tuple[float, str] = (60.0, "cpu")


@dataclass(frozen=True)
class ApproachSpec:
    """What the registry knows about an approach without importing it."""

    name: str
    target: str
    description: str
    #: Compute budget in minutes per subset, with the device it assumes (e.g. ``(3.0, "cpu")``).
    budgets: dict[str, tuple[float, str]] = field(default_factory=dict)

    def budget(self, subset: str) -> Budget:
        """The budget on ``subset``; :data:`DEFAULT_BUDGET` where the spec names none."""
        return Budget(*self.budgets.get(subset, DEFAULT_BUDGET))


_REGISTRY: dict[str, ApproachSpec] = {}


def register(spec: ApproachSpec) -> ApproachSpec:
    """Add ``spec`` to the registry; a name that is already taken raises ``ValueError``."""
    if spec.name in _REGISTRY:
        raise ValueError(f"approach {spec.name!r} is already registered ({_REGISTRY[spec.name].target})")
    if ":" not in spec.target:
        raise ValueError(f"approach {spec.name!r}: target must be 'module:Class', got {spec.target!r}")
    _REGISTRY[spec.name] = spec
    return spec


def list_approaches(pattern: str = "*") -> list[ApproachSpec]:
    """Registered approaches whose name matches the shell-style ``pattern``, sorted by name."""
    return [_REGISTRY[n] for n in sorted(_REGISTRY) if fnmatch.fnmatch(n, pattern)]


def get_spec(name: str) -> ApproachSpec:
    """The spec registered under ``name``; an unknown name suggests close ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise ConfigError(
            f"unknown approach {name!r}; {hint}available: {', '.join(sorted(_REGISTRY))}"
        ) from None


def get_approach(name: str) -> type[Approach]:
    """Import and return the class registered under ``name``."""
    module_name, _, attr = get_spec(name).target.partition(":")
    return getattr(importlib.import_module(module_name), attr)


_CPU_CI = (3.0, "cpu")
#: The segmentation route on ``small``: 20 minutes of CPU per approach, refinement included.
_CPU_SMALL = (20.0, "cpu")

for _spec in (
    ApproachSpec(
        "prior",
        "lumbar_bench.approaches.prior:PriorApproach",
        "Training-fold class frequencies per condition and level (the baseline every model must beat).",
        {"ci": (1.0, "cpu"), "small": (2.0, "cpu"), "full": (5.0, "cpu")},
    ),
    ApproachSpec(
        "resnet18",
        "lumbar_bench.approaches.resnet18:ResNet18Approach",
        "torchvision ResNet-18 on representative slices of each series, 25x3 softmax heads (Kaggle starter).",
        {"ci": _CPU_CI, "small": (20.0, "cpu"), "full": (540.0, "gpu")},
    ),
    ApproachSpec(
        "nnunet-raw",
        "lumbar_bench.approaches.nnunet.approach:NnUNetRawApproach",
        "smp U-Net vertebrae + coordinate pseudo-masks -> nnU-Net v2 on every mask (original study, run 1).",
        {"ci": _CPU_CI, "small": _CPU_SMALL, "full": (540.0, "gpu")},
    ),
    ApproachSpec(
        "nnunet-qc",
        "lumbar_bench.approaches.nnunet.approach:NnUNetQCApproach",
        "As nnunet-raw, trained only on pseudo-masks that pass mask QC (original study, run 2).",
        {"ci": _CPU_CI, "small": _CPU_SMALL, "full": (540.0, "gpu")},
    ),
    ApproachSpec(
        "nnunet-refined",
        "lumbar_bench.approaches.nnunet.approach:NnUNetRefinedApproach",
        "Second nnU-Net trained on the first one's out-of-fold predictions merged with the labels.",
        {"ci": _CPU_CI, "small": _CPU_SMALL, "full": (540.0, "gpu")},
    ),
    ApproachSpec(
        "lsdc-2.5d",
        "lumbar_bench.approaches.lsdc25d.approach:Lsdc25dApproach",
        "Heatmap localisers, crops at each level, a 2.5D CNN grader per crop (the RSNA 2024 winners' route).",
        {"ci": (1.5, "cpu"), "small": (15.0, "cpu"), "full": (15.0, "cpu")},
    ),
):
    register(_spec)
