"""Shared steps of the segmentation route, each cached under its config hash and inputs.

``vertebrae`` (smp U-Net on SPIDER) -> ``pseudo_masks`` (coordinates painted on the
annotated slices) -> ``qc`` (plausibility per series) -> ``nnunet_*`` (export, plan,
train, predict) -> ``grading`` (probabilities -> 25 x 3 per study).
"""
