"""The configuration of ``lsdc-2.5d``: localisers, crops, grader and the three training aids.

:class:`Lsdc25dConfig` lives apart from :mod:`.approach` so that the stage modules (:mod:`.sets`)
can take it without importing the approach that runs them.
"""

from __future__ import annotations

from dataclasses import dataclass

from lumbar_bench.approaches.lsdc25d import grader as gr
from lumbar_bench.approaches.lsdc25d import localize as loc
from lumbar_bench.constants import SERIES_TYPES
from lumbar_bench.core.errors import ConfigError


@dataclass(frozen=True)
class Lsdc25dConfig:
    """Localisers (``loc_*``), crops, grader, and three training aids: jitter, noise_filter, flip."""

    loc_size: int = 64
    #: Epochs per series type (sagittal T1, sagittal T2/STIR, axial T2): T2 must tell the discs
    #: apart; T1 is searched near the T2 levels, the axial points sit on known slices.
    loc_epochs: tuple[int, ...] = (12, 20, 8)
    loc_extra_slices: int = 3
    loc_batch: int = 16
    loc_lr: float = 2e-3
    loc_sigma: float = 1.5
    loc_sigma_z: float = 1.0
    loc_pos_weight: float = 20.0
    loc_depth: int = 3
    loc_decoder: tuple[int, ...] = (64, 32, 16)
    #: Pixels per side of every crop slice. 64 rather than 48: the foramina and the lateral
    #: recesses are a few pixels wide at 48 (full fold 0, three seeds: 0.442 against 0.470).
    crop_size: int = 64
    crop_depth: int = 1
    window: float = 1.0
    encoder: str = "mobilenet_v3_small"
    weights: str = ""
    epochs: int = 16
    lr: float = 1e-3
    studies_per_batch: int = 4
    any_weight: float = 1.0
    #: Epochs without a better validation score before the grader stops. The validation part is
    #: small and the moving average lags early on, so by default the whole cosine schedule runs.
    patience: int = 16
    #: Keep the weights of the best validation epoch instead of the last ones. Off: on 24
    #: validation studies the best epoch is partly luck (measured in the README).
    keep_best: bool = False
    #: Decay of the moving average of the grader's weights (per step) that is validated and kept.
    ema: float = 0.98
    val_fraction: float = 0.15
    calibrate: bool = True
    #: Aid: train on crops moved by up to ``jitter_slices`` slices and ``jitter_mm`` mm.
    jitter: bool = True
    jitter_variants: int = 3
    jitter_slices: int = 2
    jitter_mm: float = 3.0
    #: Aid: drop training labels whose out-of-fold probability is below ``noise_threshold``.
    noise_filter: bool = False
    noise_threshold: float = 0.05
    noise_epochs: int = 4
    #: Aid: mirror right-side crops onto the left, so one model grades both sides.
    flip: bool = True
    #: Test-time augmentation: the grader's logits are averaged over the crop and its 8
    #: in-plane neighbours ``tta_mm`` away (0: the crop alone).
    tta_mm: float = 1.5

    @classmethod
    def for_subset(cls, subset: str) -> Lsdc25dConfig:
        """``ci``: seconds-long plumbing; ``small`` and ``full``: the measured schedule."""
        if subset == "ci":
            return cls(
                loc_size=48,
                loc_epochs=(3, 3, 3),
                loc_extra_slices=2,
                crop_size=32,
                epochs=3,
                patience=3,
                ema=0.0,
                jitter_variants=1,
                noise_epochs=1,
            )
        return cls()

    def localizer(self, series_type: str) -> loc.LocalizerSettings:
        """The settings of ``series_type``'s localiser."""
        if len(self.loc_epochs) != len(SERIES_TYPES):
            raise ConfigError(f"loc_epochs needs {len(SERIES_TYPES)} values, one per series type")
        return loc.LocalizerSettings(
            self.loc_size,
            self.loc_epochs[SERIES_TYPES.index(series_type)],
            self.loc_extra_slices,
            self.loc_batch,
            self.loc_lr,
            self.loc_sigma,
            self.loc_sigma_z,
            self.loc_pos_weight,
            self.loc_depth,
            tuple(self.loc_decoder),
        )

    def schedule(self) -> gr.Schedule:
        """The grader's schedule."""
        return gr.Schedule(
            self.epochs,
            self.lr,
            self.studies_per_batch,
            self.any_weight,
            self.patience,
            self.ema,
        )


__all__ = ["Lsdc25dConfig"]
