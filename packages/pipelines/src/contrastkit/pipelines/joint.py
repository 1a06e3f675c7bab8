"""Joint training: a backbone and a linear classifier learn together from
loss = CE(classifier(backbone(views[0])), labels) + joint.ssl_weight * (a pretrain method's loss).

`accelerate launch packages/pipelines/joint.py --config CONFIG.yaml` (or `contrastkit-joint`) runs
`main`; `run_joint(config)` is the same run from Python. The loop, checkpoints, exact resume,
signals and metrics.csv are the training engine's (`training.loop.run_training` with `JointTask`);
the model is `joint_model`'s, the per-epoch outputs `joint_report`'s.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

from contrastkit.backbones import LinearClassifier
from contrastkit.pipelines.config import JointTrainingConfig, PretrainConfig
from contrastkit.pipelines.data import InMemoryDataset
from contrastkit.pipelines.joint_model import JointModel, evaluate_classifier
from contrastkit.pipelines.joint_report import OUTPUT_FILES, summary_markdown, write_epoch_outputs
from contrastkit.pipelines.methods import build_method
from contrastkit.pipelines.metrics import read_metrics
from contrastkit.pipelines.run_files import CLASSIFIER_FILE, HISTORY_FILE
from contrastkit.pipelines.training.command import run_command
from contrastkit.pipelines.training.loop import run_training
from contrastkit.pipelines.training.task import EpochEnd, TrainingResult, TrainingTask

# metrics.csv of a joint run: `loss` is what is backpropagated (CE + ssl_weight * SSL), so the
# pretrain curves (plot_pretrain_curves) read it too; val_* on the rows of evaluated epochs.
JOINT_METRIC_COLUMNS: tuple[str, ...] = (
    "step",
    "epoch",
    "loss",
    "lr",
    "train_ce",
    "train_ssl",
    "train_top1",
    "nn_top1",
    "val_loss",
    "val_top1",
    "val_top5",
    "knn_top1",
    "knn_top5",
    "images_per_s",
    "elapsed_s",
)


class JointTask(TrainingTask):
    """Joint training for `run_training`: builds a JointModel, validates on the test split every
    `joint.eval_every` epochs (and after the last), writes history.csv, the pictures, results.csv,
    report.md, and classifier.pt in every checkpoint."""

    name = "joint"
    command = "contrastkit-joint"
    description = (
        "Joint training on accelerate: a backbone and a linear classifier learn from cross-entropy "
        "on the first view plus joint.ssl_weight x a self-supervised loss (SimCLR, N-pair, "
        "MoCo v2, BYOL, ISD); joint.ssl_weight=0 is the supervised baseline."
    )
    example = (
        "accelerate launch packages/pipelines/joint.py --config "
        "packages/pipelines/configs/joint_isd_myresnet_cifar10.yaml joint.ssl_weight=0.5"
    )
    config_class = JointTrainingConfig
    metric_columns = JOINT_METRIC_COLUMNS

    def __init__(self) -> None:
        self._history: list[dict[str, Any]] = []
        self._summary = ""
        self._record: dict[str, Any] = {}

    def progress_label(self, config: PretrainConfig) -> str:
        """The progress bar's label: "joint supervised" when joint.ssl_weight is 0 (no method
        is built or trained), else "joint <method>"."""
        if _joint_config(config).joint.ssl_weight == 0:
            return f"{self.name} supervised"
        return f"{self.name} {config.method.name}"

    # ------------------------------------------------------------ the model

    def build_model(
        self, config: PretrainConfig, backbone: nn.Module, num_classes: int
    ) -> nn.Module:
        config = _joint_config(config)
        joint = config.joint
        method = build_method(config, backbone) if joint.ssl_weight > 0 else None
        classifier = LinearClassifier(int(backbone.num_features), num_classes)
        model = JointModel(
            backbone,
            classifier,
            method,
            ssl_weight=joint.ssl_weight,
            label_smoothing=joint.label_smoothing,
        )
        self._summary = summary_markdown(config, model)
        return model

    def decay_exclusions(self, model: nn.Module) -> list[nn.Module]:
        return []  # the classifier is part of the supervised model: decayed like its weights

    def needs_test_split(self, config: PretrainConfig) -> bool:
        return True

    def checkpoint_files(self, model: nn.Module) -> dict[str, Any]:
        return {CLASSIFIER_FILE: model.classifier.state_dict()}

    def checkpoint_meta(self, config: PretrainConfig) -> dict[str, Any]:
        joint = _joint_config(config).joint
        return {"ssl_weight": joint.ssl_weight, "label_smoothing": joint.label_smoothing}

    # ------------------------------------------------------------ epochs

    def start(self, config: PretrainConfig, run_dir: Path, resumed_epoch: int | None) -> None:
        history = run_dir / HISTORY_FILE
        if resumed_epoch is None:
            self._history = []
            # A new run: nothing of an older run in this folder may pass for this one's.
            for name in OUTPUT_FILES:
                (run_dir / name).unlink(missing_ok=True)
        elif history.is_file():
            # Rows of epochs after the checkpoint are redone by this run (as metrics.csv's are).
            self._history = [
                dict(row) for row in read_metrics(history) if int(row["epoch"]) <= resumed_epoch
            ]

    def evaluate(self, end: EpochEnd) -> dict[str, Any]:
        config, means = end.config, end.train_means
        model: JointModel = end.model  # type: ignore[assignment]
        due = (
            end.epoch % _joint_config(config).joint.eval_every == 0
            or end.epoch == config.train.epochs
        )
        val: dict[str, float] = {}
        if due:
            if end.test is None:
                raise ValueError("joint training needs the test split to validate on")
            with end.accelerator.autocast():
                val = evaluate_classifier(
                    model.backbone,
                    model.classifier,
                    end.test,
                    end.transform,
                    batch_size=config.train.batch_size,
                )
        record: dict[str, Any] = {
            "epoch": end.epoch,
            "train_loss": means["loss"],
            "train_ce": means["train_ce"],
        }
        if model.method is not None:
            record["train_ssl"] = means["train_ssl"]
        record["train_top1"] = means["train_top1"]
        for key in ("val_loss", "val_top1", "val_top5"):
            record[key] = val.get(key)
        record["lr"] = end.lr
        self._record = record
        return val

    def epoch_done(self, end: EpochEnd, row: dict[str, Any]) -> None:
        record = self._record
        if end.config.train.knn_every > 0:
            record["knn_top1"] = row.get("knn_top1")
        self._history.append(record)
        has_ssl = end.model.method is not None  # type: ignore[union-attr]
        write_epoch_outputs(end, self._history, self._summary, has_ssl=has_ssl)


def _joint_config(config: PretrainConfig) -> JointTrainingConfig:
    """`config` as the JointTrainingConfig it must be (ValueError otherwise)."""
    if not isinstance(config, JointTrainingConfig):
        raise ValueError(
            f"joint training needs a JointTrainingConfig (the pretrain sections plus `joint:`), "
            f"got {type(config).__name__}"
        )
    return config


def run_joint(
    config: JointTrainingConfig,
    *,
    resume: str | Path | None = None,
    train_data: InMemoryDataset | None = None,
    test_data: InMemoryDataset | None = None,
) -> TrainingResult:
    """Run (or resume) joint training as `config` says, on every process of the launch.

    Arguments, errors and result as `run_pretrain`; `test_data` is the validation split (by
    default the dataset's test split, subset by data.knn_test_subset).
    """
    _joint_config(config)
    return run_training(
        config, JointTask(), resume=resume, train_data=train_data, test_data=test_data
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; exit status as `contrastkit-pretrain` (0 done, or stopped by a
    signal after a checkpoint; 1 non-finite loss; 2 bad input)."""
    return run_command(JointTask(), argv)


if __name__ == "__main__":
    sys.exit(main())
