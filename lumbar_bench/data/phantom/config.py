"""What the phantom generator draws: :class:`PhantomConfig` and the generator's version.

Kept apart from :mod:`.synth` (which pulls the whole generator: scipy, pydicom, SimpleITK), so
that naming the default phantom (:func:`lumbar_bench.data.defaults.phantom_name`) stays light.
"""

from __future__ import annotations

from dataclasses import dataclass

from lumbar_bench.core.errors import ConfigError
from lumbar_bench.data.phantom import pathology

#: Bumped whenever the generated data changes for the same config (2: the Bayes-optimal oracle
#: file; 3: the joint disease model, real layout irregularities and blank-label rates; 4: the
#: level-to-level correlations and a reader whose errors act near the thresholds).
GENERATOR_VERSION = 4


@dataclass(frozen=True)
class PhantomConfig:
    """What to generate; the same config always writes the same data."""

    studies: int = 200
    seed: int = 0
    size: int = 128
    test_studies: int | None = None
    #: The reader's error on the latent degeneration, in units of its standard deviation.
    reader_noise: float = pathology.DEFAULT_READER_NOISE
    hard_case_rate: float = 0.10
    #: Scale on the real rates of layout irregularities and blank labels (0: all regular).
    irregularity: float = 1.0
    #: Label draws of the training cohort; the one closest to the real statistics is kept.
    cohort_draws: int = 8
    spider_cases: int = 12

    @property
    def n_test(self) -> int:
        """Test studies: ``test_studies`` or ``max(2, studies // 20)``."""
        return self.test_studies if self.test_studies is not None else max(2, self.studies // 20)

    def __post_init__(self) -> None:
        if (
            self.studies < 1
            or self.size < 32
            or self.n_test < 0
            or self.spider_cases < 0
            or self.cohort_draws < 1
        ):
            raise ConfigError(
                f"PhantomConfig: need studies >= 1, size >= 32, non-negative counts; got {self}"
            )
        for name in ("reader_noise", "hard_case_rate", "irregularity"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"PhantomConfig: {name} must lie in [0, 1], got {getattr(self, name)}")


__all__ = ["GENERATOR_VERSION", "PhantomConfig"]
