"""Study files (contrastkit.pipelines.study.spec): the shipped studies load, a bad study file fails
with an error naming the file, the field or cell and what is allowed, and a run's config is the
cell's config with the cell's, the profile's and the profile's per-cell overrides, in that order."""

from __future__ import annotations

import copy
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from pretrain_helpers import CONFIG_DIR

from contrastkit.pipelines.config import JointTrainingConfig, PretrainConfig, load_config
from contrastkit.pipelines.study import spec as spec_module
from contrastkit.pipelines.study.spec import (
    METRIC_COLUMNS,
    STUDIES_DIR,
    list_studies,
    load_study,
)

SHIPPED = sorted(STUDIES_DIR.glob("*.yaml"))


def rel(path: Path, start: Path) -> str:
    """`path` relative to `start`: study files name their configs relative to themselves."""
    return os.path.relpath(path, start)


def valid_study(folder: Path) -> dict[str, Any]:
    """A valid two-cell study for a file in `folder` (config paths relative to it)."""
    return {
        "name": "tiny",
        "description": "Does i-Mix help N-pair? A toy.",
        "evaluation": {"probe": "linear", "label_fraction": 0.5, "probe_args": ["--epochs", "3"]},
        "cells": {
            "npair": {
                "config": rel(CONFIG_DIR / "imix_npair_cifar10_15k.yaml", folder),
                "overrides": ["method.imix=none", "train.batch_size=16"],
            },
            "npair_imix": {"config": rel(CONFIG_DIR / "imix_npair_cifar10_15k.yaml", folder)},
        },
        "profiles": {
            "gpu": {"description": "the paper's scale", "seeds": [0, 1, 2]},
            "cpu": {
                "description": "toy scale",
                "seeds": [0, 1],
                "overrides": ["train.epochs=3", "train.warmup_epochs=1", "train.batch_size=24"],
                "cell_overrides": {"npair": ["train.batch_size=32"]},
                "scale_downs": ["3 epochs instead of 2000"],
            },
        },
        "references": [
            {"cell": "npair", "metric": "linear_top1", "value": 93.3, "source": "i-Mix, Table 2"}
        ],
        "deltas": [
            {
                "name": "i-Mix gain",
                "plus": "npair_imix",
                "minus": "npair",
                "metric": "linear_top1",
                "claimed": 2.3,
                "source": "i-Mix, Table 2",
            }
        ],
    }


def write_study(folder: Path, data: dict[str, Any], stem: str = "tiny") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stem}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


# ----------------------------------------------------------------------------------------------
# The shipped studies


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_every_shipped_study_loads_with_both_profiles(path: Path) -> None:
    study = load_study(path.stem)  # by bare name, as `study.py run NAME` finds it
    assert study.path == path.resolve() and study.name == path.stem
    assert set(study.profiles) == {"gpu", "cpu"}
    assert study.profiles["cpu"].scale_downs
    assert study.description.strip()
    assert all(ref.source.strip() for ref in study.references)
    for cell in study.cells.values():
        assert cell.config.parent == CONFIG_DIR.resolve()  # a shipped config
        cls = JointTrainingConfig if cell.task == "joint" else PretrainConfig
        for name, profile in study.profiles.items():
            config = study.resolved_config(cell.name, name, profile.seeds[0], "out")
            assert type(config) is cls and config.train.seed == profile.seeds[0]


def test_list_studies_loads_every_file_sorted_by_name(tmp_path: Path) -> None:
    for stem in ("zeta", "alpha"):
        write_study(tmp_path, {**valid_study(tmp_path), "name": stem}, stem)
    (tmp_path / "README.md").write_text("not a study")
    assert [s.name for s in list_studies(tmp_path)] == ["alpha", "zeta"]
    assert list_studies(tmp_path / "absent") == []
    assert [s.name for s in list_studies()] == [p.stem for p in SHIPPED]


# ----------------------------------------------------------------------------------------------
# Reading a valid study


