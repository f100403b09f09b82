"""Stage fixtures on the session's tiny phantom: a quickly trained vertebra U-Net and pseudo-masks."""

from __future__ import annotations

import pytest

from lumbar_bench.approaches.nnunet import pipeline as pl
from lumbar_bench.approaches.nnunet.pseudo_masks import MaskConfig
from lumbar_bench.approaches.nnunet.vertebrae import VertebraConfig
from lumbar_bench.data.rsna import RSNAData

VCFG = VertebraConfig(
    size=64,
    encoder="resnet18",
    encoder_depth=3,
    decoder_channels=(32, 16, 8),
    epochs=10,
    lr=3e-3,
    slices_per_case=6,
)
MCFG = MaskConfig(size=64)


@pytest.fixture(scope="session")
def phantom_data(tiny_phantom, tmp_path_factory) -> RSNAData:
    return RSNAData.load(tiny_phantom, "train", tmp_path_factory.mktemp("series"))


@pytest.fixture(scope="session")
def stage_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("stage-cache")


@pytest.fixture(scope="session")
def vertebrae(phantom_data, stage_cache):
    result, metrics = pl.vertebra_stage(phantom_data, VCFG, "", stage_cache, "cpu", 0, False, None)
    return result, metrics


@pytest.fixture(scope="session")
def masks(phantom_data, vertebrae, stage_cache):
    studies = sorted(phantom_data.labels.index)[:16]
    return pl.mask_stage(phantom_data, studies, vertebrae[0], VCFG, MCFG, stage_cache, "cpu", False), studies
