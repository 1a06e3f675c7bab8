"""The configuration reference page, generated at build time so that it cannot drift.

Fields, types, defaults and allowed values come from the config dataclasses
(`contrastkit.pipelines.config`, imported from source: no torch needed); each field's meaning
comes from the field tables of the pipelines README, and a field that one side has and the other
lacks is a build warning (a failure under --strict). What each method fills in comes from the
class attributes of its module in `contrastkit/pipelines/methods/`, read with `ast` (importing
a method module would import torch).
"""

from __future__ import annotations

import ast
import dataclasses
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

README = "packages/pipelines/README.md"
METHODS_DIR = "packages/pipelines/src/contrastkit/pipelines/methods"
_HEADER = re.compile(r"^\|\s*field\s*\|\s*default\s*\|\s*meaning\s*\|\s*$")
_SECTION_HEADING = re.compile(r"^#{2,6}\s+`(\w+)`\s*$")
BASE_CLASS = "PretrainMethod"  # in METHODS_DIR/base.py: its ClassVars are what a method declares


def yaml_value(value: Any) -> str:
    """A default as a YAML file writes it: null, true, [0.9, 0.999], {}."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple | list):
        return "[" + ", ".join(yaml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {yaml_value(v)}" for k, v in value.items()) + "}"
    return str(value)


def readme_meanings(text: str) -> dict[str, dict[str, str]]:
    """section -> field -> meaning, from every `| field | default | meaning |` table of the README.

    A table belongs to the section named by the `### \\`section\\`` heading above it; a table
    under any other heading is keyed by "" (matched to a section by its field names later).
    """
    tables: dict[str, dict[str, str]] = {}
    heading = ""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            match = _SECTION_HEADING.match(line)
            heading = match.group(1) if match else ""
        if _HEADER.match(line):
            rows: dict[str, str] = {}
            i += 2  # the header and its | --- | line
            while i < len(lines) and lines[i].startswith("|"):
                cells = [c.strip() for c in lines[i].strip().strip("|").split(" | ")]
                rows[cells[0].strip("`")] = cells[-1]
                i += 1
            key = heading if heading not in tables else ""
            if key:
                tables[key] = rows
            else:
                tables.setdefault("", {}).update(rows)
            continue
        i += 1
    return tables


def _field_meanings(
    section: str, fields: list[str], tables: dict[str, dict[str, str]], warn: Callable[[str], None]
) -> dict[str, str]:
    rows = tables.get(section)
    if rows is None:  # a table under another heading (the joint section's)
        loose = tables.get("", {})
        rows = {f: loose[f] for f in fields if f in loose}
    missing = [f for f in fields if f not in rows]
    extra = [f for f in rows if f not in fields]
    if missing:
        warn(
            f"{README}: no meaning for config field(s) {section}.{missing} (add them to its table)"
        )
    if extra and section in tables:
        warn(f"{README}: its `{section}` table names {extra}, which {section} does not have")
    return rows


def _first_line(doc: str | None) -> str:
    return " ".join((doc or "").strip().split("\n\n")[0].split())


def _section_markdown(
    name: str, cls: type, meanings: dict[str, str], rule_key: str, joint_only: bool
) -> list[str]:
    lines = [f"## `{name}`", "", f"`{cls.__module__}.{cls.__name__}`: {_first_line(cls.__doc__)}"]
    if joint_only:
        lines[-1] += " Read by `joint.py` only."
    lines += [
        "",
        "| field | type | default | allowed | meaning |",
        "| --- | --- | --- | --- | --- |",
    ]
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = dataclasses.MISSING
        shown = "required" if default is dataclasses.MISSING else f"`{yaml_value(default)}`"
        rule = f.metadata.get(rule_key)
        allowed = rule.allowed.replace("|", "\\|") if rule is not None else ""
        # A `|` cannot stand in a table cell, not even inside a code span: "float or null".
        kinds = [f"`{part.strip()}`" for part in str(f.type).split("|")]
        kind = " or ".join("`null`" if k == "`None`" else k for k in kinds)
        lines.append(f"| `{f.name}` | {kind} | {shown} | {allowed} | {meanings.get(f.name, '')} |")
    return [*lines, ""]


def declared_class_vars(repo: Path) -> frozenset[str]:
    """The names PretrainMethod annotates as ClassVar in methods/base.py: the class attributes a
    method declares (read from the source, so a new one needs no list here)."""
    path = repo / METHODS_DIR / "base.py"
    for node in ast.parse(path.read_text(), str(path)).body:
        if isinstance(node, ast.ClassDef) and node.name == BASE_CLASS:
            return frozenset(
                item.target.id
                for item in node.body
                if isinstance(item, ast.AnnAssign)
                and isinstance(item.target, ast.Name)
                and ast.unparse(item.annotation).startswith("ClassVar")
            )
    raise ValueError(f"{path}: no class {BASE_CLASS}")


def _class_attributes(path: Path, declared: frozenset[str]) -> dict[str, Any] | None:
    """The class attributes in `declared` that the method class in `path` (the class that sets
    `name`) gives as literals."""
    tree = ast.parse(path.read_text(), str(path))
    for node in tree.body:
        if not isinstance(node, ast.ClassDef):
            continue
        found: dict[str, Any] = {"class": node.name, "preset": None}
        for item in node.body:
            target = value = None
            if isinstance(item, ast.Assign) and len(item.targets) == 1:
                target, value = item.targets[0], item.value
            elif isinstance(item, ast.AnnAssign):
                target, value = item.target, item.value
            elif isinstance(item, ast.FunctionDef) and item.name == "preset":
                found["preset"] = _first_line(ast.get_docstring(item))
            if isinstance(target, ast.Name) and target.id in declared and value:
                try:
                    found[target.id] = ast.literal_eval(value)
                except ValueError as error:
                    raise ValueError(
                        f"{path}: {node.name}.{target.id} is not a literal ({error}); the "
                        "documentation reads the class attributes without importing the code"
                    ) from error
        if "name" in found:
            return found
    return None


def method_rows(repo: Path) -> list[dict[str, Any]]:
    """One dict per method module (every module of methods/ but __init__ and base), by name."""
    rows = []
    declared = declared_class_vars(repo)
    for path in sorted((repo / METHODS_DIR).glob("*.py")):
        if path.stem.startswith("_") or path.stem == "base":
            continue
        attributes = _class_attributes(path, declared)
        if attributes is None or attributes["name"] != path.stem:
            raise ValueError(f"{path}: no method class whose name is {path.stem!r}")
        rows.append(attributes)
    return rows


_COLUMNS = (
    "`method.name`",
    "class",
    "default `data.augment`",
    "`temperature`",
    "`momentum` → `momentum_final`",
    "student / teacher temperature",
    "other `method:` fields",
    "i-Mix",
    "preset",
)


def _method_cells(row: dict[str, Any], link_prefix: str | None) -> list[str]:
    """The cells of `_COLUMNS` for one method's class attributes."""
    name = f"`{row['name']}`"
    if link_prefix is not None:
        name = f"[{name}]({link_prefix}{row['name']}.md)"
    momentum = row.get("default_momentum")
    final = row.get("default_final_momentum")
    schedule = "–" if momentum is None else f"{momentum} → {momentum if final is None else final}"
    pair = row.get("default_student_teacher_temperatures")
    plus = row.get("isd_plus_temperatures")
    temperatures = "–" if pair is None else f"{pair[0]} / {pair[1]}"
    if plus is not None:
        temperatures += f" (`isd_plus`: {plus[0]} / {plus[1]})"
    defaults = row.get("method_defaults", {})
    extras = ", ".join(f"`{k}`: `{yaml_value(v)}`" for k, v in defaults.items()) or "–"
    imix = "mixup, cutmix" if row.get("supports_imix") else "no"
    if row.get("supports_symmetric"):
        imix += "; `symmetric` allowed"
    temperature = row.get("default_temperature")
    return [
        name,
        f"`{row['class']}`",
        f"`{row.get('default_augment', '')}`",
        "–" if temperature is None else str(temperature),
        schedule,
        temperatures,
        extras,
        imix,
        row["preset"] or "–",
    ]