def test_a_valid_study_reads_every_field(tmp_path: Path) -> None:
    data = valid_study(tmp_path / "studies")
    path = write_study(tmp_path / "studies", data)
    study = load_study(path)
    assert (study.name, study.description, study.path) == ("tiny", data["description"], path)
    assert list(study.cells) == ["npair", "npair_imix"]  # file order
    npair = study.cells["npair"]
    assert npair.config == (CONFIG_DIR / "imix_npair_cifar10_15k.yaml").resolve()
    assert (npair.task, npair.overrides) == (
        "pretrain",
        ("method.imix=none", "train.batch_size=16"),
    )
    assert study.cells["npair_imix"].overrides == ()
    evaluation = study.evaluation
    assert (evaluation.probe, evaluation.label_fraction) == ("linear", 0.5)
    assert (evaluation.probe_args, evaluation.pictures) == (("--epochs", "3"), False)
    cpu = study.profiles["cpu"]
    assert cpu.seeds == (0, 1) and cpu.cell_overrides == {"npair": ("train.batch_size=32",)}
    assert study.profiles["gpu"].overrides == () and study.profiles["gpu"].scale_downs == ()
    assert [(r.cell, r.metric, r.value, r.source) for r in study.references] == [
        ("npair", "linear_top1", 93.3, "i-Mix, Table 2")
    ]
    assert [(d.plus, d.minus, d.claimed) for d in study.deltas] == [("npair_imix", "npair", 2.3)]


def test_optional_parts_take_their_defaults(tmp_path: Path) -> None:
    data = valid_study(tmp_path)
    for key in ("description", "evaluation", "references", "deltas"):
        del data[key]
    study = load_study(write_study(tmp_path, data))
    assert study.description == "" and study.references == () and study.deltas == ()
    assert (study.evaluation.probe, study.evaluation.label_fraction) == ("linear", 1.0)
    assert (study.evaluation.probe_args, study.evaluation.pictures) == ((), False)


def test_a_bare_name_is_looked_up_in_the_studies_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_study(tmp_path, valid_study(tmp_path))
    monkeypatch.setattr(spec_module, "STUDIES_DIR", tmp_path)
    assert load_study("tiny").path == path
    with pytest.raises(ValueError) as error:
        load_study("tinny")
    message = str(error.value)
    assert "no study named 'tinny'" in message and str(tmp_path) in message
    assert "studies found: ['tiny']" in message and "Did you mean 'tiny'?" in message
    assert "A path to a study YAML file works too" in message
    with pytest.raises(ValueError, match="does not exist"):
        load_study(tmp_path / "absent.yaml")


def test_the_copy_a_run_keeps_loads_with_the_original_folder(tmp_path: Path) -> None:
    original = write_study(tmp_path / "studies", valid_study(tmp_path / "studies"))
    copied = tmp_path / "runs" / "tiny_cpu" / "study.yaml"
    copied.parent.mkdir(parents=True)
    shutil.copyfile(original, copied)
    # Relative config paths resolve against the copy's folder, where there are none ...
    with pytest.raises(ValueError, match=r"cells\.npair\.config: config file .* does not exist"):
        load_study(copied)
    # ... and against the original study folder when the caller says so; the copy's file name
    # "study.yaml" need not equal the study's name.
    study = load_study(copied, base_dir=original.parent)
    assert study.name == "tiny" and study.path == copied
    assert study.cells["npair"].config == (CONFIG_DIR / "imix_npair_cifar10_15k.yaml").resolve()
    # A report reads a copy where the configs are not: everything but the configs is checked.
    unchecked = load_study(copied, check_configs=False)
    assert unchecked.references == study.references and unchecked.profiles == study.profiles


# ----------------------------------------------------------------------------------------------
# A run's config: the layers in order


