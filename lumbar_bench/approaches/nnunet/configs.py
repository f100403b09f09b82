"""The configs of ``nnunet-raw``, ``nnunet-qc`` and ``nnunet-refined``: every stage's settings.

:class:`NnUNetConfig` holds them all and hands each stage its own config (its cache key):
:meth:`~NnUNetConfig.vertebra`, :meth:`~NnUNetConfig.masks`, :meth:`~NnUNetConfig.qc`,
:meth:`~NnUNetConfig.plan` and :meth:`~NnUNetConfig.grading`. The variants differ only in
``variant`` (and ``nnunet-refined`` in its ``ci`` schedule). The approach classes are in
:mod:`.approach`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from lumbar_bench.approaches.nnunet.grading import GradingConfig
from lumbar_bench.approaches.nnunet.painting import MaskConfig
from lumbar_bench.approaches.nnunet.pipeline import PlanConfig
from lumbar_bench.approaches.nnunet.qc import QCConfig
from lumbar_bench.approaches.nnunet.vertebrae import VertebraConfig

#: The training masks a config can pick: every pseudo-mask, those passing QC, or self-refined ones.
VARIANTS = ("raw", "qc", "refined")


@dataclass(frozen=True)
class NnUNetConfig:
    """Every stage's settings; ``variant`` picks raw, QC'd or self-refined training masks."""

    variant: str = "raw"
    size: int = 128
    spider: str = ""
    weights: str = ""
    encoder: str = "resnet34"
    encoder_depth: int = 5
    decoder_channels: tuple[int, ...] = (256, 128, 64, 32, 16)
    vertebra_epochs: int = 30
    vertebra_batch: int = 16
    vertebra_slices: int = 0
    vertebra_lr: float = 1e-3
    along: float = 0.5
    across: float = 0.2
    axial_radius: float = 0.1
    ignore_ring: int = 1
    #: Left and right conditions share their classes; grading takes the side from the slice's place
    #: (a single 2D slice does not show which side it is on). ``false`` gives each side its own.
    merge_sides: bool = True
    qc_threshold: float = 0.8
    qc_manual: str = ""
    #: QC drops masks of this series type only (e.g. ``sagittal_t2``, the original manual pass); empty: all.
    qc_series: str = ""
    epochs: int = 100
    iterations: int = 50
    val_iterations: int = 10
    batch_size: int = 8
    lr: float = 1e-2
    optimizer: str = "sgd"
    save_every: int = 5
    features: tuple[int, ...] = (16, 32, 64, 128, 256)
    val_folds: int = 5
    refine_folds: int = 3
    blend: float = 0.6
    #: Fit the blend weight per score group on the held-out training studies (else ``blend`` as is).
    calibrate: bool = True
    #: One blend weight per score group (needs enough held-out studies; ``ci`` has 12 and shares one).
    calibrate_per_group: bool = True
    min_mass: float = 2.0
    #: Fraction of the budget left at the start of fit kept for evaluation, calibration and prediction.
    predict_reserve: float = 0.15
    overlays: int = 4
    #: torch threads while fitting and predicting (0 = leave as is; 1 avoids oversubscribing a shared CPU).
    threads: int = 0
    #: GPUs each nnU-Net trains on; more than 1 hands training to nnU-Net's own DDP (needs that many GPUs).
    num_gpus: int = 1

    @classmethod
    def for_subset(cls, subset: str) -> NnUNetConfig:
        """``ci``: 64 px, tiny networks, seconds per stage; ``small``: minutes; ``full``: the GPU schedule."""
        if subset == "ci":
            return cls(
                size=64,
                encoder="resnet18",
                encoder_depth=3,
                decoder_channels=(32, 16, 8),
                vertebra_epochs=10,
                vertebra_slices=6,
                vertebra_lr=3e-3,
                epochs=10,
                iterations=25,
                val_iterations=1,
                lr=3e-3,
                optimizer="adam",
                save_every=3,
                features=(8, 16, 32, 64),
                val_folds=4,
                refine_folds=2,
                min_mass=0.3,
                overlays=3,
                # fixed, so the gate's threads_1 measurement gives the same numbers. With 2 threads and
                # 10 x 25 iterations nnunet-raw takes 127 s from an empty cache here (1 thread and
                # 12 x 25: 177 s, too close to the 180 s budget on a slower CI machine)
                threads=2,
                predict_reserve=0.3,
                calibrate_per_group=False,
            )
        if subset == "small":
            return cls(
                size=96,
                encoder="resnet18",
                vertebra_epochs=30,
                vertebra_lr=3e-3,
                epochs=50,
                iterations=25,
                min_mass=0.5,
                refine_folds=2,
                lr=3e-3,
                optimizer="adam",
            )
        return cls()

    def vertebra(self) -> VertebraConfig:
        """Return the vertebra stage's config (its cache key)."""
        return VertebraConfig(
            size=self.size,
            encoder=self.encoder,
            encoder_depth=self.encoder_depth,
            decoder_channels=self.decoder_channels,
            epochs=self.vertebra_epochs,
            slices_per_case=self.vertebra_slices,
            lr=self.vertebra_lr,
            batch_size=self.vertebra_batch,
            weights=self.weights,
        )

    def masks(self) -> MaskConfig:
        """Return the pseudo-mask stage's config (its cache key)."""
        return MaskConfig(
            size=self.size,
            along=self.along,
            across=self.across,
            ignore_ring=self.ignore_ring,
            axial_radius=self.axial_radius,
            merge_sides=self.merge_sides,
        )

    def qc(self) -> QCConfig:
        """Return the mask QC's config (:class:`ConfigError` on a ``qc_series`` naming no series type)."""
        return QCConfig(threshold=self.qc_threshold, manual=self.qc_manual, series=self.qc_series)

    def plan(self) -> PlanConfig:
        """Return the nnU-Net ``2d_tiny`` network."""
        return PlanConfig(patch=self.size, batch_size=self.batch_size, features=self.features)

    def grading(self) -> GradingConfig:
        """How probabilities become grades."""
        return GradingConfig(size=self.size, min_mass=self.min_mass, blend=self.blend)


@dataclass(frozen=True)
class NnUNetQCConfig(NnUNetConfig):
    """``nnunet-qc``: only masks passing QC."""

    variant: str = "qc"


@dataclass(frozen=True)
class NnUNetRefinedConfig(NnUNetConfig):
    """``nnunet-refined``: QC'd stage 1, out-of-fold merge, stage 2."""

    variant: str = "refined"

    @classmethod
    def for_subset(cls, subset: str) -> NnUNetRefinedConfig:
        """As the other variants; on ``ci`` its nine trainings (2 folds + 1 per series type) are shorter.

        4 epochs x 15 iterations keep the run inside the 3-minute ``ci`` budget on a 2-core CI
        machine (8 x 20 took 191-218 s there).
        """
        config = super().for_subset(subset)
        return dataclasses.replace(config, epochs=4, iterations=15) if subset == "ci" else config
