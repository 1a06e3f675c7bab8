"""The parts of a study file: one frozen dataclass per part (evaluation, cell, profile, reference,
delta) and the checks that turn its YAML values into them (`spec.load_study` reads the file).

Every error is a ValueError naming the study file, the field and what is allowed (`Where`).
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from contrastkit.pipelines.config import JointTrainingConfig, PretrainConfig

# The cells.csv columns (cells_csv.CELL_COLUMNS) holding a measured number: what a reference or
# a delta may compare.
METRIC_COLUMNS: tuple[str, ...] = (
    "knn_top1", "linear_top1", "val_top1", "wall_s", "pretrain_s", "probe_s",
)  # fmt: skip
PROFILES: tuple[str, ...] = ("gpu", "cpu")
TASKS: tuple[str, ...] = ("pretrain", "joint")
PROBES: tuple[str, ...] = ("linear", "finetune", "knn")
# Probe options the study sets itself (from `evaluation` and the run folders), not probe_args.
STUDY_PROBE_OPTIONS: dict[str, str] = {
    "checkpoint": "--checkpoint (the cell's run)",
    "output_dir": "--output-dir (the cell's probe folder)",
    "label_fraction": "--label-fraction (evaluation.label_fraction)",
    "finetune": "--finetune (evaluation.probe: finetune)",
    "seed": "--seed (each run's seed)",
}

_EVALUATION_KEYS = ("probe", "label_fraction", "probe_args", "pictures")
_CELL_KEYS = ("config", "overrides", "task")
_PROFILE_KEYS = ("description", "seeds", "overrides", "cell_overrides", "scale_downs", "probe_args")
_REFERENCE_KEYS = ("cell", "metric", "value", "source")
_DELTA_KEYS = ("name", "plus", "minus", "metric", "claimed", "source")
CELL_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")  # a folder name, no commas (--cells a,b)


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """`evaluation:` what runs after each pretrain cell (joint cells validate themselves).

    probe: linear | finetune | knn (kNN only, no trained head); label_fraction in (0, 1];
    probe_args: extra contrastkit-probe options; pictures: t-SNE + NN grid of the best cell.
    """

    probe: str = "linear"
    label_fraction: float = 1.0
    probe_args: tuple[str, ...] = ()
    pictures: bool = False


@dataclasses.dataclass(frozen=True)
class Cell:
    """One cell: a shipped config (`config`, resolved to an absolute path) plus overrides."""

    name: str
    config: Path
    overrides: tuple[str, ...] = ()
    task: str = "pretrain"

    @property
    def config_class(self) -> type[PretrainConfig]:
        """JointTrainingConfig for a joint cell, else PretrainConfig."""
        return JointTrainingConfig if self.task == "joint" else PretrainConfig


@dataclasses.dataclass(frozen=True)
class Profile:
    """`profiles.<gpu|cpu>`: the seeds and the overrides that set the scale, every scale-down said."""

    name: str
    seeds: tuple[int, ...]
    description: str = ""
    overrides: tuple[str, ...] = ()
    cell_overrides: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    scale_downs: tuple[str, ...] = ()
    probe_args: tuple[str, ...] = ()  # after evaluation.probe_args (e.g. probe subsets on cpu)


@dataclasses.dataclass(frozen=True)
class Reference:
    """A published number for one cell's metric (a cells.csv column), with its source."""

    cell: str
    metric: str
    value: float
    source: str


@dataclasses.dataclass(frozen=True)
class Delta:
    """A difference a paper claims: mean of `plus` minus mean of `minus` on `metric`."""

    name: str
    plus: str
    minus: str
    metric: str
    claimed: float
    source: str