def test_resolved_config_applies_cell_then_profile_then_cell_overrides(tmp_path: Path) -> None:
    study = load_study(write_study(tmp_path, valid_study(tmp_path)))
    config_file = CONFIG_DIR / "imix_npair_cifar10_15k.yaml"
    output_dir = tmp_path / "out #1: a"  # YAML would read '#' as a comment and ': ' as a mapping
    # npair: the cell sets batch 16, the cpu profile 24, the profile's npair entry 32 (last wins).
    config = study.resolved_config("npair", "cpu", 7, output_dir)
    expected = load_config(
        config_file,
        ["method.imix=none", "train.epochs=3", "train.warmup_epochs=1", "train.batch_size=32"],
    )
    assert config.train.batch_size == 32 and config.train.epochs == 3
    assert config.method.imix == "none" and config.train.seed == 7
    assert config.train.output_dir == str(output_dir)
    assert (config.method, config.model, config.data, config.optimizer) == (
        expected.method, expected.model, expected.data, expected.optimizer,
    )  # fmt: skip
    # npair_imix: no cell overrides, no per-cell entry: the profile's batch 24, the file's i-Mix.
    other = study.resolved_config("npair_imix", "cpu", 0, output_dir)
    assert (
        other.train.batch_size == 24 and other.method.imix == load_config(config_file).method.imix
    )
    # gpu adds nothing: the cell's own batch 16 and the file's 2000 epochs.
    gpu = study.resolved_config("npair", "gpu", 2, "o")
    assert (gpu.train.batch_size, gpu.train.epochs) == (16, load_config(config_file).train.epochs)
    assert study.overrides("npair", "cpu", 7) == [
        "method.imix=none", "train.batch_size=16",
        "train.epochs=3", "train.warmup_epochs=1", "train.batch_size=24",
        "train.batch_size=32", "train.seed=7",
    ]  # fmt: skip


def test_resolved_config_of_a_joint_cell_is_a_joint_config(tmp_path: Path) -> None:
    data = valid_study(tmp_path)
    joint_file = CONFIG_DIR / "joint_supervised_myresnet_cifar10.yaml"
    data["cells"]["supervised"] = {"config": rel(joint_file, tmp_path), "task": "joint"}
    study = load_study(write_study(tmp_path, data))
    config = study.resolved_config("supervised", "cpu", 1, "o")
    assert isinstance(config, JointTrainingConfig)
    assert config.joint == load_config(joint_file, [], JointTrainingConfig).joint
    assert config.train.epochs == 3


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        (
            lambda s: s.resolved_config("npiar", "cpu", 0, "o"),
            "unknown cell of study 'tiny' 'npiar'",
        ),
        (lambda s: s.resolved_config("npair", "tpu", 0, "o"), "valid: ['gpu', 'cpu']"),
        (lambda s: s.resolved_config("npair", "cpu", -1, "o"), "seed must be an int >= 0, got -1"),
    ],
    ids=["cell", "profile", "seed"],
)
def test_resolved_config_rejects_unknown_names(
    tmp_path: Path, call: Callable[[Any], Any], expected: str
) -> None:
    study = load_study(write_study(tmp_path, valid_study(tmp_path)))
    with pytest.raises(ValueError) as error:
        call(study)
    assert expected in str(error.value)


