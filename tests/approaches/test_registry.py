import subprocess
import sys

import pytest

from lumbar_bench.approaches import registry
from lumbar_bench.core.errors import ConfigError


def test_builtin_approaches_are_listed():
    names = [s.name for s in registry.list_approaches()]
    assert {"prior", "resnet18", "nnunet-raw", "nnunet-qc", "nnunet-refined"} <= set(names)
    assert [s.name for s in registry.list_approaches("nnunet*")] == [
        "nnunet-qc",
        "nnunet-raw",
        "nnunet-refined",
    ]


def test_duplicate_registration_raises():
    with pytest.raises(ValueError, match="already registered"):
        registry.register(registry.ApproachSpec("prior", "x:Y", "again"))


def test_bad_target_raises():
    with pytest.raises(ValueError, match="module:Class"):
        registry.register(registry.ApproachSpec("brand-new", "no_colon", "bad"))


def test_unknown_name_suggests_close_names():
    with pytest.raises(ConfigError, match="did you mean resnet18"):
        registry.get_spec("resnet-18")
    with pytest.raises(ConfigError, match="available: "):
        registry.get_spec("zzz")


def test_every_spec_has_a_description_and_ci_budget():
    for spec in registry.list_approaches():
        assert spec.description
        assert "ci" in spec.budgets and spec.budgets["ci"][0] > 0


def test_listing_imports_neither_torch_nor_nnunet():
    code = (
        "import sys; from lumbar_bench.cli import main; main(['list']);"
        "heavy = [m for m in ('torch', 'nnunetv2', 'mlflow', 'pydicom') if m in sys.modules];"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_a_subset_without_a_budget_gets_the_default() -> None:
    from lumbar_bench.approaches.registry import DEFAULT_BUDGET, ApproachSpec
    from lumbar_bench.core.budget import Budget

    spec = ApproachSpec("x", "m:C", "d", budgets={"ci": (3.0, "gpu")})
    assert spec.budget("ci") == Budget(3.0, "gpu")
    assert spec.budget("small") == Budget(*DEFAULT_BUDGET) == Budget(60.0, "cpu")