class Where:
    """Errors that name the study file and the field: `study file 'x.yaml': cells.a.task: ...`."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def error(self, field: str, message: str) -> ValueError:
        return ValueError(f"study file {str(self.path)!r}: {field}: {message}")


def unknown(key: object, valid: Sequence[str] | Mapping[str, Any], what: str) -> str:
    """`unknown <what> 'x'; valid: [...]. Did you mean 'y'?`"""
    names = list(valid)
    close = difflib.get_close_matches(str(key), names, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return f"unknown {what} {key!r}; valid: {names}.{hint}"


def check_keys(data: Any, valid: Sequence[str], where: Where, field: str) -> None:
    """`data` must be a mapping whose keys are all in `valid` (an unknown one: the closest)."""
    if not isinstance(data, Mapping):
        raise where.error(field, f"must be a mapping with keys {list(valid)}, got {data!r}")
    for key in data:
        if key not in valid:
            raise where.error(field, unknown(key, valid, "key"))


def text(value: Any, where: Where, field: str, *, empty_ok: bool = False) -> str:
    """`value` as a string, non-empty unless `empty_ok`."""
    if not isinstance(value, str) or not (empty_ok or value.strip()):
        raise where.error(field, f"must be a non-empty string, got {value!r}")
    return value


def _number(value: Any, where: Where, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise where.error(field, f"must be a number, got {value!r}")
    return float(value)


def _strings(value: Any, where: Where, field: str) -> tuple[str, ...]:
    value = [] if value is None else value
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise where.error(field, f"must be a list of non-empty strings, got {value!r}")
    return tuple(value)


def _known_cell(value: Any, cells: Mapping[str, Cell], where: Where, field: str) -> str:
    if not isinstance(value, str) or value not in cells:
        raise where.error(field, unknown(value, cells, "cell"))
    return str(value)


def _metric(value: Any, where: Where, field: str) -> str:
    if value not in METRIC_COLUMNS:
        raise where.error(field, unknown(value, METRIC_COLUMNS, "metric (a cells.csv column)"))
    return str(value)


def parse_evaluation(data: Any, where: Where) -> Evaluation:
    """`evaluation:` (every key optional; probe_args checked by contrastkit-probe's parser)."""
    check_keys(data, _EVALUATION_KEYS, where, "evaluation")
    probe = data.get("probe", "linear")
    if probe not in PROBES:
        raise where.error("evaluation.probe", unknown(probe, PROBES, "probe"))
    fraction = _number(data.get("label_fraction", 1.0), where, "evaluation.label_fraction")
    if not 0.0 < fraction <= 1.0:
        raise where.error("evaluation.label_fraction", f"must be in (0, 1], got {fraction}")
    pictures = data.get("pictures", False)
    if not isinstance(pictures, bool):
        raise where.error("evaluation.pictures", f"must be true or false, got {pictures!r}")
    probe_args = _strings(data.get("probe_args"), where, "evaluation.probe_args")
    _check_probe_args(probe_args, probe, where)
    return Evaluation(probe, fraction, probe_args, pictures)


def _check_probe_args(
    probe_args: tuple[str, ...], probe: str, where: Where, field: str = "evaluation.probe_args"
) -> None:
    """Parse the extra options with contrastkit-probe's own parser and checks."""
    from contrastkit.pipelines import probe_cli  # torch: only when a study is read

    parser = probe_cli.build_parser()
    unset = object()
    for action in parser._actions:  # the options the study sets: not required, defaults unset
        if action.dest in STUDY_PROBE_OPTIONS:
            action.required, action.default = False, unset

    def fail(message: str) -> None:
        raise where.error(
            field, f"{list(probe_args)} are not valid contrastkit-probe options: {message}"
        )

    def no_exit(status: int = 0, message: str | None = None) -> None:
        fail(message or "they ask for the probe's help and exit")

    # argparse would print (usage, help) and exit the process: raise instead, printing nothing.
    parser.error, parser.exit = fail, no_exit  # type: ignore[method-assign, assignment]
    parser.print_help = parser.print_usage = lambda file=None: None  # type: ignore[method-assign]
    args = parser.parse_args(list(probe_args))
    for dest, option in STUDY_PROBE_OPTIONS.items():
        if getattr(args, dest) is not unset:
            raise where.error(field, f"the study sets {option}; remove it from probe_args")
    args.checkpoint, args.output_dir, args.label_fraction, args.seed = "-", None, 1.0, 0
    args.finetune = probe == "finetune"
    try:
        probe_cli.check_args(args)
    except ValueError as error:
        raise where.error(field, str(error)) from None


def parse_cells(data: Any, base: Path, where: Where) -> dict[str, Cell]:
    """`cells:` in order; each config path resolved against `base` (not opened here)."""
    if not isinstance(data, Mapping) or not data:
        raise where.error(
            "cells", f"must be a non-empty mapping of cell name -> cell, got {data!r}"
        )
    cells: dict[str, Cell] = {}
    for name, body in data.items():
        if not isinstance(name, str) or not CELL_NAME.fullmatch(name):
            raise where.error(
                f"cells.{name}", "a cell name must be letters, digits, '_', '.' or '-' "
                "(not starting with '.' or '-')",
            )  # fmt: skip
        field = f"cells.{name}"
        check_keys(body, _CELL_KEYS, where, field)
        if "config" not in body:
            raise where.error(
                f"{field}.config", "is required (a config file, relative to the study)"
            )
        config = base / text(body["config"], where, f"{field}.config")
        task = body.get("task", "pretrain")
        if task not in TASKS:
            raise where.error(f"{field}.task", unknown(task, TASKS, "task"))
        overrides = _strings(body.get("overrides"), where, f"{field}.overrides")
        cells[name] = Cell(name, Path(config).resolve(), overrides, task)
    return cells


def _seeds(value: Any, where: Where, field: str) -> tuple[int, ...]:
    good = isinstance(value, list) and value and all(
        isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in value
    )  # fmt: skip
    if not good or len(set(value)) != len(value):
        raise where.error(field, f"must be a non-empty list of distinct ints >= 0, got {value!r}")
    return tuple(value)


def parse_profiles(
    data: Any, cells: Mapping[str, Cell], probe: str, where: Where
) -> dict[str, Profile]:
    """`profiles:` gpu and/or cpu; cpu must list its scale-downs."""
    if not isinstance(data, Mapping) or not data:
        raise where.error(
            "profiles", f"must be a non-empty mapping with keys from {list(PROFILES)}"
        )
    profiles: dict[str, Profile] = {}
    for name, body in data.items():
        if name not in PROFILES:
            raise where.error("profiles", unknown(name, PROFILES, "profile"))
        field = f"profiles.{name}"
        check_keys(body, _PROFILE_KEYS, where, field)
        if "seeds" not in body:
            raise where.error(f"{field}.seeds", "is required (a list of distinct ints >= 0)")
        per_cell = body.get("cell_overrides") or {}
        if not isinstance(per_cell, Mapping):
            raise where.error(
                f"{field}.cell_overrides", f"must map cell -> overrides, got {per_cell!r}"
            )
        cell_overrides = {
            _known_cell(cell, cells, where, f"{field}.cell_overrides"): _strings(
                texts, where, f"{field}.cell_overrides.{cell}"
            )
            for cell, texts in per_cell.items()
        }
        scale_downs = _strings(body.get("scale_downs"), where, f"{field}.scale_downs")
        if name == "cpu" and not scale_downs:
            raise where.error(
                f"{field}.scale_downs", "the cpu profile must list every scale-down (one line each)"
            )
        probe_args = _strings(body.get("probe_args"), where, f"{field}.probe_args")
        _check_probe_args(probe_args, probe, where, f"{field}.probe_args")
        profiles[name] = Profile(
            name=name,
            seeds=_seeds(body["seeds"], where, f"{field}.seeds"),
            description=text(
                body.get("description", ""), where, f"{field}.description", empty_ok=True
            ),
            overrides=_strings(body.get("overrides"), where, f"{field}.overrides"),
            cell_overrides=cell_overrides,
            scale_downs=scale_downs,
            probe_args=probe_args,
        )
    return profiles


def _entries(data: Any, keys: Sequence[str], where: Where, field: str) -> list[Mapping[str, Any]]:
    """The list's mappings, each checked to have exactly `keys` (all required)."""
    if not isinstance(data, list):
        raise where.error(field, f"must be a list of mappings with keys {list(keys)}, got {data!r}")
    for index, entry in enumerate(data):
        check_keys(entry, keys, where, f"{field}[{index}]")
        for key in keys:
            if key not in entry:
                raise where.error(f"{field}[{index}].{key}", f"is required; give {list(keys)}")
    return data


def parse_references(data: Any, cells: Mapping[str, Cell], where: Where) -> list[Reference]:
    """`references:` each of a known cell and metric, with a non-empty source."""
    found = []
    for i, entry in enumerate(_entries(data, _REFERENCE_KEYS, where, "references")):
        field = f"references[{i}]"
        found.append(
            Reference(
                cell=_known_cell(entry["cell"], cells, where, f"{field}.cell"),
                metric=_metric(entry["metric"], where, f"{field}.metric"),
                value=_number(entry["value"], where, f"{field}.value"),
                source=text(entry["source"], where, f"{field}.source"),
            )
        )
    return found


def parse_deltas(data: Any, cells: Mapping[str, Cell], where: Where) -> list[Delta]:
    """`deltas:` each between two known cells on one metric, with a non-empty source."""
    found = []
    for i, entry in enumerate(_entries(data, _DELTA_KEYS, where, "deltas")):
        field = f"deltas[{i}]"
        delta = Delta(
            name=text(entry["name"], where, f"{field}.name"),
            plus=_known_cell(entry["plus"], cells, where, f"{field}.plus"),
            minus=_known_cell(entry["minus"], cells, where, f"{field}.minus"),
            metric=_metric(entry["metric"], where, f"{field}.metric"),
            claimed=_number(entry["claimed"], where, f"{field}.claimed"),
            source=text(entry["source"], where, f"{field}.source"),
        )
        if delta.plus == delta.minus:
            raise where.error(field, f"plus and minus must be two cells, both are {delta.plus!r}")
        found.append(delta)
    return found
