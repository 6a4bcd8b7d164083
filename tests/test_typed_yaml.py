"""The strict loader on a schema of its own: each rule once, with the message a user would see."""

from dataclasses import dataclass, field
from typing import Literal

import pytest

from detect.errors import ConfigError
from detect.typed_yaml import build, parse_overrides, ranged, ranged_tuple, set_dotted


@dataclass
class Inner:
    size: int = ranged(4, 1, 8)
    ratios: tuple[float, ...] = ranged_tuple(0.5, 1.0, low=0, low_open=True)


@dataclass
class Outer:
    mode: Literal["fast", "quality"] = "fast"
    limit: int | None = None
    rate: float = ranged(0.5, 0, 1, high_open=True)
    pair: tuple[int, int] = (1, 2)
    inner: Inner = field(default_factory=Inner)


def test_values_are_converted_and_defaults_kept():
    built = build(Outer, {"limit": 3, "rate": 0, "pair": [5, 6], "inner": {"ratios": [2, 3]}}, "x.yaml")
    assert built == Outer(limit=3, rate=0.0, pair=(5, 6), inner=Inner(size=4, ratios=(2.0, 3.0)))
    assert isinstance(built.rate, float) and isinstance(built.inner.ratios, tuple)
    assert build(Outer, {"limit": None}, "x.yaml").limit is None


@pytest.mark.parametrize("data, message", [
    ({"modes": "fast"}, "unknown key 'modes' (did you mean 'mode'?); valid keys here: mode, limit"),
    ({"inner": {"sise": 2}}, "unknown key 'inner.sise' (did you mean 'size'?)"),
    ({"mode": "slow"}, "key 'mode' is 'slow'; expected one of 'fast', 'quality'"),
    ({"limit": "3"}, "key 'limit' is '3'; expected int or null"),
    ({"limit": True}, "expected int or null"),                     # a YAML boolean is not a count
    ({"rate": 1}, "key 'rate' is 1.0; it must lie in [0, 1)"),     # the open upper bound
    ({"rate": float("nan")}, "expected a finite number"),
    ({"pair": [1, 2, 3]}, "key 'pair' is [1, 2, 3]; expected a list of 2 ints"),
    ({"inner": {"size": 9}}, "key 'inner.size' is 9; it must lie in [1, 8]"),
    ({"inner": {"ratios": [1, 0]}}, "key 'inner.ratios' is (1.0, 0.0); it must lie in (0, inf]"),
    ({"inner": 3}, "key 'inner' is 3; expected a mapping of Inner settings"),
])
def test_each_rule_is_a_one_line_error_naming_the_key_and_the_file(data, message):
    with pytest.raises(ConfigError, match="^x.yaml: ") as error:
        build(Outer, data, "x.yaml")
    assert message in str(error.value) and "\n" not in str(error.value)


@dataclass
class Window:
    low: int = 0
    high: int = 1

    def __post_init__(self):
        if self.low >= self.high:
            raise ConfigError(f"low ({self.low}) must be below high ({self.high})")


@dataclass
class Plot:
    window: Window = field(default_factory=Window)


def test_a_sections_own_check_names_the_section_and_the_file():
    with pytest.raises(ConfigError) as error:
        build(Plot, {"window": {"low": 3, "high": 2}}, "x.yaml")
    assert str(error.value) == "x.yaml: window: low (3) must be below high (2)"


def test_overrides_are_yaml_values_set_at_dotted_keys():
    tree = {"inner": {"size": 2}}
    for key, value in parse_overrides(["inner.ratios=[1, 2]", "limit=null", "mode=quality", "rate=0.25"]):
        set_dotted(tree, key, value, "command line")
    assert build(Outer, tree, "command line") == Outer(mode="quality", rate=0.25, inner=Inner(2, (1.0, 2.0)))
    with pytest.raises(ConfigError, match="'size' is not a section"):
        set_dotted(tree, "inner.size.x", 1, "command line")
    with pytest.raises(ConfigError, match="must look like key.sub=value"):
        parse_overrides(["rate"])