# ----------------------------------------------------------------------------------------------
# Bad study files: each error names the file, the field or cell, and what is allowed


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """A change that sets data[a][b]... = value (path "a.b"; list indices as digits)."""

    def change(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = data
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        node[int(last) if isinstance(node, list) else last] = value

    return change


def _delete(path: str) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = data
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        del node[int(last) if isinstance(node, list) else last]

    return change


COVTYPE = CONFIG_DIR / "imix_moco_covtype.yaml"
JOINT = CONFIG_DIR / "joint_isd_myresnet_cifar10.yaml"
BAD: dict[str, tuple[Callable[[dict[str, Any]], None], list[str]]] = {
    "unknown top-level key": (
        _set("referencs", []), ["the top level", "'referencs'", "Did you mean 'references'?"]
    ),
    "missing cells": (_delete("cells"), ["cells: is required"]),
    "profile probe_args the study sets": (
        _set("profiles.cpu.probe_args", ["--seed", "3"]),
        ["profiles.cpu.probe_args:", "the study sets --seed"],
    ),
    "name is not the stem": (_set("name", "tiny2"), ["name: must equal", "'tiny'", "'tiny2'"]),
    "unknown cell key": (
        _set("cells.npair.overides", []), ["cells.npair:", "'overides'", "Did you mean 'overrides'?"]
    ),
    "cell without config": (_delete("cells.npair.config"), ["cells.npair.config: is required"]),
    "bad cell name": (
        lambda d: d["cells"].update({"a,b": d["cells"]["npair"]}), ["cells.a,b:", "letters, digits"]
    ),
    "missing config file": (
        _set("cells.npair.config", "no/such.yaml"),
        ["cells.npair.config: config file", "no/such.yaml", "does not exist"],
    ),
    "override of no field": (
        _set("cells.npair.overrides", ["train.epochz=3"]),
        ["cells.npair.overrides:", "imix_npair_cifar10_15k.yaml", "'epochz'", "'epochs'"],
    ),
    "override with a bad value": (
        _set("cells.npair.overrides", ["method.imix=cutmixx"]),
        ["cells.npair.overrides:", "method.imix", "cutmixx"],
    ),
    "override list of non-strings": (
        _set("cells.npair.overrides", [3]), ["cells.npair.overrides: must be a list of non-empty"]
    ),
    "profile breaks a cell": (
        _set("profiles.cpu.overrides", ["train.epochs=3"]),
        ["profiles.cpu (applied to cell 'npair')", "train.warmup_epochs must be <= train.epochs"],
    ),
    "bad task": (
        _set("cells.npair.task", "train"), ["cells.npair.task:", "'train'", "['pretrain', 'joint']"]
    ),
    "joint config as a pretrain cell": (
        _set("cells.npair.config", str(JOINT)), ["cells.npair.overrides:", "set task: joint"]
    ),
    "unknown profile": (
        lambda d: d["profiles"].update({"tpu": d["profiles"]["gpu"]}),
        ["profiles:", "unknown profile 'tpu'", "['gpu', 'cpu']"],
    ),
    "unknown profile key": (
        _set("profiles.gpu.seed", [0]), ["profiles.gpu:", "'seed'", "Did you mean 'seeds'?"]
    ),
    "profile without seeds": (_delete("profiles.gpu.seeds"), ["profiles.gpu.seeds: is required"]),
    "cpu without scale-downs": (
        _delete("profiles.cpu.scale_downs"), ["profiles.cpu.scale_downs:", "every scale-down"]
    ),
    "unknown cell in cell_overrides": (
        _set("profiles.cpu.cell_overrides", {"npiar": []}),
        ["profiles.cpu.cell_overrides:", "'npiar'", "Did you mean 'npair'?"],
    ),
    "unknown cell in references": (
        _set("references.0.cell", "byol"), ["references[0].cell:", "'byol'", "'npair_imix'"]
    ),
    "missing reference source": (
        _delete("references.0.source"), ["references[0].source: is required", "'source'"]
    ),
    "empty delta source": (_set("deltas.0.source", " "), ["deltas[0].source: must be a non-empty"]),
    "unknown cell in deltas": (
        _set("deltas.0.minus", "npair_mix"), ["deltas[0].minus:", "Did you mean 'npair_imix'?"]
    ),
    "delta of one cell": (_set("deltas.0.minus", "npair_imix"), ["deltas[0]:", "two cells"]),
    "metric not a column": (
        _set("references.0.metric", "top1"), ["references[0].metric:", "'top1'", "'linear_top1'"]
    ),
    "reference value not a number": (
        _set("references.0.value", "93.3%"), ["references[0].value: must be a number"]
    ),
    "bad probe": (_set("evaluation.probe", "svm"), ["evaluation.probe:", "'linear', 'finetune'"]),
    "label fraction 0": (_set("evaluation.label_fraction", 0), ["evaluation.label_fraction:", "(0, 1]"]),
    "unknown probe option": (
        _set("evaluation.probe_args", ["--epoch", "x"]),
        ["evaluation.probe_args:", "not valid contrastkit-probe options", "--epochs"],
    ),
    "probe option the study sets": (
        _set("evaluation.probe_args", ["--output-dir", "x"]), ["evaluation.probe_args:", "study sets"]
    ),
    "probe seed (the run's seed)": (
        _set("evaluation.probe_args", ["--seed", "3"]), ["evaluation.probe_args:", "--seed"]
    ),
    "probe option out of range": (
        _set("evaluation.probe_args", ["--lr", "-1"]), ["evaluation.probe_args:", "--lr must be > 0"]
    ),
    "probe help": (_set("evaluation.probe_args", ["--help"]), ["evaluation.probe_args:", "help"]),
    "pictures of tabular rows": (
        lambda d: (_set("evaluation.pictures", True)(d), _set("cells.npair.config", str(COVTYPE))(d)),
        ["evaluation.pictures:", "image data", "'npair'"],
    ),
    "linear top-1 under a kNN probe": (
        _set("evaluation.probe", "knn"), ["references[0].metric:", "knn_top1"]
    ),
}  # fmt: skip
SEEDS = [[], [0, 0], [-1], ["0"], [True], 3, None]


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_a_bad_study_names_the_file_the_field_and_what_is_allowed(
    tmp_path: Path, case: str
) -> None:
    data = copy.deepcopy(valid_study(tmp_path))
    change, expected = BAD[case]
    change(data)
    path = write_study(tmp_path, data)
    with pytest.raises(ValueError) as error:
        load_study(path)
    message = str(error.value)
    assert message.startswith(f"study file {str(path)!r}: "), message
    for part in expected:
        assert part in message, (part, message)


@pytest.mark.parametrize("seeds", SEEDS, ids=[repr(s) for s in SEEDS])
def test_seeds_must_be_distinct_ints_at_least_0(tmp_path: Path, seeds: Any) -> None:
    data = valid_study(tmp_path)
    data["profiles"]["cpu"]["seeds"] = seeds
    path = write_study(tmp_path, data)
    with pytest.raises(
        ValueError, match=r"profiles\.cpu\.seeds: must be a non-empty list of distinct"
    ):
        load_study(path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name: tiny\ncells: {a: {config: x.yaml}, a: {config: y.yaml}}\n", "line 2, column 30: key 'a' is given twice"),
        ("name: tiny\ncells: [a\n", "is not valid YAML: line 3"),
        ("- a\n- b\n", "file: must hold a mapping"),
    ],
    ids=["repeated cell", "broken YAML", "a list"],
)  # fmt: skip
def test_a_study_file_that_is_not_a_mapping_of_unique_keys(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = tmp_path / "tiny.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError) as error:
        load_study(path)
    assert str(error.value).startswith(f"study file {str(path)!r}: ") and expected in str(
        error.value
    )


def test_metrics_are_cells_csv_columns() -> None:
    from contrastkit.pipelines.study.cells_csv import CELL_COLUMNS

    assert set(METRIC_COLUMNS) <= set(CELL_COLUMNS)


def test_a_profiles_probe_args_come_after_the_studys(tmp_path: Path) -> None:
    data = valid_study(tmp_path)
    data["profiles"]["cpu"]["probe_args"] = ["--test-subset", "200", "--epochs", "5"]
    spec = load_study(write_study(tmp_path, data))
    assert spec.evaluation_for("cpu").probe_args == (
        "--epochs", "3", "--test-subset", "200", "--epochs", "5",
    )  # fmt: skip
    assert spec.evaluation_for("gpu").probe_args == ("--epochs", "3")
    assert spec.evaluation.probe_args == ("--epochs", "3")  # the study's own stay as written
