"""Load a trained nnU-Net fold and predict class probabilities of 2D images in-process.

It imports torch and nnunetv2: the approach and its trainer import it only when they predict.
"""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path

import numpy as np
import torch
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from lumbar_bench.approaches.nnunet.checkpoint import load_checkpoint
from lumbar_bench.approaches.nnunet.log_stream import LogStream
from lumbar_bench.approaches.nnunet.trainer import TINY, trainer_class

log = logging.getLogger(__name__)


class Predictor:
    """An ``nnUNetPredictor`` built by hand from a fold folder (no trainer lookup, no process pools)."""

    def __init__(self, fold_dir: Path, device: str = "cpu", checkpoint: str = "checkpoint_final.pth") -> None:
        base = Path(fold_dir).parent
        plans = json.loads((base / "plans.json").read_text())
        dataset_json = json.loads((base / "dataset.json").read_text())
        ckpt = load_checkpoint(Path(fold_dir) / checkpoint)
        manager = PlansManager(plans)
        config = manager.get_configuration(TINY)
        label_manager = manager.get_label_manager(dataset_json)
        n_in = determine_num_input_channels(manager, config, dataset_json)
        network = trainer_class().build_network_architecture(
            manager, config, n_in, label_manager.num_segmentation_heads, enable_deep_supervision=False
        )
        with contextlib.redirect_stdout(LogStream()):
            self.predictor = nnUNetPredictor(
                tile_step_size=0.5,
                use_gaussian=True,
                use_mirroring=False,
                perform_everything_on_device=device != "cpu",
                device=torch.device(device),
                verbose=False,
                verbose_preprocessing=False,
                allow_tqdm=False,
            )
            self.predictor.manual_initialization(
                network, manager, config, [ckpt["network_weights"]], dataset_json, "HarnessTrainer", None
            )
        self.class_names = [
            k for k, v in sorted(dataset_json["labels"].items(), key=lambda kv: kv[1]) if k != "ignore"
        ]

    def probabilities(self, image: np.ndarray) -> np.ndarray:
        """Class probabilities ``(n_classes, H, W)`` of one 2D image in [0, 1]."""
        x = np.asarray(image, dtype=np.float32)[None, None]
        with contextlib.redirect_stdout(LogStream()):
            _, probs = self.predictor.predict_single_npy_array(
                x, {"spacing": (999.0, 1.0, 1.0)}, None, None, True
            )
        return np.asarray(probs[:, 0], dtype=np.float32)
