"""The field checks every config section runs in `__post_init__`: types (with gentle coercion),
choices (with a close match), lower bounds, each failing with `section.field`, the value and what
is allowed."""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any


def field_error(section: str, name: str, value: Any, allowed: str) -> ValueError:
    """`ValueError("section.name must be <allowed>, got <value>")`, the message every check gives."""
    return ValueError(f"{section}.{name} must be {allowed}, got {value!r}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_types(obj: Any, section: str) -> None:
    """Check (and gently coerce) every field of the dataclass `obj` against its annotation.

    Coercions: int -> float for float fields; a numeric string -> float (YAML 1.1 reads `1e-3`
    without a dot as a string); a list -> tuple for tuple fields.
    """
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        hint = hints[f.name]
        args = typing.get_args(hint)
        optional = typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args
        base = next((a for a in args if a is not type(None)), hint) if optional else hint
        if value is None:
            if optional:
                continue
            raise field_error(section, f.name, value, f"a {_type_name(base)} (not empty)")
        setattr(obj, f.name, _coerce(section, f.name, value, base, optional))


def _type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin is dict:
        return "mapping"
    if origin is tuple:
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return "list of numbers"
        return f"list of {len(args)} numbers"
    return getattr(hint, "__name__", str(hint))


def _coerce(section: str, name: str, value: Any, hint: Any, optional: bool) -> Any:
    allowed = f"a {_type_name(hint)}" + (" or null" if optional else "")
    origin = typing.get_origin(hint)
    if hint is bool:
        if not isinstance(value, bool):
            raise field_error(section, name, value, "true or false")
        return value
    if hint is int:
        if not _is_int(value):
            raise field_error(section, name, value, allowed)
        return value
    if hint is float:
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise field_error(section, name, value, allowed) from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise field_error(section, name, value, allowed)
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise field_error(section, name, value, allowed)
        return value
    if origin is dict:
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise field_error(section, name, value, "a mapping with string keys")
        return dict(value)
    if origin is tuple:
        args = typing.get_args(hint)
        size = None if len(args) == 2 and args[1] is Ellipsis else len(args)
        if not isinstance(value, list | tuple) or (size is not None and len(value) != size):
            raise field_error(section, name, value, allowed)
        return tuple(_coerce(section, name, v, float, False) for v in value)
    raise TypeError(f"unsupported annotation {hint!r} for {section}.{name}")


def check_choice(section: str, name: str, value: str, choices: Sequence[str]) -> None:
    """`value` must be one of `choices`; the error suggests the closest one."""
    if value not in choices:
        close = difflib.get_close_matches(value, choices, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"{section}.{name} must be one of {list(choices)}, got {value!r}{hint}")


def check_min(section: str, name: str, value: float | None, low: float, *, strict: bool) -> None:
    """`value > low` (strict) or `value >= low`; None (an unset optional field) passes."""
    if value is None:
        return
    if (value <= low) if strict else (value < low):
        raise field_error(section, name, value, f"{'>' if strict else '>='} {low}")
