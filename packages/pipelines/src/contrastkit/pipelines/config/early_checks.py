"""The config checks that need no torch, run by the command line before its heavy imports: a bad
key, value or method name is reported in about a second, not after torch, accelerate and timm load.

Everything checked here is checked again when the config is built (`config_from_dict`), which
also checks what needs the method classes: their defaults and presets, i-Mix support, and the
checks across sections.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from contrastkit.pipelines.config.checks import check_given_values
from contrastkit.pipelines.config.sections import PretrainConfig
from contrastkit.pipelines.config.yaml_io import PRESET_SECTIONS, checked_sections, config_sections
from contrastkit.pipelines.methods import check_method_name


def check_raw_config(
    data: Mapping[str, Any] | None, config_class: type[PretrainConfig] = PretrainConfig
) -> None:
    """Check a raw `{section: {field: value}}` config (overrides applied) without importing torch.

    Raises ValueError, with the message `config_from_dict` would give, for: an unknown section or
    field; a value of the wrong type or outside its field's rule; an unknown `method.name`; and
    any problem of the sections a method's preset never fills (data, train, joint), which are
    built whole. In the sections a preset may fill (method, model, optimizer) each given value is
    checked alone, so a value the preset would make consistent is never rejected here.
    """
    known = config_sections(config_class)
    raw = checked_sections(data, known)
    for name, values in raw.items():
        if name in PRESET_SECTIONS:
            check_given_values(known[name], values, name)
        else:
            known[name](**values)
    method = raw.get("method", {}).get("name")
    if method is not None:
        check_method_name(method)
