"""Class schemes per series type, derived from where the training coordinates annotate each condition."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from lumbar_bench.constants import PROB_COLUMNS

log = logging.getLogger(__name__)

SAGITTAL_ANATOMY: tuple[str, ...] = ("vertebra", "disc")


@dataclass(frozen=True)
class ClassScheme:
    """Classes of one series type: background, its anatomy, then condition x severity."""

    series_type: str
    conditions: tuple[str, ...]
    anatomy: tuple[str, ...]

    @property
    def names(self) -> list[str]:
        """Class names by index (``ignore`` not included)."""
        lesions = [f"{c}/{s}" for c in self.conditions for s in PROB_COLUMNS]
        return ["background", *self.anatomy, *lesions]

    @property
    def ignore(self) -> int:
        """Value of the ignore label (the highest)."""
        return len(self.names)

    def lesion(self, condition: str, severity: int) -> int:
        """Class index of ``condition`` at severity code 0/1/2."""
        return 1 + len(self.anatomy) + 3 * self.conditions.index(condition) + severity

    def anatomy_index(self, name: str) -> int:
        """Class index of an anatomy class."""
        return 1 + self.anatomy.index(name)


def derive_schemes(coordinates: pd.DataFrame, series: pd.DataFrame) -> dict[str, ClassScheme]:
    """Per series type, the conditions most often annotated on it (counted from the coordinates)."""
    merged = coordinates.merge(series[["series_id", "series_description"]], on="series_id", how="inner")
    counts = merged.groupby(["condition", "series_description"]).size()
    home = {cond: grp.droplevel(0).idxmax() for cond, grp in counts.groupby(level=0)}
    schemes = {}
    for desc in sorted(set(home.values())):
        conds = tuple(sorted(c for c, d in home.items() if d == desc))
        anat = SAGITTAL_ANATOMY if desc.lower().startswith("sagittal") else ()
        schemes[desc] = ClassScheme(desc, conds, anat)
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
        k: ClassScheme(v["series_type"], tuple(v["conditions"]), tuple(v["anatomy"])) for k, v in raw.items()
    }
