"""The chance level of a run's accuracy curves: how many classes a run folder was trained or
probed on, read back from what the run wrote (checkpoint meta.json, config.yaml, results.csv)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import yaml

from contrastkit.pipelines.checkpoint import list_checkpoints, read_meta
from contrastkit.pipelines.evaluation.results import read_csv_table
from contrastkit.pipelines.run_files import CONFIG_FILE, RESULTS_FILE

# Datasets whose name fixes the number of classes (an image folder or a table: see its meta.json).
DATASET_CLASSES: dict[str, int] = {"cifar10": 10, "cifar100": 100}


def run_num_classes(run_dir: str | Path) -> int | None:
    """The number of classes a run folder was trained or probed on, for the chance level.

    Read from the newest checkpoint's meta.json (`num_classes`, written by the training loop),
    else from the dataset named in the folder's config.yaml (`data.dataset`) or, without a
    config.yaml, in the last row of its results.csv (`dataset`, a probe folder), when that name
    fixes it (DATASET_CLASSES). None when nothing says; never raises on unreadable files.
    """
    run_dir = Path(run_dir)
    for checkpoint in reversed(list_checkpoints(run_dir)):
        try:
            value = read_meta(checkpoint).get("num_classes")
        except (OSError, ValueError):
            continue  # a checkpoint being written or a damaged one: an older one may say
        if isinstance(value, int) and not isinstance(value, bool) and value >= 2:
            return value
    dataset: Any = None
    try:
        config = yaml.safe_load((run_dir / CONFIG_FILE).read_text())
        dataset = config["data"]["dataset"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        try:
            _, rows = read_csv_table(run_dir / RESULTS_FILE)
        except (OSError, ValueError, csv.Error):
            return None
        dataset = rows[-1].get("dataset") if rows else None
    return DATASET_CLASSES.get(dataset) if isinstance(dataset, str) else None
