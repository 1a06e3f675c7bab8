"""The shipped recipes: every config resolves, `--print-config` prints it (and touches nothing),
two optimizer steps run on the CPU, and RECIPES.md's "our value" column is the resolved config."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from pretrain_helpers import CONFIG_DIR, REPO_ROOT, toy_tabular

from contrastkit.pipelines import joint, pretrain
from contrastkit.pipelines.config import (
    JointTrainingConfig,
    PretrainConfig,
    config_from_dict,
    config_sections,
    config_to_dict,
    load_config,
    read_config_file,
)

RECIPES_MD = REPO_ROOT / "packages" / "pipelines" / "RECIPES.md"
SHIPPED = sorted(CONFIG_DIR.glob("*.yaml"))
IDS = [p.stem for p in SHIPPED]
PERMALINK = re.compile(
    r"https://github\.com/[\w.-]+/[\w.-]+/blob/[0-9a-f]{40}/[\w./-]+#L\d+(?:-L\d+)?\)"
)


def config_class(path: Path) -> type[PretrainConfig]:
    return JointTrainingConfig if "joint" in read_config_file(path) else PretrainConfig


def resolved(path: Path, overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    return config_to_dict(load_config(path, list(overrides), config_class(path)))


# ----------------------------------------------------------------------------------------------
# --print-config


@pytest.mark.parametrize("path", SHIPPED, ids=IDS)
def test_print_config_prints_the_resolved_config_and_touches_nothing(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)  # the configs' relative output_dir would land here
    missing_data = tmp_path / "no_such_data"
    cls = config_class(path)
    main = joint.main if cls is JointTrainingConfig else pretrain.main
    status = main(["--config", str(path), "--data-dir", str(missing_data), "--print-config"])
    out = capsys.readouterr().out
    assert status == 0
    printed = yaml.safe_load(out)
    expected = load_config(path, [f"data.data_dir={missing_data}"], cls)
    # Every field of every section is printed, and reading it back gives the same config.
    for name, section in config_sections(cls).items():
        assert list(printed[name]) == [f.name for f in dataclasses.fields(section)]
    assert config_from_dict(printed, cls) == expected
    assert list(tmp_path.iterdir()) == []  # no run directory, no data read or downloaded


def test_print_config_fills_the_method_preset() -> None:
    # isd_myresnet_cifar10.yaml leaves the ISD preset's fields out; --print-config shows them.
    raw = read_config_file(CONFIG_DIR / "isd_myresnet_cifar10.yaml")
    assert "projection_layers" not in raw["model"] and "lr" not in raw.get("optimizer", {})
    config = resolved(CONFIG_DIR / "isd_myresnet_cifar10.yaml")
    assert config["model"]["projection_layers"] == 0
    assert (config["optimizer"]["lr"], config["optimizer"]["schedule"]) == (0.01, "step")
    assert config["method"]["momentum"] == 0.999


def test_print_config_from_the_joint_script(tmp_path: Path) -> None:
    # The script as a user runs it: a fresh process, the joint entry point, exit status 0.
    path = CONFIG_DIR / "joint_isd_myresnet_cifar10.yaml"
    script = REPO_ROOT / "packages" / "pipelines" / "joint.py"
    args = ["--config", str(path), "--data-dir", str(tmp_path / "none"), "joint.ssl_weight=0.5"]
    done = subprocess.run(
        [sys.executable, str(script), *args, "--print-config"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    printed = yaml.safe_load(done.stdout)
    assert printed["joint"]["ssl_weight"] == 0.5
    assert printed["optimizer"]["lr_decay_epochs"] == [90.0, 120.0]
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------------------------
# Two optimizer steps on the CPU

# Shrinks that keep each recipe's method, heads, optimizer and views: 2 steps of a tiny batch.
IMAGE_SHRINK = [
    "data.image_size=8",
    "data.knn_test_subset=8",
    "train.epochs=1",
    "train.batch_size=40",  # 80 toy images -> 2 steps
    "train.knn_every=0",
    "train.log_every=1",
    "train.checkpoint_every=0",
    "train.progress_bar=false",
]
RECIPE_SHRINK: dict[str, list[str]] = {
    "imix_npair_cifar10_15k": ["data.train_subset=32", "train.batch_size=16"],
    "imix_moco_covtype": [
        "model.backbone_kwargs.width_multiplier=0.125",  # w = 8: 1.04M parameters, 256 features
        "model.projection_hidden_dim=256",
        "train.batch_size=32",  # 64 rows -> 2 steps
    ],
}
STEP_RUNS = [p for p in SHIPPED if "smoke" not in p.stem]


def _warmup_override(path: Path) -> str:
    # The recipes warm up for 5-10 epochs; a 1-epoch run keeps a warm-up if the recipe has one.
    warmup = read_config_file(path).get("train", {}).get("warmup_epochs", 10)
    return f"train.warmup_epochs={0.5 if warmup else 0}"


@pytest.mark.parametrize("path", STEP_RUNS, ids=[p.stem for p in STEP_RUNS])
def test_every_recipe_runs_two_optimizer_steps_on_the_cpu(
    path: Path, tmp_path: Path, toy_cifar_dir: Path
) -> None:
    tabular = read_config_file(path)["data"]["dataset"] == "tabular"
    overrides = [
        *IMAGE_SHRINK,
        f"train.output_dir={tmp_path / 'run'}",
        _warmup_override(path),
        *(["method.queue_size=64"] if "queue_size" in read_config_file(path)["method"] else []),
        *RECIPE_SHRINK.get(path.stem, []),
    ]
    if tabular:
        overrides = [o for o in overrides if not o.startswith(("data.image_size", "data.knn"))]
    else:
        overrides.append(f"data.data_dir={toy_cifar_dir}")
    cls = config_class(path)
    config = load_config(path, overrides, cls)
    train_data = toy_tabular(64, features=54) if tabular else None
    torch.manual_seed(0)
    if cls is JointTrainingConfig:
        result = joint.run_joint(config, train_data=train_data)
    else:
        result = pretrain.run_pretrain(config, train_data=train_data)
    assert result.step == 2 and result.epoch == 1
    rows = (result.run_dir / "metrics.csv").read_text().splitlines()
    losses = [float(row.split(",")[2]) for row in rows[1:]]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    # The run saved the config it ran: the recipe, as resolved, with the shrinks.
    saved = yaml.safe_load((result.run_dir / "config.yaml").read_text())
    expected = config_to_dict(load_config(path, overrides, cls))
    if tabular:  # filled from the data when the backbone is built
        saved["model"]["backbone_kwargs"].pop("in_features")
    assert saved == expected


# ----------------------------------------------------------------------------------------------
# RECIPES.md


def recipe_tables() -> list[tuple[list[str], list[str], list[list[str]]]]:
    """(config names, overrides, table rows) for every table of RECIPES.md, in order. A `## `
    heading names the configs in backticks; a `### With `section.field=value`` heading adds an
    override for the tables below it."""
    tables: list[tuple[list[str], list[str], list[list[str]]]] = []
    names: list[str] = []
    overrides: list[str] = []
    rows: list[list[str]] | None = None
    for line in RECIPES_MD.read_text().splitlines():
        if line.startswith("## "):
            names, overrides = re.findall(r"`([\w.]+\.yaml)`", line), []
        elif line.startswith("### "):
            overrides = re.findall(r"`([\w.]+=[^`]+)`", line)
        if line.startswith("| field | our value | original value | source |"):
            rows = []
            tables.append((names, overrides, rows))
        elif rows is not None and line.startswith("|"):
            if not line.startswith("| ---"):
                rows.append([cell.strip() for cell in line.strip("|").split(" | ")])
        else:
            rows = None
    return tables


def test_recipes_md_names_every_shipped_config() -> None:
    headings = [line for line in RECIPES_MD.read_text().splitlines() if line.startswith("## ")]
    named = {name for line in headings for name in re.findall(r"`([\w.]+\.yaml)`", line)}
    assert named == {p.name for p in SHIPPED}
    recipes = {names[0] for names, _, _ in recipe_tables()}
    assert recipes == {p.name for p in STEP_RUNS} - {"joint_supervised_myresnet_cifar10.yaml"}


def _lookup(config: dict[str, Any], path: str) -> Any:
    node: Any = config
    for key in path.split("."):
        assert isinstance(node, dict) and key in node, f"{path!r} is not a resolved config field"
        node = node[key]
    return node


def test_recipes_md_our_values_are_the_resolved_configs() -> None:
    checked = 0
    for names, overrides, rows in recipe_tables():
        for name in names:
            config = resolved(CONFIG_DIR / name, overrides)
            for field, ours, _original, source in rows:
                assert PERMALINK.search(source), f"{name} {field}: no permalink in {source!r}"
                match = re.fullmatch(r"`([a-z_]+(?:\.[a-z_]+)+)`", field)
                if match is None:  # a setting without a config field, said in words
                    continue
                value = yaml.safe_load(ours.strip("`"))
                assert value == _lookup(config, match.group(1)), (name, overrides, field)
                checked += 1
    assert checked > 150
