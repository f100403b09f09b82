"""Fixed, versioned, study-level K-fold splits.

A split is a JSON file mapping every study to a fold, with a sha256 digest over its
content. Once written it is frozen: :func:`load_split` refuses a file whose digest
does not match, and runs record the digest so that only comparable runs are ranked
together.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from lumbar_bench.constants import LABEL_COLUMNS
from lumbar_bench.core.errors import SplitError
from lumbar_bench.core.files import write_text_atomic

SPLIT_VERSION = 1


@dataclass(frozen=True)
class Split:
    """Study-level fold assignment with its provenance."""

    folds: int
    seed: int
    assignment: dict[int, int]
    data_digest: str = ""

    @property
    def digest(self) -> str:
        """sha256 of the canonical content; changes with any assignment, seed or fold count."""
        return _digest(self.folds, self.seed, self.assignment)

    def studies(self, fold: int) -> list[int]:
        """Sorted study ids held out in ``fold``."""
        self._check_fold(fold)
        return sorted(s for s, f in self.assignment.items() if f == fold)

    def train_studies(self, fold: int) -> list[int]:
        """Sorted study ids of every fold but ``fold``."""
        self._check_fold(fold)
        return sorted(s for s, f in self.assignment.items() if f != fold)

    def _check_fold(self, fold: int) -> None:
        if not 0 <= fold < self.folds:
            raise SplitError(f"fold {fold} does not exist; this split has folds 0..{self.folds - 1}")


def _digest(folds: int, seed: int, assignment: dict[int, int]) -> str:
    payload = json.dumps(
        {
            "version": SPLIT_VERSION,
            "folds": folds,
            "seed": seed,
            "assignment": {str(k): v for k, v in sorted(assignment.items())},
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def subset_studies(studies: list[int], limit: int | None) -> list[int]:
    """A deterministic subset of ``studies`` (ranked by a hash of the id), sorted; ``None`` keeps all."""
    if limit is None or len(studies) <= limit:
        return sorted(studies)
    ranked = sorted(studies, key=lambda s: hashlib.blake2b(str(s).encode(), digest_size=8).digest())
    return sorted(ranked[:limit])


def stratification_key(labels: pd.DataFrame) -> np.ndarray:
    """Per-study stratum: number of Severe labels (0, 1, 2+) x any Moderate, merged when rare."""
    codes = labels[list(LABEL_COLUMNS)].to_numpy()
    severe = np.minimum((codes == 2).sum(axis=1), 2)
    moderate = (codes == 1).any(axis=1).astype(int)
    return severe * 2 + moderate


def make_split(labels: pd.DataFrame, folds: int = 5, seed: int = 0, data_digest: str = "") -> Split:
    """Deterministic study-level K-fold split, stratified so that Severe reaches every fold.

    Studies are dealt round-robin within each stratum after a seeded shuffle, which
    balances the strata across folds even when a stratum is smaller than ``folds``.
    """
    if folds < 2:
        raise SplitError(f"--folds must be at least 2, got {folds}")
    studies = np.asarray(labels.index, dtype=np.int64)
    if len(studies) < folds:
        raise SplitError(f"{len(studies)} studies cannot fill {folds} folds")
    keys = stratification_key(labels)
    rng = np.random.default_rng(seed)
    assignment: dict[int, int] = {}
    offset = 0
    for key in sorted(set(keys.tolist()), reverse=True):
        members = np.sort(studies[keys == key])
        rng.shuffle(members)
        for i, study in enumerate(members):
            assignment[int(study)] = (offset + i) % folds
        offset += len(members)
    return Split(folds=folds, seed=seed, assignment=assignment, data_digest=data_digest)


def save_split(split: Split, path: Path) -> Path:
    """Write ``split`` as JSON (with its digest), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "version": SPLIT_VERSION,
        "folds": split.folds,
        "seed": split.seed,
        "data_digest": split.data_digest,
        "digest": split.digest,
        "n_studies": len(split.assignment),
        "assignment": {str(k): v for k, v in sorted(split.assignment.items())},
    }
    write_text_atomic(path, json.dumps(doc, indent=1) + "\n")
    return path


def load_split(path: Path) -> Split:
    """Read a split file; a malformed file or a digest mismatch raises SplitError."""
    try:
        text = Path(path).read_text()
        doc = json.loads(text)
        pairs = dict(json.loads(text, object_pairs_hook=list))["assignment"]
        check_leakage(pairs)
        assignment = {int(k): int(v) for k, v in pairs}
        split = Split(int(doc["folds"]), int(doc["seed"]), assignment, doc.get("data_digest", ""))
        stored = doc["digest"]
    except FileNotFoundError:
        raise SplitError(f"{path}: split file not found") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise SplitError(f"{path}: not a lumbar-bench split file ({exc!r})") from None
    if split.digest != stored:
        raise SplitError(
            f"{path}: digest mismatch (file says {stored[:12]}, content is {split.digest[:12]}); "
            "splits are frozen, make a new one with `lumbar-bench splits`"
        )
    folds = set(split.assignment.values())
    if folds != set(range(split.folds)):
        raise SplitError(
            f"{path}: folds {sorted(folds)} do not match 0..{split.folds - 1} (empty or extra fold)"
        )
    return split


def check_leakage(pairs: list[tuple[str, int]]) -> None:
    """Raise SplitError if a study is assigned more than once (to one fold or two)."""
    seen: dict[str, int] = {}
    for study, fold in pairs:
        if study in seen:
            raise SplitError(f"leakage: study {study} is assigned to folds {seen[study]} and {fold}")
        seen[study] = fold


def check_covers(split: Split, study_ids: list[int], path: Path | str = "split") -> None:
    """Raise SplitError if labelled studies of the data are missing from the split."""
    missing = sorted(set(study_ids) - set(split.assignment))
    if missing:
        raise SplitError(
            f"{path}: {len(missing)} labelled studies are not in the split (e.g. {missing[0]}); "
            "was it made for other data?"
        )
