"""Strict typed YAML: a tree of dataclasses built from a YAML mapping, every value checked.

* an unknown key is an error naming the key, the closest valid one and the file;
* a value of the wrong type is an error naming the key, the expected type and the file;
* numeric fields declare their valid range (:func:`ranged`, :func:`ranged_tuple`), checked at load.

The schema itself (which sections and fields an experiment has) lives in :mod:`detect.config`.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import field
from typing import Any, Literal, Sequence

import yaml

from detect.errors import ConfigError


def ranged(default: Any, low: float | None = None, high: float | None = None, *,
           low_open: bool = False, high_open: bool = False) -> Any:
    """A dataclass field whose value (or each element of it) must lie in ``[low, high]``; an end is
    open with ``low_open`` / ``high_open``, absent when None."""
    return field(default=default, metadata={"range": (low, high, low_open, high_open)})


def ranged_tuple(*values: Any, low: float | None = None, high: float | None = None, low_open: bool = False) -> Any:
    """A tuple field with default ``values``, each element in ``[low, high]`` (``(low, high]`` if ``low_open``)."""
    return field(default_factory=lambda: tuple(values), metadata={"range": (low, high, low_open, False)})


def _type_name(kind: Any) -> str:
    """The type as a YAML user knows it: ``None`` is YAML's ``null``."""
    if kind is type(None):
        return "null"
    return getattr(kind, "__name__", None) or str(kind).replace("typing.", "")


def _convert(value: Any, kind: Any, key: str, source: str) -> Any:
    """Check/convert a YAML value to the annotated type ``kind``; raise ConfigError naming ``key``."""
    origin = typing.get_origin(kind)
    args = typing.get_args(kind)

    def fail(expected: str) -> ConfigError:
        return ConfigError(f"key {key!r} is {value!r}; expected {expected}", source)

    if dataclasses.is_dataclass(kind):
        if not isinstance(value, dict):
            raise fail(f"a mapping of {kind.__name__} settings")
        return build(kind, value, source, key + ".")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for option in (a for a in args if a is not type(None)):
            try:
                return _convert(value, option, key, source)
            except ConfigError:
                continue
        raise fail(" or ".join(_type_name(a) for a in args))
    if origin is Literal:
        if value not in args:
            raise fail("one of " + ", ".join(repr(a) for a in args))
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise fail(f"a list of {_type_name(args[0])}")
        if origin is tuple and Ellipsis not in args and len(value) != len(args):
            raise fail(f"a list of {len(args)} {_type_name(args[0])}s")
        items = [_convert(v, args[0], f"{key}[{i}]", source) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if kind is bool:
        if not isinstance(value, bool):
            raise fail("true or false")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail("an integer")
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise fail("a number")
        if not math.isfinite(value):
            raise fail("a finite number")
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            raise fail("a string")
        return value
    raise fail(_type_name(kind))


def _check_range(value: Any, spec: tuple, key: str, source: str) -> None:
    low, high, low_open, high_open = spec
    values = value if isinstance(value, (tuple, list)) else [value]
    for item in values:
        if item is None:
            continue
        too_low = low is not None and (item <= low if low_open else item < low)
        too_high = high is not None and (item >= high if high_open else item > high)
        if too_low or too_high:
            left = "(" if low_open else "["
            right = ")" if high_open else "]"
            bounds = f"{left}{'-inf' if low is None else low}, {'inf' if high is None else high}{right}"
            raise ConfigError(f"key {key!r} is {value!r}; it must lie in {bounds}", source)


def build(cls: type, data: dict, source: str, prefix: str = "") -> Any:
    """The dataclass ``cls`` from a YAML mapping: unknown keys, wrong types and values outside a
    field's range are a ConfigError naming the dotted key (``prefix`` + name) and ``source``."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"unknown key {prefix + str(key)!r}{hint}; valid keys here: "
                              f"{', '.join(fields)}", source)
    kwargs = {}
    for name, value in data.items():
        key = prefix + name
        kwargs[name] = _convert(value, hints[name], key, source)
        if "range" in fields[name].metadata:
            _check_range(kwargs[name], fields[name].metadata["range"], key, source)
    try:
        return cls(**kwargs)
    except ConfigError as error:   # a section's own cross-field checks (__post_init__): name the file
        if error.path is not None:
            raise
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: {error.reason}", source) from None


def set_dotted(tree: dict, dotted: str, value: Any, source: str) -> None:
    """``tree["a"]["b"] = value`` for ``dotted`` "a.b", creating sections as needed."""
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {dotted!r}: {part!r} is not a section", source)
        node = child
    node[parts[-1]] = value


def parse_overrides(overrides: Sequence[str]) -> list[tuple[str, Any]]:
    """Parse ``key.sub=value`` strings; values are YAML (``0.01``, ``[1, 2]``, ``null``, ``true``)."""
    parsed = []
    for text in overrides:
        key, sep, raw = text.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {text!r} must look like key.sub=value", "command line")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        parsed.append((key.strip(), value))
    return parsed
