"""Shared fixtures: a tiny phantom in a temporary directory, built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

TINY = {"studies": 30, "size": 64, "seed": 3}


@pytest.fixture(scope="session")
def tiny_phantom(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 30-study, 64 px phantom (RSNA + SPIDER + truth layouts); read-only for tests."""
    from lumbar_bench.data.phantom.synth import PhantomConfig, synthesize

    out = tmp_path_factory.mktemp("phantom")
    synthesize(out, PhantomConfig(**TINY), progress=False)
    return out


@pytest.fixture
def tracking_uri(tmp_path: Path) -> str:
    """A fresh MLflow sqlite store for one test."""
    return f"sqlite:///{tmp_path / 'mlflow.db'}"
