"""Strict reading of parsed TOML into attrs classes, with errors that name the key path.

A small reader instead of a general converter because config errors must be exact:
``1`` is not a string, ``"x"`` is not a list, ``true`` is not a number, and an attrs
validator's own reason must reach the user together with the key it concerns.
"""

from __future__ import annotations

import enum
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

import attrs

from ._errors import ConfigError

__all__ = ["read_attrs", "read_value"]

T = TypeVar("T")

_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _describe(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    return type(value).__name__


def read_value(value: Any, tp: Any, path: str) -> Any:
    """Check `value` against the type annotation `tp` and convert it; ConfigError if wrong."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        non_none = [o for o in options if o is not type(None)]
        if len(non_none) == 1:
            return read_value(value, non_none[0], path)
        raise TypeError(f"unsupported union {tp!r} at {path}")
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(path, f"expected true or false, got {_describe(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(path, f"expected an integer, got {_describe(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(path, f"expected a number, got {_describe(value)}")
        if not math.isfinite(value):
            raise ConfigError(path, f"expected a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(path, f"expected a string, got {_describe(value)}")
        return value
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        allowed = [m.value for m in tp]
        if not isinstance(value, str) or value not in allowed:
            choices = ", ".join(repr(a) for a in allowed)
            raise ConfigError(path, f"expected one of {choices}, got {_describe(value)}")
        return tp(value)
    if origin is tuple:
        (item_type, _ellipsis) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(path, f"expected a list, got {_describe(value)}")
        return tuple(read_value(v, item_type, f"{path}[{i}]") for i, v in enumerate(value))
    if origin in (dict, Mapping) or tp is dict:
        args = typing.get_args(tp)
        item_type = args[1] if args else Any
        if not isinstance(value, dict):
            raise ConfigError(path, f"expected a table, got {_describe(value)}")
        return {k: read_value(v, item_type, _join(path, k)) for k, v in value.items()}
    if attrs.has(tp):
        return read_attrs(value, tp, path)
    raise TypeError(f"unsupported config type {tp!r} at {path}")


def read_attrs(data: Any, cls: type[T], path: str, **fixed: Any) -> T:
    """Build attrs class `cls` from a TOML table, strictly; `fixed` fields come from elsewhere."""
    if not isinstance(data, dict):
        raise ConfigError(path, f"expected a table, got {_describe(data)}")
    hints = typing.get_type_hints(cls)
    fields = {a.name: a for a in attrs.fields(cls)}  # type: ignore[arg-type]
    allowed = {name for name, a in fields.items() if a.init and name not in fixed}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ConfigError(
            _join(path, unknown[0]),
            f"unknown key; expected one of {', '.join(sorted(allowed))}",
        )
    kwargs: dict[str, Any] = dict(fixed)
    for name in sorted(allowed):
        field = fields[name]
        if name in data:
            kwargs[name] = read_value(data[name], hints[name], _join(path, name))
        elif field.default is attrs.NOTHING:
            raise ConfigError(_join(path, name), "required key is missing")
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:
        reason = str(exc)
        key = next((n for n in allowed if reason.startswith(n + " ")), None)
        if key is None:  # a cross-field check: find a mentioned key, else the table
            key = next((n for n in sorted(allowed) if n in reason and n in data), None)
        raise ConfigError(_join(path, key) if key else path, reason) from None
