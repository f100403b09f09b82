"""Class schemes per series type, derived from where the training coordinates annotate each condition."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from lumbar_bench.constants import PROB_COLUMNS, side_free

log = logging.getLogger(__name__)

SAGITTAL_ANATOMY: tuple[str, ...] = ("vertebra", "disc")


@dataclass(frozen=True)
class ClassScheme:
    """Classes of one series type: background, its anatomy, then lesion group x severity.

    A lesion group is a condition, or with ``merge_sides`` a left/right pair of conditions
    sharing one set of classes: a single 2D slice does not show which side it is on (a left
    parasagittal slice looks like a right one), so the side comes from where the slice or
    pixel lies in the patient (grading reads each side's slice and each half of an axial image).
    """

    series_type: str
    conditions: tuple[str, ...]
    anatomy: tuple[str, ...]
    merge_sides: bool = False

    @property
    def groups(self) -> tuple[str, ...]:
        """The lesion groups, in class order (the conditions themselves unless ``merge_sides``)."""
        if not self.merge_sides:
            return self.conditions
        return tuple(dict.fromkeys(side_free(c) for c in self.conditions))

    def group(self, condition: str) -> str:
        """The lesion group of ``condition``."""
        return side_free(condition) if self.merge_sides else condition

    @property
    def names(self) -> list[str]:
        """Class names by index (``ignore`` not included)."""
        lesions = [f"{g}/{s}" for g in self.groups for s in PROB_COLUMNS]
        return ["background", *self.anatomy, *lesions]

    @property
    def ignore(self) -> int:
        """Value of the ignore label (the highest)."""
        return len(self.names)

    def lesion(self, condition: str, severity: int) -> int:
        """Class index of ``condition`` at severity code 0/1/2."""
        return 1 + len(self.anatomy) + 3 * self.groups.index(self.group(condition)) + severity

    def anatomy_index(self, name: str) -> int:
        """Class index of an anatomy class."""
        return 1 + self.anatomy.index(name)


def derive_schemes(
    coordinates: pd.DataFrame, series: pd.DataFrame, merge_sides: bool = False
) -> dict[str, ClassScheme]:
    """Per series type, the conditions most often annotated on it (counted from the coordinates)."""
    merged = coordinates.merge(series[["series_id", "series_description"]], on="series_id", how="inner")
    counts = merged.groupby(["condition", "series_description"]).size()
    home = {cond: grp.droplevel(0).idxmax() for cond, grp in counts.groupby(level=0)}
    schemes = {}
    for desc in sorted(set(home.values())):
        conds = tuple(sorted(c for c, d in home.items() if d == desc))
        anat = SAGITTAL_ANATOMY if desc.lower().startswith("sagittal") else ()
        schemes[desc] = ClassScheme(desc, conds, anat, merge_sides)
    log.info(
        "class schemes from %d coordinates: %s",
        len(merged),
        {d: list(s.conditions) for d, s in schemes.items()},
    )
    return schemes


def save_schemes(schemes: dict[str, ClassScheme], path: Path) -> None:
    """Write schemes as JSON."""
    path.write_text(json.dumps({k: asdict(v) for k, v in schemes.items()}, indent=1))


def load_schemes(path: Path) -> dict[str, ClassScheme]:
    """Read what :func:`save_schemes` wrote."""
    raw = json.loads(Path(path).read_text())
    return {
        k: ClassScheme(
            v["series_type"], tuple(v["conditions"]), tuple(v["anatomy"]), bool(v.get("merge_sides", False))
        )
        for k, v in raw.items()
    }
