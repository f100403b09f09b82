"""nnU-Net's fingerprint extractor and preprocessor, run case by case in this process.

nnU-Net's own ``run`` methods start a *spawn* process pool. Each worker re-imports the
caller's main module and nnunetv2 (2-5 s each), longer than the whole computation for a
few hundred small 2D slices. These subclasses override only ``run`` and reuse nnU-Net's
per-case methods (``analyze_case``, ``run_case_save``), so the fingerprint, the plans and
the preprocessed data are the ones nnU-Net computes. Imported only when a dataset is planned.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from batchgenerators.utilities.file_and_folder_operations import load_json, save_json
from nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor import DatasetFingerprintExtractor
from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_dataset_json
from nnunetv2.paths import nnUNet_preprocessed, nnUNet_raw
from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor
from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
from nnunetv2.utilities.utils import get_filenames_of_train_images_and_targets

#: Foreground pixels sampled for the intensity statistics (nnU-Net: 10^8, sized for 3D volumes).
FOREGROUND_SAMPLES = 100_000


class InProcessFingerprint(DatasetFingerprintExtractor):
    """nnU-Net's dataset fingerprint, computed in this process from 10^5 foreground pixels."""

    def __init__(self, dataset_name_or_id: int | str, num_processes: int = 1, verbose: bool = False) -> None:
        super().__init__(dataset_name_or_id, num_processes, verbose)
        self.num_foreground_voxels_for_intensitystats = FOREGROUND_SAMPLES

    def run(self, overwrite_existing: bool = False) -> dict:
        """Write and return ``dataset_fingerprint.json`` (read back when it exists and not overwriting)."""
        target = Path(nnUNet_preprocessed) / self.dataset_name / "dataset_fingerprint.json"
        if target.is_file() and not overwrite_existing:
            return load_json(str(target))
        first = next(iter(self.dataset.values()))["images"][0]
        reader = determine_reader_writer_from_dataset_json(self.dataset_json, first)
        per_case = int(self.num_foreground_voxels_for_intensitystats // len(self.dataset))
        results = [
            self.analyze_case(c["images"], c["label"], reader, per_case) for c in self.dataset.values()
        ]
        fingerprint = {
            "spacings": [r[1] for r in results],
            "shapes_after_crop": [r[0] for r in results],
            "foreground_intensity_properties_per_channel": _intensity_statistics(
                [r[2] for r in results], len(self.dataset_json["channel_names"])
            ),
            "median_relative_size_after_cropping": np.median([r[4] for r in results], 0),
        }
        target.parent.mkdir(parents=True, exist_ok=True)
        save_json(fingerprint, str(target))
        return fingerprint


def _intensity_statistics(per_case: list[list[np.ndarray]], n_channels: int) -> dict[int, dict[str, float]]:
    """nnU-Net's per-channel foreground intensity statistics from each case's sampled pixels."""
    out = {}
    for ch in range(n_channels):
        values = np.concatenate([case[ch] for case in per_case])
        low, median, high = np.percentile(values, (0.5, 50.0, 99.5))
        out[ch] = {
            "mean": float(np.mean(values)),
            "median": float(median),
            "std": float(np.std(values)),
            "min": float(np.min(values)),
            "max": float(np.max(values)),
            "percentile_99_5": float(high),
            "percentile_00_5": float(low),
        }
    return out


class InProcessPreprocessor(DefaultPreprocessor):
    """nnU-Net's default preprocessing (the class the plans name), one case after another here."""

    def run(
        self,
        dataset_name_or_id: int | str,
        configuration_name: str,
        plans_identifier: str,
        num_processes: int = 1,
    ) -> None:
        """Preprocess every training case of one configuration into its ``data_identifier`` folder."""
        name = maybe_convert_to_dataset_name(dataset_name_or_id)
        base = Path(nnUNet_preprocessed) / name
        plans = PlansManager(str(base / f"{plans_identifier}.json"))
        config = plans.get_configuration(configuration_name)
        dataset_json = load_json(str(base / "dataset.json"))
        out = base / config.data_identifier
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        cases = get_filenames_of_train_images_and_targets(str(Path(nnUNet_raw) / name), dataset_json)
        for key, files in cases.items():
            self.run_case_save(str(out / key), files["images"], files["label"], plans, config, dataset_json)
