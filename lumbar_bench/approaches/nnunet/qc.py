"""Stage 3: score every series' pseudo-masks for plausibility, then keep, drop or override.

Signals, each a pass rate in [0, 1] (the score is their mean):

- ``vertebra_count``: the share of ``min_vertebrae`` vertebrae and ``min_discs`` discs found on
  the mid slice (each capped at 1, then averaged), so two vertebrae of five score below four;
- ``order``: discs alternate with vertebrae from the bottom up (not judged with fewer than
  two vertebrae or no disc: there is nothing to order, and ``vertebra_count`` already says so);
- ``components``: few vertebra fragments (components below the minimum area);
- ``area_ratio``: vertebra areas agree (coefficient of variation) and regions are sized like anatomy;
- ``region_size``: no region larger than ``max_region_factor`` times the median region of its
  series type over the stage's series (a region that spans several levels is too large);
- ``level``: the coordinate lies at the disc of its annotated level (the anatomy agrees);
- ``side``: left/right conditions sit on the slice (or half image) of their side;
- ``inside``: the coordinate lies inside the image.

A manual CSV (``series_id,action`` with ``include``/``exclude``) overrides the score.
``series`` (e.g. ``sagittal_t2``) limits every drop decision to one series type, as the
original study's manual pass over Sagittal T2/STIR only; other types keep all their masks.

On the phantom, QC is judged against truth (:func:`truth_table`, :func:`truth_metrics`):
the Spearman correlation of the score with each series' pseudo-mask truth Dice, and the
AUROC of a low score for the phantom's hard cases (``truth/cases.csv``).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from lumbar_bench.constants import SERIES_TYPES, condition_side, slug
from lumbar_bench.core.errors import ConfigError

log = logging.getLogger(__name__)

CHECKS: tuple[str, ...] = (
    "vertebra_count",
    "order",
    "components",
    "area_ratio",
    "region_size",
    "level",
    "side",
    "inside",
)


@dataclass(frozen=True)
class QCConfig:
    """Threshold and plausibility limits of mask QC."""

    threshold: float = 0.8
    manual: str = ""
    min_vertebrae: int = 5
    min_discs: int = 5
    max_fragments: int = 2
    max_area_cv: float = 0.6
    region_ratio: tuple[float, float] = (0.03, 3.0)
    #: A region may be at most this many times the median region area of its series type.
    max_region_factor: float = 1.5
    #: Only this series type is judged (slug or its prefix, e.g. ``sagittal_t2``); empty: every type.
    series: str = ""

    def __post_init__(self) -> None:
        if self.series and not any(series_matches(t, self.series) for t in SERIES_TYPES):
            choices = ", ".join(slug(t) for t in SERIES_TYPES)
            raise ConfigError(f"qc_series={self.series!r}: no series type matches; choose one of {choices}")


def series_matches(series_type: str, wanted: str) -> bool:
    """Whether ``series_type`` is the one ``wanted`` names (its slug, or a ``_``-prefix of it)."""
    if not wanted:
        return True
    have, want = slug(series_type), slug(wanted)
    return have == want or have.startswith(want + "_")


def score_series(
    series: pd.Series, coords: pd.DataFrame, cfg: QCConfig, region_median: float = float("nan")
) -> dict[str, float]:
    """Pass rate of every check for one series (NaN where a check does not apply).

    ``region_median`` is the median region area of the series' type over the stage (NaN: not judged).
    """
    out = dict.fromkeys(CHECKS, float("nan"))
    sagittal = str(series["series_type"]).startswith("Sagittal")
    found = (
        min(1.0, series["n_vertebrae"] / max(cfg.min_vertebrae, 1)),
        min(1.0, series["n_discs"] / max(cfg.min_discs, 1)),
    )
    out["vertebra_count"] = float(np.mean(found))
    if series["n_vertebrae"] >= 2 and series["n_discs"] >= 1:
        out["order"] = float(bool(series["order_ok"]))
    if sagittal:
        out["components"] = float(series["n_fragments"] <= cfg.max_fragments)
        cv = series["area_cv"]
        area_ok = [bool(np.isnan(cv) or cv <= cfg.max_area_cv)]
        ratio = coords["region_area"] / coords["vertebra_area"].replace(0, np.nan)
        lo, hi = cfg.region_ratio
        area_ok += [bool(np.isfinite(r) and lo <= r <= hi) for r in ratio]
        out["area_ratio"] = float(np.mean(area_ok))
    if len(coords) and np.isfinite(region_median) and region_median > 0:
        out["region_size"] = float((coords["region_area"] <= cfg.max_region_factor * region_median).mean())
    if len(coords):
        out["level"] = float((coords["level_from_masks"].fillna("") == coords["level"]).mean())
        sides = coords["condition"].map(condition_side)
        sided = sides != ""
        if sided.any():
            out["side"] = float((coords.loc[sided, "side_from_slice"] == sides[sided]).mean())
        out["inside"] = float(coords["inside"].astype(bool).mean())
    return out


def read_manual(path: str) -> dict[int, str]:
    """``series_id -> include|exclude`` from a manual QC CSV; ConfigError on a bad file."""
    if not path:
        return {}
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"qc_manual={path}: file not found")
    frame = pd.read_csv(p, dtype=str)
    if "series_id" not in frame.columns:
        raise ConfigError(f"{p}: expected columns series_id[,action]")
    actions = frame["action"].str.strip().str.lower() if "action" in frame.columns else "exclude"
    out = dict(zip(frame["series_id"].astype(int), pd.Series(actions, index=frame.index), strict=True))
    bad = {a for a in out.values() if a not in ("include", "exclude")}
    if bad:
        raise ConfigError(f"{p}: action must be include or exclude, got {sorted(bad)}")
    return out


def _decide(series: pd.Series, score: float, reasons: list[str], manual: dict, cfg: QCConfig) -> bool:
    """Keep or drop one series: the threshold, then a manual action; types not judged keep all."""
    if not series_matches(str(series["series_type"]), cfg.series):
        if int(series["series_id"]) in manual:
            log.warning(
                "QC: manual action for series %s ignored (qc_series=%s)", series["series_id"], cfg.series
            )
        return True
    keep = score >= cfg.threshold
    action = manual.get(int(series["series_id"]), "")
    if action:
        keep = action == "include"
        reasons.append(f"manual_{action}")
    return keep


def run_qc(stage_dir: Path, cfg: QCConfig) -> pd.DataFrame:
    """QC report: one row per series with every check, the score, the decision and the reasons.

    ``checked`` is False for series outside ``cfg.series``: they keep their masks whatever the score.
    """
    series = pd.read_csv(Path(stage_dir) / "series.csv")
    coords = pd.read_csv(Path(stage_dir) / "coords.csv", keep_default_na=False, na_values=[""])
    manual = read_manual(cfg.manual)
    medians = coords.groupby("series_type")["region_area"].median() if len(coords) else pd.Series()
    rows = []
    for _, s in series.iterrows():
        own = coords[coords["series_id"] == s["series_id"]]
        checks = score_series(s, own, cfg, float(medians.get(s["series_type"], np.nan)))
        values = [v for v in checks.values() if np.isfinite(v)]
        score = float(np.mean(values)) if values else 0.0
        reasons = [k for k, v in checks.items() if np.isfinite(v) and v < 1.0]
        keep = _decide(s, score, reasons, manual, cfg)
        rows.append(
            {
                "study_id": int(s["study_id"]),
                "series_id": int(s["series_id"]),
                "series_type": s["series_type"],
                **{f"check_{k}": v for k, v in checks.items()},
                "score": score,
                "checked": series_matches(str(s["series_type"]), cfg.series),
                "keep": keep,
                "reasons": ";".join(reasons),
            }
        )
    report = pd.DataFrame(rows)
    if len(report):
        report = report.sort_values("score").reset_index(drop=True)
    return report


def summarise(report: pd.DataFrame) -> dict[str, float]:
    """Count for tracking: series checked, kept, dropped, and dropped per failing check."""
    if report.empty:
        return {"qc/n_series": 0.0, "qc/n_kept": 0.0, "qc/n_dropped": 0.0}
    dropped = report[~report["keep"]]
    reasons = Counter(r for rs in dropped["reasons"] for r in str(rs).split(";") if r)
    out = {
        "qc/n_series": float(len(report)),
        "qc/n_kept": float(report["keep"].sum()),
        "qc/n_dropped": float(len(dropped)),
        "qc/mean_score": float(report["score"].mean()),
    }
    out.update({f"qc/dropped_{k}": float(v) for k, v in reasons.items()})
    log.info(
        "QC: %d of %d series dropped (threshold score); reasons: %s",
        len(dropped),
        len(report),
        dict(reasons) or "none",
    )
    return out


def read_hard_cases(truth_dir: Path) -> pd.Series | None:
    """``study_id -> bool``: the phantom study has any hard-case flag (None without ``cases.csv``)."""
    path = Path(truth_dir) / "cases.csv"
    if not path.is_file():
        return None
    flags = pd.read_csv(path).set_index("study_id")
    return flags.astype(bool).any(axis=1)


def truth_table(report: pd.DataFrame, dice: pd.DataFrame, hard: pd.Series | None) -> pd.DataFrame:
    """One row per series QC scored and truth judged: ids, type, QC score, keep, truth Dice, hard flag."""
    cols = ["study_id", "series_id", "series_type", "score", "keep"]
    table = report[cols].merge(dice[["series_id", "dice"]], on="series_id", how="inner")
    table = table.rename(columns={"score": "qc_score", "dice": "truth_dice"})
    table["hard"] = table["study_id"].map(hard).fillna(False).astype(bool) if hard is not None else False
    return table.sort_values("series_id").reset_index(drop=True)


def _spearman(frame: pd.DataFrame) -> float:
    """Spearman of ``qc_score`` with ``truth_dice`` (NaN: fewer than 3 series or a constant column)."""
    finite = frame[np.isfinite(frame["truth_dice"].astype(float))]
    if len(finite) < 3 or finite["qc_score"].nunique() < 2 or finite["truth_dice"].nunique() < 2:
        return float("nan")
    return float(spearmanr(finite["qc_score"], finite["truth_dice"]).statistic)


def truth_metrics(table: pd.DataFrame) -> dict[str, float]:
    """How well QC ranks masks against truth, from a :func:`truth_table`.

    - ``qc/truth_spearman``: Spearman of the QC score with the truth Dice over all series;
    - ``qc/truth_spearman/<type>``: the same within one series type, and
      ``qc/truth_spearman_within_type`` their mean weighted by series count. Each series type
      trains its own nnU-Net, so a drop decision trades masks of one type against each other;
      and truth Dice is not comparable across types (sagittal masks carry large anatomy classes);
    - ``qc/hard_case_auroc``: AUROC of a low QC score for the series of the phantom's hard cases.

    Each is left out where it is undefined (fewer than 3 series, a constant column, one class only).
    """
    out = {"qc/truth_n_series": float(len(table)), "qc/truth_n_hard": float(table["hard"].sum())}
    per_type = {t: (_spearman(g), len(g)) for t, g in table.groupby("series_type")}
    values = {
        "qc/truth_spearman": _spearman(table),
        **{f"qc/truth_spearman/{slug(t)}": r for t, (r, _) in per_type.items()},
    }
    weighted = [(r, n) for r, n in per_type.values() if np.isfinite(r)]
    if weighted:
        rs, ns = zip(*weighted, strict=True)
        values["qc/truth_spearman_within_type"] = float(np.average(rs, weights=ns))
    out.update({k: v for k, v in values.items() if np.isfinite(v)})
    if table["hard"].nunique() == 2:
        out["qc/hard_case_auroc"] = float(roc_auc_score(table["hard"], -table["qc_score"]))
    return out
