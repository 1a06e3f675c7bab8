"""A reproduction study file (YAML in packages/pipelines/studies/): its cells, profiles, evaluation,
references and claimed deltas, read and checked whole before anything runs (`load_study`).

Every error is a ValueError that names the study file, the field or cell, and what is allowed.
The parts' dataclasses and field checks live in sections.py.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from contrastkit.pipelines.config import PretrainConfig, load_config
from contrastkit.pipelines.config.yaml_io import _yaml_problem
from contrastkit.pipelines.study.sections import (
    CELL_NAME,
    METRIC_COLUMNS,
    PROBES,
    PROFILES,
    TASKS,
    Cell,
    Delta,
    Evaluation,
    Profile,
    Reference,
    Where,
    check_keys,
    parse_cells,
    parse_deltas,
    parse_evaluation,
    parse_profiles,
    parse_references,
    text,
    unknown,
)

__all__ = [
    "METRIC_COLUMNS",
    "PROBES",
    "PROFILES",
    "STUDIES_DIR",
    "STUDY_COPY_NAME",
    "TASKS",
    "Cell",
    "Delta",
    "Evaluation",
    "Profile",
    "Reference",
    "StudySpec",
    "list_studies",
    "load_study",
]

# packages/pipelines/studies: present in a checkout or an editable install.
STUDIES_DIR = Path(__file__).resolve().parents[4] / "studies"
STUDY_COPY_NAME = "study.yaml"  # the copy a run keeps in its output folder (any study's name)
_TOP_KEYS = ("name", "description", "evaluation", "cells", "profiles", "references", "deltas")


@dataclasses.dataclass(frozen=True)
class StudySpec:
    """A checked study file. `path` is the file read; `base_dir` where its config paths resolved."""

    name: str
    description: str
    path: Path
    base_dir: Path
    evaluation: Evaluation
    cells: Mapping[str, Cell]
    profiles: Mapping[str, Profile]
    references: tuple[Reference, ...] = ()
    deltas: tuple[Delta, ...] = ()

    def cell(self, name: str) -> Cell:
        """The cell called `name` (ValueError listing the cells, with the closest, otherwise)."""
        if name not in self.cells:
            raise ValueError(unknown(name, self.cells, f"cell of study {self.name!r}"))
        return self.cells[name]

    def profile(self, name: str) -> Profile:
        """The profile called `name` (ValueError listing the study's profiles otherwise)."""
        if name not in self.profiles:
            raise ValueError(unknown(name, self.profiles, f"profile of study {self.name!r}"))
        return self.profiles[name]

    def evaluation_for(self, profile: str) -> Evaluation:
        """`evaluation` with the profile's probe_args after the study's (the last one wins)."""
        extra = self.profile(profile).probe_args
        return dataclasses.replace(
            self.evaluation, probe_args=(*self.evaluation.probe_args, *extra)
        )

    def overrides(
        self, cell: str, profile: str, seed: int | None = None, output_dir: str | Path | None = None
    ) -> list[str]:
        """The overrides a run of `cell` under `profile` applies to the cell's config, in order:
        the cell's, the profile's, the profile's `cell_overrides` of this cell, then
        `train.seed=<seed>` and `train.output_dir=<output_dir>` (when given; quoted as YAML)."""
        layers = self.cell(cell).overrides + self.profile(profile).overrides
        layers += self.profile(profile).cell_overrides.get(cell, ())
        if seed is not None:
            layers += (f"train.seed={seed}",)
        if output_dir is not None:
            layers += (f"train.output_dir={json.dumps(str(output_dir))}",)
        return list(layers)

    def resolved_config(
        self, cell: str, profile: str, seed: int, output_dir: str | Path
    ) -> PretrainConfig:
        """The validated config of one run (JointTrainingConfig for a joint cell): the cell's
        config file with `overrides(cell, profile, seed, output_dir)` applied."""
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {seed!r}")
        found = self.cell(cell)
        texts = self.overrides(cell, profile, seed, output_dir)
        return load_config(found.config, texts, found.config_class)


# ----------------------------------------------------------------------------------------------
# Finding and reading study files


def load_study(
    path_or_name: str | Path, base_dir: str | Path | None = None, *, check_configs: bool = True
) -> StudySpec:
    """Read and check a study: a bare name (`imix_covtype`) is STUDIES_DIR/<name>.yaml; a path to a
    YAML file works too. Cell config paths resolve against `base_dir` (default: the file's folder;
    give the original study folder when reading the copy a run keeps).

    check_configs=False skips opening the cells' config files (a report read where they are not,
    e.g. a committed results folder) but checks everything else.
    Raises ValueError naming the file, the field or cell and what is allowed.
    """
    path = _study_path(path_or_name)
    where = Where(path)
    data = _read_yaml(path, where)
    base = Path(base_dir).resolve() if base_dir is not None else path.parent
    check_keys(data, _TOP_KEYS, where, "the top level")
    for key in ("name", "cells", "profiles"):
        if key not in data:
            raise where.error(key, "is required (a study needs name, cells and profiles)")
    name = text(data["name"], where, "name")
    if path.name != STUDY_COPY_NAME and name != path.stem:
        raise where.error("name", f"must equal the file name's stem {path.stem!r}, got {name!r}")
    cells = parse_cells(data["cells"], base, where)
    evaluation = parse_evaluation(data.get("evaluation") or {}, where)
    spec = StudySpec(
        name=name,
        description=text(data.get("description", ""), where, "description", empty_ok=True),
        path=path,
        base_dir=base,
        evaluation=evaluation,
        cells=cells,
        profiles=parse_profiles(data["profiles"], cells, evaluation.probe, where),
        references=tuple(parse_references(data.get("references") or [], cells, where)),
        deltas=tuple(parse_deltas(data.get("deltas") or [], cells, where)),
    )
    if check_configs:
        _check_configs(spec, where)
    return spec


def list_studies(studies_dir: str | Path = STUDIES_DIR) -> list[StudySpec]:
    """Every study in `studies_dir` (default STUDIES_DIR), loaded and checked, sorted by name;
    [] when the folder does not exist (an install without the repository's studies)."""
    folder = Path(studies_dir)
    if not folder.is_dir():
        return []
    return [load_study(path) for path in sorted(folder.glob("*.yaml"))]


def _study_path(path_or_name: str | Path) -> Path:
    """The study file a name or path means (ValueError when there is none)."""
    given = str(path_or_name)
    is_name = (
        not isinstance(path_or_name, Path)
        and bool(CELL_NAME.fullmatch(given))
        and Path(given).suffix not in (".yaml", ".yml")
    )
    path = STUDIES_DIR / f"{given}.yaml" if is_name else Path(given)
    if path.is_file():
        return path.resolve()
    if is_name:
        found = sorted(p.stem for p in STUDIES_DIR.glob("*.yaml")) if STUDIES_DIR.is_dir() else []
        close = difflib.get_close_matches(given, found, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(
            f"no study named {given!r} in {str(STUDIES_DIR)!r}; studies found: {found}.{hint} "
            "A path to a study YAML file works too."
        )
    what = "is a folder; give a study YAML file" if path.is_dir() else "does not exist"
    raise ValueError(f"study file {given!r} {what}")


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key given twice in one mapping is an error (PyYAML keeps
    the last one silently: a repeated cell name would drop a cell)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _read_yaml(path: Path, where: Where) -> dict[str, Any]:
    """The top-level mapping of the study file."""
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except UnicodeDecodeError:
        raise where.error("file", "is not UTF-8 text; give a YAML file") from None
    except yaml.YAMLError as error:
        raise where.error("file", f"is not valid YAML: {_yaml_problem(error)}") from None
    if not isinstance(data, dict):
        raise where.error("file", f"must hold a mapping of {list(_TOP_KEYS)}, got {data!r}")
    return data


def _check_configs(spec: StudySpec, where: Where) -> None:
    """Build every cell's config alone and under each profile, so that a missing file, an override
    that does not apply, or a profile that breaks a cell fails before anything runs."""
    for name, cell in spec.cells.items():
        if not cell.config.is_file():
            raise where.error(
                f"cells.{name}.config", f"config file {str(cell.config)!r} does not exist"
            )
        config = _build(cell, list(cell.overrides), where, f"cells.{name}.overrides")
        for profile in spec.profiles:
            texts = spec.overrides(name, profile)
            _build(cell, texts, where, f"profiles.{profile} (applied to cell {name!r})")
        if spec.evaluation.pictures and config.data.dataset == "tabular":
            raise where.error(
                "evaluation.pictures", f"t-SNE and NN grid pictures need image data; cell {name!r} "
                "trains on tabular rows: set pictures: false",
            )  # fmt: skip
    if spec.evaluation.probe != "knn":
        return
    # A kNN-only probe leaves linear_top1 empty for pretrain cells: nothing to compare.
    probed = {n for n, c in spec.cells.items() if c.task == "pretrain"}
    uses = [(f"references[{i}]", r.metric, {r.cell}) for i, r in enumerate(spec.references)]
    uses += [(f"deltas[{i}]", d.metric, {d.plus, d.minus}) for i, d in enumerate(spec.deltas)]
    for field, metric, cells in uses:
        if metric == "linear_top1" and cells & probed:
            raise where.error(
                f"{field}.metric", "linear_top1 is not measured with evaluation.probe: knn "
                "(kNN only); use knn_top1, or probe: linear",
            )  # fmt: skip


def _build(cell: Cell, overrides: list[str], where: Where, field: str) -> PretrainConfig:
    """The cell's config with `overrides`, or a ValueError naming `field` and the config's error."""
    try:
        return load_config(cell.config, overrides, cell.config_class)
    except (ValueError, FileNotFoundError) as error:
        hint = ""
        if cell.task == "pretrain" and "unknown key 'joint'" in str(error):
            hint = " (a joint training config: set task: joint)"
        raise where.error(field, f"config {str(cell.config)!r}: {error}{hint}") from None
