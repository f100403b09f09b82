"""Every benchmark records the machine it ran on.

The machine description (CPU model, cores, RAM, GPU, torch/numpy versions and thread
count) goes into pytest-benchmark's ``machine_info`` of the saved JSON and into each
benchmark's ``extra_info["machine"]``, so a figure never travels without its machine.
"""

from __future__ import annotations

import logging
import os
import platform
from functools import cache
from importlib import metadata
from pathlib import Path

import pytest


def _cpu_model() -> str:
    """CPU model from /proc/cpuinfo (Linux), else what platform knows."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_gb() -> float:
    """Physical memory in GiB (POSIX), NaN where unknown."""
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        return float("nan")


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "absent"


@cache
def machine() -> dict[str, object]:
    """What the benchmarks ran on (computed once per session)."""
    import torch

    info: dict[str, object] = {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "ram_gb": _ram_gb(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "numpy": _version("numpy"),
        "pandas": _version("pandas"),
        "pydicom": _version("pydicom"),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
        "load_avg_1min_at_start": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }
    return info


_SKIPPED: list[str] = []


def pytest_addoption(parser: pytest.Parser) -> None:
    """Sizes of the full-size ingest run (``test_synth_and_prepare``); the defaults are CI's scale."""
    group = parser.getgroup("lumbar-bench")
    group.addoption("--ingest-studies", type=int, default=40, help="phantom studies (real size: 1975)")
    group.addoption("--ingest-size", type=int, default=384, help="image size in px (real size: 512)")


def _saved_runs(config: pytest.Config) -> list[Path] | None:
    """Saved runs of this machine id in a file storage; None for other storages (left alone)."""
    from pytest_benchmark.utils import get_machine_id

    storage = str(config.getoption("benchmark_storage"))
    if "://" in storage and not storage.startswith("file://"):
        return None
    root = Path(storage.removeprefix("file://"))
    root = root if root.is_absolute() else Path(config.invocation_params.dir) / root
    return sorted((root / get_machine_id()).glob("[0-9][0-9][0-9][0-9]_*.json"))


def pytest_configure(config: pytest.Config) -> None:
    """The first saved run on a machine has nothing to compare with: save it, compare nothing.

    pytest-benchmark turns ``--benchmark-compare-fail`` without a previous run into a usage
    error; ``make bench`` and ``tox -e bench`` must still pass the first time.
    """
    if config.getoption("benchmark_compare", None) is not True or _saved_runs(config) != []:
        return
    logging.getLogger(__name__).warning(
        "no saved benchmark run for this machine yet: this run is the baseline"
    )
    config.option.benchmark_compare = []
    config.option.benchmark_compare_fail = None


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Remember skipped benchmarks and why, for the saved JSON."""
    if report.skipped and report.when in ("setup", "call"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        _SKIPPED.append(f"{report.nodeid}: {reason}")


def pytest_benchmark_update_json(config: pytest.Config, benchmarks: list, output_json: dict) -> None:
    """Record skipped benchmarks (with their reasons) in the saved JSON."""
    output_json["skipped"] = list(_SKIPPED)


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict) -> None:
    """Add the lumbar-bench machine description to the saved JSON's ``machine_info``."""
    machine_info["lumbar_bench"] = machine()


@pytest.fixture(autouse=True)
def _record_machine(request: pytest.FixtureRequest) -> None:
    """Put the machine description into ``extra_info`` of every benchmark."""
    if "benchmark" in request.fixturenames:
        request.getfixturevalue("benchmark").extra_info["machine"] = machine()
