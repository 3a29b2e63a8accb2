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

from daz_actors.runtime.errors import ConfigError

__all__ = ["read_attrs", "read_value"]

T = TypeVar("T")

_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
# no setting is sane beyond these; settings with tighter limits check them themselves
MAX_INTEGER = 1_000_000_000
MAX_NUMBER = 1e9  # seconds: about 31 years


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


def read_value(value: Any, tp: Any, path: str, *, bounded: bool = True) -> Any:
    """Check `value` against the type annotation `tp` and convert it; ConfigError if wrong.

    `bounded`: numbers past `MAX_INTEGER` / `MAX_NUMBER` are refused (a setting); data that
    is not a setting (a queued intent's timestamps) reads with ``bounded=False``.
    """
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:  # JSON null (TOML has none)
            return None
        non_none = [o for o in options if o is not type(None)]
        if len(non_none) == 1:
            return read_value(value, non_none[0], path, bounded=bounded)
        raise TypeError(f"unsupported union {tp!r} at {path}")
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(path, f"expected true or false, got {_describe(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(path, f"expected an integer, got {_describe(value)}")
        if bounded and abs(value) > MAX_INTEGER:
            raise ConfigError(path, f"{value} is out of range (at most {MAX_INTEGER:,})")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(path, f"expected a number, got {_describe(value)}")
        try:
            number = float(value)  # an int past the float range raises OverflowError
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            raise ConfigError(path, f"expected a finite number, got {value!r}")
        if bounded and abs(number) > MAX_NUMBER:
            raise ConfigError(path, f"{value!r} is out of range (at most {MAX_NUMBER:g})")
        return number
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
    if origin in (tuple, list):
        args = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(path, f"expected a list, got {_describe(value)}")
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            # a fixed-length tuple such as tuple[int, str]: one type per position
            if len(value) != len(args):
                raise ConfigError(path, f"expected a list of {len(args)} items, got {len(value)}")
            return tuple(
                read_value(v, t, f"{path}[{i}]", bounded=bounded)
                for i, (v, t) in enumerate(zip(value, args, strict=True))
            )
        item_type = args[0] if args else Any
        items = [
            read_value(v, item_type, f"{path}[{i}]", bounded=bounded) for i, v in enumerate(value)
        ]
        return tuple(items) if origin is tuple else items
    if origin in (dict, Mapping) or tp is dict:
        args = typing.get_args(tp)
        item_type = args[1] if args else Any
        if not isinstance(value, dict):
            raise ConfigError(path, f"expected a table, got {_describe(value)}")
        return {
            k: read_value(v, item_type, _join(path, k), bounded=bounded) for k, v in value.items()
        }
    if attrs.has(tp):
        return read_attrs(value, tp, path, bounded=bounded)
    raise TypeError(f"unsupported config type {tp!r} at {path}")


def read_attrs(data: Any, cls: type[T], path: str, *, bounded: bool = True, **fixed: Any) -> T:
    """Build attrs class `cls` from a TOML table, strictly; `fixed` fields come from elsewhere."""
    if not isinstance(data, dict):
        raise ConfigError(path, f"expected a table, got {_describe(data)}")
    hints = typing.get_type_hints(cls)
    # keys are the __init__ argument names: a private field ``_x`` is set by ``x``
    fields = {a.alias: a for a in attrs.fields(cls) if a.init}  # type: ignore[arg-type]
    allowed = {key for key in fields if key not in fixed}
    unknown = sorted(set(data) - allowed)
    if unknown:
        expected = f"expected one of {', '.join(sorted(allowed))}" if allowed else "no keys here"
        raise ConfigError(_join(path, unknown[0]), f"unknown key; {expected}")
    kwargs: dict[str, Any] = dict(fixed)
    for key in sorted(allowed):
        field = fields[key]
        if key in data:
            kwargs[key] = read_value(
                data[key], hints[field.name], _join(path, key), bounded=bounded
            )
        elif field.default is attrs.NOTHING:
            raise ConfigError(_join(path, key), "required key is missing")
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:
        reason = str(exc)
        # validators name the field (``initial must be ...``): find the key it stands for
        key = next(
            (k for k in sorted(allowed) if reason.startswith((k + " ", fields[k].name + " "))),
            None,
        )
        if key is None:  # a cross-field check: find a mentioned key, else the table
            key = next((k for k in sorted(allowed) if k in reason and k in data), None)
        raise ConfigError(_join(path, key) if key else path, reason) from None