def methods_table(rows: list[dict[str, Any]], link_prefix: str | None) -> list[str]:
    """The table of what each method in `rows` fills in; `link_prefix` (e.g. "methods/") links
    each name to its method page, None leaves it plain."""
    lines = ["| " + " | ".join(_COLUMNS) + " |", "|" + " --- |" * len(_COLUMNS)]
    lines += ["| " + " | ".join(_method_cells(row, link_prefix)) + " |" for row in rows]
    return [*lines, ""]


def method_card(row: dict[str, Any]) -> list[str]:
    """What one method fills in, as a two-column table (setting, value)."""
    lines = ["| setting | value |", "| --- | --- |"]
    lines += [
        f"| {column} | {cell} |"
        for column, cell in zip(_COLUMNS, _method_cells(row, None), strict=True)
    ]
    return [*lines, ""]


def configuration_page(repo: Path, warn: Callable[[str], None]) -> str:
    """The whole configuration.md."""
    from contrastkit.pipelines.config.checks import RULE
    from contrastkit.pipelines.config.sections import JointTrainingConfig, PretrainConfig
    from contrastkit.pipelines.config.yaml_io import config_sections

    tables = readme_meanings((repo / README).read_text())
    pretrain = config_sections(PretrainConfig)
    lines = [
        "# Configuration reference",
        "",
        "A run's config is one YAML file with the sections below (`--config FILE`); any field is "
        "overridden on the command line as `section.field=value` (parsed as YAML), and "
        "`--print-config` prints the resolved config and exits. Every field is checked when the "
        "config is built: a bad value stops the command with one line naming `section.field`, "
        "the value and what is allowed, and an unknown key lists the valid ones.",
        "",
        '!!! note "Generated"',
        "    This page is written at build time: the fields, types, defaults and allowed values "
        "from the dataclasses in `contrastkit.pipelines.config.sections`, the meanings from the "
        "field tables of the pipelines README (the build fails when a field has none), and the "
        "method table from the class attributes of each module in "
        "`contrastkit/pipelines/methods/`.",
        "",
        "A field whose default is `null` and that a method uses is filled in by the method "
        "([below](#what-each-method-fills-in)), so `config.yaml` in the run folder records what "
        "ran. Mixed precision and the number of processes are not config fields: they are "
        "`accelerate launch` flags ([Multi-GPU and multi-node](distributed.md)).",
        "",
        "```bash",
        "python packages/pipelines/pretrain.py --config packages/pipelines/configs/smoke.yaml "
        "--print-config",
        "```",
        "",
    ]
    for name, cls in config_sections(JointTrainingConfig).items():
        fields = [f.name for f in dataclasses.fields(cls)]
        meanings = _field_meanings(name, fields, tables, warn)
        lines += _section_markdown(name, cls, meanings, RULE, joint_only=name not in pretrain)
    lines += [
        "## What each method fills in",
        "",
        "Values a method puts into the fields a config leaves empty (class attributes of its "
        "module in `contrastkit/pipelines/methods/`). A preset fills whole `model:` / "
        "`optimizer:` fields with the original's recipe; fields the config sets always win.",
        "",
        *methods_table(method_rows(repo), "methods/"),
    ]
    return "\n".join(lines)
