"""Export 2D cases as an nnU-Net v2 raw dataset (``DatasetXXX_Name``) with an optional ignore label."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

log = logging.getLogger(__name__)

FILE_ENDING = ".nii.gz"


@dataclass(frozen=True)
class Case:
    """One 2D training case: an image in [0, 1] and its label map (``ignore`` value allowed)."""

    case_id: str
    study_id: int
    image: np.ndarray
    label: np.ndarray


def dataset_name(dataset_id: int, name: str) -> str:
    """nnU-Net's folder name: ``Dataset501_SagittalT1``."""
    clean = "".join(ch for ch in name if ch.isalnum())
    return f"Dataset{int(dataset_id):03d}_{clean}"


def labels_json(class_names: list[str], ignore: bool) -> dict[str, int]:
    """``dataset.json`` labels: ``background`` first, then the classes, ``ignore`` last (highest)."""
    labels = {name: i for i, name in enumerate(class_names)}
    if ignore:
        labels["ignore"] = len(class_names)
    return labels


def _write_2d(array: np.ndarray, path: Path) -> None:
    """Write a 2D array as a NIfTI image with unit spacing."""
    sitk.WriteImage(sitk.GetImageFromArray(array), str(path), useCompression=True)


def export_dataset(
    raw: Path, dataset_id: int, name: str, cases: Iterable[Case], class_names: list[str], ignore: bool
) -> Path:
    """Write ``imagesTr``, ``labelsTr`` and ``dataset.json`` under ``raw``; returns the dataset folder."""
    folder = raw / dataset_name(dataset_id, name)
    (folder / "imagesTr").mkdir(parents=True, exist_ok=True)
    (folder / "labelsTr").mkdir(parents=True, exist_ok=True)
    files = {}
    for case in cases:
        image = f"imagesTr/{case.case_id}_0000{FILE_ENDING}"
        label = f"labelsTr/{case.case_id}{FILE_ENDING}"
        _write_2d(case.image.astype(np.float32), folder / image)
        _write_2d(case.label.astype(np.uint8), folder / label)
        files[case.case_id] = {"images": [image], "label": label}
    n = len(files)
    # an explicit file list spares nnU-Net its directory scan (a 12-process pool per call)
    doc = {
        "channel_names": {"0": "MRI"},
        "labels": labels_json(class_names, ignore),
        "numTraining": n,
        "file_ending": FILE_ENDING,
        "name": name,
        "dataset": files,
    }
    (folder / "dataset.json").write_text(json.dumps(doc, indent=1))
    log.info(
        "nnU-Net dataset %s: %d cases, %d classes%s",
        folder.name,
        n,
        len(class_names),
        " + ignore" if ignore else "",
    )
    return folder


def study_folds(case_studies: dict[str, int], train_studies: list[int], val_studies: list[int]) -> dict:
    """One ``splits_final.json`` entry from study lists: every case of a study stays on one side."""
    train = sorted(c for c, s in case_studies.items() if s in set(train_studies))
    val = sorted(c for c, s in case_studies.items() if s in set(val_studies))
    return {"train": train, "val": val or train[:1]}


def kfold_studies(studies: list[int], k: int, seed: int) -> list[list[int]]:
    """Deterministic study-level k-fold partition of ``studies`` (seeded shuffle, round-robin)."""
    rng = np.random.default_rng(seed)
    order = np.array(sorted(studies))
    rng.shuffle(order)
    return [sorted(int(s) for s in order[i::k]) for i in range(k)]
