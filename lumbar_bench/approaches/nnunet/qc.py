"""Stage 3: score every series' pseudo-masks for plausibility, then keep, drop or override.

Signals, each a pass rate in [0, 1] (the score is their mean):

- ``vertebra_count``: at least ``min_vertebrae`` vertebrae and ``min_discs`` discs on the mid slice;
- ``order``: discs alternate with vertebrae from the bottom up;
- ``components``: few vertebra fragments (components below the minimum area);
- ``area_ratio``: vertebra areas agree (coefficient of variation) and regions are sized like anatomy;
- ``level``: the coordinate lies at the disc of its annotated level (the anatomy agrees);
- ``side``: left/right conditions sit on the slice (or half image) of their side;
- ``inside``: the coordinate lies inside the image.

A manual CSV (``series_id,action`` with ``include``/``exclude``) overrides the score.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from lumbar_bench.errors import ConfigError

log = logging.getLogger(__name__)

CHECKS: tuple[str, ...] = ("vertebra_count", "order", "components", "area_ratio", "level", "side", "inside")


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


def _sided(condition: str) -> str:
    return "left" if condition.startswith("left_") else "right" if condition.startswith("right_") else ""


def score_series(series: pd.Series, coords: pd.DataFrame, cfg: QCConfig) -> dict[str, float]:
    """Pass rate of every check for one series (NaN where a check does not apply)."""
    out = dict.fromkeys(CHECKS, float("nan"))
    sagittal = str(series["series_type"]).startswith("Sagittal")
    out["vertebra_count"] = float(
        series["n_vertebrae"] >= cfg.min_vertebrae and series["n_discs"] >= cfg.min_discs
    )
    out["order"] = float(bool(series["order_ok"]))
    if sagittal:
        out["components"] = float(series["n_fragments"] <= cfg.max_fragments)
        cv = series["area_cv"]
        area_ok = [bool(np.isnan(cv) or cv <= cfg.max_area_cv)]
        ratio = coords["region_area"] / coords["vertebra_area"].replace(0, np.nan)
        lo, hi = cfg.region_ratio
        area_ok += [bool(np.isfinite(r) and lo <= r <= hi) for r in ratio]
        out["area_ratio"] = float(np.mean(area_ok))
    if len(coords):
        out["level"] = float((coords["level_from_masks"].fillna("") == coords["level"]).mean())
        sides = coords["condition"].map(_sided)
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


def run_qc(stage_dir: Path, cfg: QCConfig) -> pd.DataFrame:
    """QC report: one row per series with every check, the score, the decision and the reasons."""
    series = pd.read_csv(Path(stage_dir) / "series.csv")
    coords = pd.read_csv(Path(stage_dir) / "coords.csv", keep_default_na=False, na_values=[""])
    manual = read_manual(cfg.manual)
    rows = []
    for _, s in series.iterrows():
        checks = score_series(s, coords[coords["series_id"] == s["series_id"]], cfg)
        values = [v for v in checks.values() if np.isfinite(v)]
        score = float(np.mean(values)) if values else 0.0
        reasons = [k for k, v in checks.items() if np.isfinite(v) and v < 1.0]
        keep = score >= cfg.threshold
        action = manual.get(int(s["series_id"]), "")
        if action:
            keep = action == "include"
            reasons.append(f"manual_{action}")
        rows.append(
            {
                "study_id": int(s["study_id"]),
                "series_id": int(s["series_id"]),
                "series_type": s["series_type"],
                **{f"check_{k}": v for k, v in checks.items()},
                "score": score,
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
