"""The field checks every config section runs in `__post_init__`: types (with gentle coercion),
then the rule declared beside each field (a choice with a close match, a lower bound, a range),
each failing with `section.field`, the value and what is allowed.

A rule is field metadata (`lr: float = field(default=0.06, metadata=above(0.0))`), so it can
also be checked on one given value alone, before the config is built (`check_given_values`).
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

RULE = "rule"  # the key of a field's rule in its dataclass metadata


@dataclass(frozen=True)
class FieldRule:
    """What a field allows beyond its type: `allows(value)` on a value of the right type, and
    `allowed`, the words for it in "section.field must be <allowed>, got <value>". `choices`:
    the field is a choice among these (the error then suggests the closest)."""

    allows: Callable[[Any], bool]
    allowed: str
    choices: tuple[str, ...] = ()


def rule(allows: Callable[[Any], bool], allowed: str) -> dict[str, FieldRule]:
    """Field metadata: the value must pass `allows`; `allowed` says what that means."""
    return {RULE: FieldRule(allows, allowed)}


def at_least(low: float) -> dict[str, FieldRule]:
    """Field metadata: the value (when set) must be >= low."""
    return rule(lambda value: value >= low, f">= {low}")


def above(low: float) -> dict[str, FieldRule]:
    """Field metadata: the value (when set) must be > low."""
    return rule(lambda value: value > low, f"> {low}")


def one_of(choices: Sequence[str]) -> dict[str, FieldRule]:
    """Field metadata: the value must be one of `choices`."""
    choices = tuple(choices)
    return {RULE: FieldRule(lambda value: value in choices, f"one of {list(choices)}", choices)}


def field_error(section: str, name: str, value: Any, allowed: str) -> ValueError:
    """`ValueError("section.name must be <allowed>, got <value>")`, the message every check gives."""
    shown = list(value) if isinstance(value, tuple) else value  # as YAML writes it
    return ValueError(f"{section}.{name} must be {allowed}, got {shown!r}")


def check_fields(obj: Any, section: str) -> None:
    """Check (and gently coerce) every field of the dataclass `obj`: its type, then its rule.

    Coercions: int -> float for float fields; a numeric string -> float (YAML 1.1 reads `1e-3`
    without a dot as a string); a list -> tuple for tuple fields.
    """
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        setattr(obj, f.name, check_field(section, f, hints[f.name], getattr(obj, f.name)))


def check_given_values(cls: type, values: Mapping[str, Any], section: str) -> None:
    """The checks of `check_fields` on the values a config gives for the dataclass `cls`, each
    alone: the type and rule of every value that is set (None may still be filled in later, by a
    method's preset). Unknown names are the caller's to reject."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name, value in values.items():
        if value is not None:
            check_field(section, fields[name], hints[name], value)


def check_field(section: str, f: dataclasses.Field, hint: Any, value: Any) -> Any:
    """One field's value checked against its annotation `hint` and its rule; returns it coerced."""
    args = typing.get_args(hint)
    optional = typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args
    base = next((a for a in args if a is not type(None)), hint) if optional else hint
    if value is None:
        if optional:
            return None
        raise field_error(section, f.name, value, f"a {_type_name(base)} (not empty)")
    value = _coerce(section, f.name, value, base, optional)
    field_rule: FieldRule | None = f.metadata.get(RULE)
    if field_rule is not None and not field_rule.allows(value):
        if field_rule.choices:
            check_choice(section, f.name, value, field_rule.choices)
        raise field_error(section, f.name, value, field_rule.allowed)
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


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
