"""Configs as plain data: `{section: {field: value}}` dicts, YAML files and `section.field=value`
command-line overrides, in both directions.

Loaded from YAML, overridden from the command line, and saved (resolved, every default filled in)
as `config.yaml` in the run directory and each checkpoint.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from contrastkit.pipelines import methods
from contrastkit.pipelines.atomic import write_text_atomic
from contrastkit.pipelines.config.sections import SECTIONS, MethodConfig, PretrainConfig

# The sections a method's preset may fill. The others (data, train, joint) never depend on the
# method, so the command line can check them whole before the method registry (torch) loads.
PRESET_SECTIONS: tuple[str, ...] = ("method", "model", "optimizer")


def config_sections(config_class: type[PretrainConfig] = PretrainConfig) -> dict[str, type]:
    """Section name -> dataclass of a config class (SECTIONS for PretrainConfig, plus `joint` for
    JointTrainingConfig)."""
    hints = typing.get_type_hints(config_class)
    return {f.name: hints[f.name] for f in dataclasses.fields(config_class)}


def config_to_dict(config: PretrainConfig) -> dict[str, dict[str, Any]]:
    """The resolved config as plain YAML-able dicts (tuples become lists)."""

    def plain(value: Any) -> Any:
        if isinstance(value, tuple):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return {
        name: {
            f.name: plain(getattr(getattr(config, name), f.name)) for f in dataclasses.fields(cls)
        }
        for name, cls in config_sections(type(config)).items()
    }


def _unknown_key(key: str, valid: Sequence[str], where: str) -> ValueError:
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return ValueError(f"unknown key {key!r} in {where}; valid keys: {sorted(valid)}.{hint}")


def config_from_dict(
    data: Mapping[str, Any] | None, config_class: type[PretrainConfig] = PretrainConfig
) -> PretrainConfig:
    """Build and validate a config (PretrainConfig, or `config_class`) from `{section: {field: value}}`;
    missing fields take defaults.

    Raises ValueError for an unknown section or field (listing the valid ones, with the closest
    match) and for any invalid value (naming `section.field`, the value and what is allowed).
    """
    known = config_sections(config_class)
    raw = checked_sections(data, known)
    _apply_method_preset(raw, known)
    return config_class(**{name: known[name](**values) for name, values in raw.items()})


def checked_sections(
    data: Mapping[str, Any] | None, known: Mapping[str, type]
) -> dict[str, dict[str, Any]]:
    """`data` as {section: {field: value}} (a copy; None and empty sections as {}), after checking
    that it is a mapping of the `known` sections, each a mapping of its fields (ValueError
    listing the valid keys, with the closest match, otherwise)."""
    data = {} if data is None else data
    if not isinstance(data, Mapping):
        raise ValueError(f"a config must be a mapping of sections {list(known)}, got {data!r}")
    raw: dict[str, dict[str, Any]] = {}
    for name, values in data.items():
        if name not in known:
            raise _unknown_key(str(name), list(known), "the config's top level")
        values = {} if values is None else values
        if not isinstance(values, Mapping):
            raise ValueError(f"config section {name!r} must be a mapping of fields, got {values!r}")
        valid = [f.name for f in dataclasses.fields(known[name])]
        for key in values:
            if key not in valid:
                raise _unknown_key(str(key), valid, f"section {name!r}")
        raw[name] = dict(values)
    return raw


_PRESET_DEPENDENTS: dict[str, tuple[str, ...]] = {
    "optimizer.schedule": ("lr_decay_epochs", "lr_decay_factor"),
}


def _apply_method_preset(raw: dict[str, dict[str, Any]], known: Mapping[str, type]) -> None:
    """Fill the fields the config leaves out (or null) with the method's preset: the values of the
    original recipe the method cites (`PretrainMethod.preset`, e.g. ISD / ISD-plus). Fields the
    config sets win; an unknown method name is left for MethodConfig to report."""
    method = raw.get("method", {})
    name = method.get("name", MethodConfig.name)
    if name not in methods.METHODS:
        return
    for section, fields in methods.METHODS[name].preset(method).items():
        if section not in PRESET_SECTIONS:
            raise TypeError(
                f"method {name!r} presets section {section!r}; a preset may fill only "
                f"{list(PRESET_SECTIONS)} (the command line checks the others before loading methods)"
            )
        if section not in known:
            continue
        values = raw.setdefault(section, {})
        given = {key for key, value in values.items() if value is not None}
        # A field the config sets also decides the preset fields that only make sense with the
        # preset's value of it (the step schedule's epochs once the config picks a schedule).
        held = {d for key in given for d in _PRESET_DEPENDENTS.get(f"{section}.{key}", ())}
        for key, value in fields.items():
            if key not in given and key not in held:
                values[key] = value


def parse_override(text: str) -> tuple[list[str], Any]:
    """`"section.field=value"` -> (["section", "field"], YAML-parsed value).

    Deeper keys address entries of mapping fields: `model.backbone_kwargs.width=64`.
    """
    key, sep, raw = text.partition("=")
    key = key.strip()
    path = key.split(".")
    if not sep or len(path) < 2 or not all(path):
        raise ValueError(
            f"an override must look like section.field=value (e.g. optimizer.lr=0.3), got {text!r}"
        )
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as error:
        raise ValueError(
            f"the value of override {text!r} is not valid YAML: {_yaml_problem(error)}"
        ) from None
    return path, value


def apply_overrides(
    data: Mapping[str, Any],
    overrides: Sequence[str],
    config_class: type[PretrainConfig] = PretrainConfig,
) -> dict[str, Any]:
    """A copy of the raw config dict with every `section.field=value` override applied (in order)."""
    known = config_sections(config_class)
    result: dict[str, Any] = {k: dict(v or {}) for k, v in data.items()}
    for text in overrides:
        path, value = parse_override(text)
        section, name, *deeper = path
        if section not in known:
            raise _unknown_key(section, list(known), f"override {text!r}")
        valid = [f.name for f in dataclasses.fields(known[section])]
        if name not in valid:
            raise _unknown_key(name, valid, f"section {section!r} (override {text!r})")
        target = result.setdefault(section, {})
        if deeper:
            current = target.get(name)
            if current is None:
                current = {}
            if not isinstance(current, Mapping):
                raise ValueError(
                    f"override {text!r} addresses a key inside {section}.{name}, which is not a mapping"
                )
            target[name] = node = dict(current)
            for key in deeper[:-1]:
                child = node.get(key)
                node[key] = dict(child) if isinstance(child, Mapping) else {}
                node = node[key]
            node[deeper[-1]] = value
        else:
            target[name] = value
    return result


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The raw mapping in a YAML config file (FileNotFoundError / ValueError when unusable)."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"config file {str(path)!r} is a folder; give a YAML file")
    if not path.is_file():
        raise FileNotFoundError(f"config file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ValueError(f"config file {str(path)!r} is not UTF-8 text; give a YAML file") from None
    except yaml.YAMLError as error:
        raise ValueError(
            f"config file {str(path)!r} is not valid YAML: {_yaml_problem(error)}"
        ) from None
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ValueError(
            f"config file {str(path)!r} must hold a mapping of sections {list(SECTIONS)}, got {type(data).__name__}"
        )
    return dict(data)


def _yaml_problem(error: yaml.YAMLError) -> str:
    """A YAML parse error in one line: where (1-based line and column, as an editor shows) and what."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None)
    if mark is None or problem is None:
        return " ".join(str(error).split())
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"


def load_config(
    path: str | Path | None = None,
    overrides: Sequence[str] = (),
    config_class: type[PretrainConfig] = PretrainConfig,
) -> PretrainConfig:
    """Read a YAML config (or start from the defaults when `path` is None), apply overrides, validate.

    config_class: PretrainConfig (default) or JointTrainingConfig (adds the `joint:` section).
    """
    data = read_config_file(path) if path is not None else {}
    return config_from_dict(apply_overrides(data, overrides, config_class), config_class)


def config_to_yaml(config: PretrainConfig) -> str:
    """The resolved config as YAML text, sections and fields in declaration order."""
    return yaml.safe_dump(config_to_dict(config), sort_keys=False, default_flow_style=False)


def save_config(config: PretrainConfig, path: str | Path) -> Path:
    """Write the resolved config as YAML, atomically (a reader sees the old file or the new one),
    readable by all: mode 0644 under the usual umask 022 (`write_text_atomic`)."""
    return write_text_atomic(path, config_to_yaml(config))
