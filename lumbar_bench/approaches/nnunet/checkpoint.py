"""Reading an nnU-Net checkpoint safely (``weights_only=True``); imports torch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

try:
    from numpy._core.multiarray import scalar
except ImportError:  # numpy < 2
    from numpy.core.multiarray import scalar


def load_checkpoint(path: Path) -> dict:
    """An nnU-Net checkpoint read with ``weights_only=True``.

    nnU-Net stores its logging and best EMA as numpy scalars; only those types (numpy's scalar
    reconstructor and float/int dtypes) are allowed besides tensors and Python containers.
    """
    dtypes = (np.dtypes.Float32DType, np.dtypes.Float64DType, np.dtypes.Int64DType)
    with torch.serialization.safe_globals([scalar, np.dtype, *dtypes]):
        return torch.load(path, map_location="cpu", weights_only=True)
