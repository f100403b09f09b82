"""Shared fixtures: a tiny phantom built once per session, and the CI gate run once per session."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from lumbar_bench.gate.baseline import Baseline
    from lumbar_bench.gate.check import CheckRequest, Verdict

#: Session fixtures of real services, one module each (tests/fixtures/).
pytest_plugins = ["tests.fixtures.tracking_server", "tests.fixtures.slurm"]

TINY = {"studies": 30, "size": 64, "seed": 3}
REPO = Path(__file__).resolve().parents[1]
BASELINE = REPO / "baselines" / "ci.json"
#: Kept between sessions (ignored by git): the gate's default phantom (in cache/, shared with ``make gate``)
#: and its last table.
CI_WORK = REPO / ".ci-work"
_GATE_TEXT = pytest.StashKey[str]()


@pytest.fixture(scope="session")
def tiny_phantom(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 30-study, 64 px phantom (RSNA + SPIDER + truth layouts); read-only for tests."""
    from lumbar_bench.data.phantom.synth import PhantomConfig, synthesize

    out = tmp_path_factory.mktemp("phantom")
    synthesize(out, PhantomConfig(**TINY), progress=False)
    return out


@pytest.fixture(scope="session")
def default_phantom() -> Path:
    """The default 200-study phantom, generated once into ``.ci-work/`` (shared with the gate)."""
    from lumbar_bench.data import defaults

    return defaults.ensure_phantom(CI_WORK / "cache", progress=False)


@pytest.fixture(scope="session")
def _empty_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLflow sqlite store created (and schema-migrated) once: 1.3 s here, where a copy takes 0.04 s."""
    from lumbar_bench.tracking.search import search_runs

    path = tmp_path_factory.mktemp("empty-store") / "mlflow.db"
    search_runs(f"sqlite:///{path}", "none")  # opening the store creates and migrates it
    return path


@pytest.fixture
def tracking_uri(tmp_path: Path, _empty_store: Path) -> str:
    """A fresh MLflow sqlite store for one test (a copy of the session's empty one)."""
    shutil.copyfile(_empty_store, tmp_path / "mlflow.db")
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


@dataclass(frozen=True)
class GateSession:
    """The gate's runs: every ``ci`` configuration of ``baselines/ci.json``, trained once per session."""

    request: CheckRequest
    baseline: Baseline
    verdicts: dict[str, Verdict]

    def run_id(self, approach: str) -> str:
        """The gate's run of ``approach``."""
        return self.verdicts[approach].observed.run_id


@pytest.fixture(scope="session")
def gate(
    tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config, default_phantom: Path
) -> GateSession:
    """Run the CI regression gate (``lumbar-bench check baselines/ci.json``) once for the session.

    Tests that need a trained ``ci`` run (smoke, stage reuse, breaking an approach) read the
    gate's store instead of training again, so ``make test`` trains each configuration once.
    The default phantom is generated once into ``.ci-work/``; the store and caches are fresh.
    """
    from lumbar_bench.gate import check
    from lumbar_bench.gate.baseline import Baseline

    root = tmp_path_factory.mktemp("gate")
    request = check.CheckRequest(
        BASELINE,
        tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
        cache_dir=root / "cache",
        data_dir=default_phantom,
    )
    baseline = Baseline.load(BASELINE)
    verdicts = check.check(request)
    text = check.render(verdicts, check.ungated(baseline))
    (CI_WORK / "gate.txt").write_text(text + "\n")
    pytestconfig.stash[_GATE_TEXT] = text
    return GateSession(request, baseline, {v.approach: v for v in verdicts})


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    """Print the gate's table at the end of the session, when the gate ran."""
    text = config.stash.get(_GATE_TEXT, None)
    if text:
        terminalreporter.section("CI regression gate (baselines/ci.json)")
        terminalreporter.write_line(text)
