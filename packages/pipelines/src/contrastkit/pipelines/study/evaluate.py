"""The cells.csv values of one finished (cell, seed): its config's method, i-Mix, backbone and
epochs, and its scores: the probe's kNN and linear top-1 for a pretrain cell, the final validation
top-1 (and last kNN monitor value) for a joint cell, which has no probe.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from contrastkit.pipelines.config import JointTrainingConfig, PretrainConfig
from contrastkit.pipelines.metrics import read_metrics
from contrastkit.pipelines.run_files import METRICS_FILE
from contrastkit.pipelines.study.report import PRETRAIN_DIR, PROBE_DIR
from contrastkit.pipelines.study.spec import Evaluation


def config_values(config: PretrainConfig) -> dict[str, Any]:
    """method, imix, backbone, epochs of a run's config (a joint run at ssl_weight 0 trains no
    method: "supervised", no i-Mix)."""
    method, imix = config.method.name, config.method.imix
    if isinstance(config, JointTrainingConfig) and config.joint.ssl_weight == 0:
        method, imix = "supervised", "none"
    return {
        "method": method,
        "imix": imix,
        "backbone": config.model.backbone,
        "epochs": config.train.epochs,
    }


def last_value(rows: Sequence[dict[str, str]], column: str) -> float | None:
    """The last non-empty value of `column` in metrics rows (None when it has none)."""
    values = [row[column] for row in rows if row.get(column)]
    return float(values[-1]) if values else None


def joint_values(run_dir: Path) -> dict[str, Any]:
    """A joint run's row values: its final validation top-1 (as linear_top1 and val_top1) and its
    last kNN monitor value; no probe."""
    rows = read_metrics(run_dir / METRICS_FILE)
    val_top1 = last_value(rows, "val_top1")
    if val_top1 is None:
        raise ValueError(
            f"{run_dir / METRICS_FILE}: no val_top1 row; the joint run did not validate"
        )
    return {
        "knn_top1": last_value(rows, "knn_top1"),
        "linear_top1": val_top1,
        "val_top1": val_top1,
        "probe": None,
        "label_fraction": None,
    }


def probe_values(
    evaluation: Evaluation, folder: Path, seed: int, *, pictures: bool
) -> dict[str, Any]:
    """Probe the finished pretraining in `folder`/pretrain into `folder`/probe as `evaluation`
    says (probe seed `seed`); the row values it gives. pictures: draw t-SNE and the NN grid.
    A kNN-only evaluation trains a one-epoch head that is not reported.
    """
    from contrastkit.pipelines.probe import run_probe
    from contrastkit.pipelines.probe_cli import build_parser

    argv = [
        "--checkpoint", str(folder / PRETRAIN_DIR), "--output-dir", str(folder / PROBE_DIR),
        "--seed", str(seed), "--label-fraction", str(evaluation.label_fraction),
        "--no-progress", *(["--finetune"] if evaluation.probe == "finetune" else []),
        *evaluation.probe_args,
    ]  # fmt: skip
    if not pictures:
        argv += ["--no-tsne", "--no-nn-grid"]
    if evaluation.probe == "knn":
        argv += ["--epochs", "1"]  # last wins: the head is not reported, keep it cheap
    outcome = run_probe(build_parser().parse_args(argv))
    if outcome is None:
        raise ValueError("the probe ran on a process other than the main one; run the study "
                         "in one process (python, not accelerate launch)")  # fmt: skip
    result = outcome.row
    return {
        "knn_top1": float(result["knn_top1"]),
        "linear_top1": None if evaluation.probe == "knn" else float(result["linear_top1"]),
        "val_top1": None,
        "probe": evaluation.probe,
        "label_fraction": evaluation.label_fraction,
    }
