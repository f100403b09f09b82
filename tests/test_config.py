from dataclasses import dataclass

import pytest

from lumbar_bench.config import apply_overrides, config_dict, config_from_dict, config_hash
from lumbar_bench.core.errors import ConfigError


@dataclass(frozen=True)
class Demo:
    epochs: int = 3
    lr: float = 0.1
    augment: bool = True
    weights: str = ""
    sizes: tuple[int, ...] = (1, 2)
    limit: int | None = None


def test_overrides_are_typed():
    cfg = apply_overrides(
        Demo(), ["epochs=7", "lr=0.5", "augment=false", "weights=/w.pt", "sizes=4,5", "limit=none"]
    )
    assert cfg == Demo(epochs=7, lr=0.5, augment=False, weights="/w.pt", sizes=(4, 5), limit=None)
    assert apply_overrides(Demo(), ["limit=3"]).limit == 3


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("nope=1", "unknown key"),
        ("epochs", "key=value"),
        ("epochs=x", "expected int"),
        ("augment=maybe", "boolean"),
    ],
)
def test_bad_overrides(item, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(Demo(), [item])


def test_hash_is_stable_and_sensitive():
    assert config_hash("a", Demo()) == config_hash("a", Demo())
    assert config_hash("a", Demo()) != config_hash("a", Demo(epochs=4))
    assert config_hash("a", Demo()) != config_hash("b", Demo())


def test_dict_roundtrip():
    cfg = Demo(sizes=(3, 4), limit=2)
    assert config_from_dict(Demo, config_dict(cfg)) == cfg
