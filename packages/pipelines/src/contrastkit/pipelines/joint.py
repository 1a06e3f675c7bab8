"""Joint training: a backbone and a linear classifier learn together from
loss = CE(classifier(backbone(views[0])), labels) + joint.ssl_weight * (a pretrain method's loss).

`accelerate launch packages/pipelines/joint.py --config CONFIG.yaml` (or `contrastkit-joint`) runs
`main`; `run_joint(config)` is the same run from Python. The loop, checkpoints, exact resume,
signals and metrics.csv are the pretrain pipeline's (`pretrain.run_training` with `JointTask`).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrastkit.backbones import LinearClassifier, model_summary
from contrastkit.pipelines.config import JointTrainingConfig, PretrainConfig
from contrastkit.pipelines.data import InMemoryDataset
from contrastkit.pipelines.evaluation.features import extract_features
from contrastkit.pipelines.evaluation.knn import topk_accuracy
from contrastkit.pipelines.evaluation.report import (
    ReportSection,
    append_results,
    model_summary_markdown,
    results_table_markdown,
    write_history_csv,
    write_report,
)
from contrastkit.pipelines.methods import PretrainMethod, build_method
from contrastkit.pipelines.metrics import read_metrics
from contrastkit.pipelines.pretrain import (
    CURVES_FILE,
    EpochEnd,
    PretrainResult,
    TrainingTask,
    run_command,
    run_training,
)

HISTORY_FILE = "history.csv"
JOINT_CURVES_FILE = "joint_curves.png"
LOSS_TERMS_FILE = "loss_terms.png"
RESULTS_FILE = "results.csv"
REPORT_FILE = "report.md"
CLASSIFIER_FILE = "classifier.pt"

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
    "val_loss",
    "val_top1",
    "val_top5",
    "knn_top1",
    "knn_top5",
    "images_per_s",
    "elapsed_s",
)

_ACCURACY = "top-1 accuracy (%)"
_CROSS_ENTROPY = "cross-entropy loss"
_TRAIN_LOSS = "train loss"


@dataclass
class JointStepOutput:
    """One forward of JointModel, on this process's batch.

    loss: float32 scalar to backpropagate, ce + ssl_weight * ssl (ce alone without a method).
    ce: the classifier's cross-entropy on views[0] (with label smoothing when configured).
    ssl: the method's loss, or None when ssl_weight is 0 (no method, no SSL forward).
    correct: fraction of the batch whose top logit is the label.
    """

    loss: Tensor
    ce: Tensor
    ssl: Tensor | None
    correct: Tensor

    def logged(self) -> dict[str, Tensor]:
        """metrics.csv column -> scalar; the loop averages them over logged steps and epochs."""
        values = {"loss": self.loss, "train_ce": self.ce}
        if self.ssl is not None:
            values["train_ssl"] = self.ssl
        values["train_top1"] = 100.0 * self.correct
        return values


class JointModel(nn.Module):
    """Backbone + linear classifier trained on views[0], plus a pretrain method on all views.

    The classifier reads the backbone's features with gradient (unlike pretraining's online
    probe), so the cross-entropy trains the backbone. The method (when given) owns the same
    backbone as its student: for ISD views[0] is the weak view its teacher sees, for symmetric
    methods the first of the two views. Without a method (ssl_weight 0) it is plain supervised
    training and no SSL forward runs.
    """

    def __init__(
        self,
        backbone: nn.Module,
        classifier: nn.Module,
        method: PretrainMethod | None = None,
        *,
        ssl_weight: float = 1.0,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        if isinstance(ssl_weight, bool) or not isinstance(ssl_weight, int | float):
            raise ValueError(f"ssl_weight must be a number >= 0, got {ssl_weight!r}")
        if not ssl_weight >= 0:
            raise ValueError(f"ssl_weight must be >= 0, got {ssl_weight}")
        if (
            isinstance(label_smoothing, bool)
            or not isinstance(label_smoothing, int | float)
            or not 0.0 <= label_smoothing < 1.0
        ):
            raise ValueError(f"label_smoothing must be a number in [0, 1), got {label_smoothing!r}")
        if method is None and ssl_weight > 0:
            raise ValueError(
                f"ssl_weight={ssl_weight} weights a self-supervised loss, but no method was given; "
                "pass a PretrainMethod or ssl_weight=0"
            )
        if method is not None and method.backbone is not backbone:
            raise ValueError("method must be built around `backbone` (its student backbone)")
        num_features = getattr(backbone, "num_features", None)
        in_dim = getattr(classifier, "in_dim", num_features)
        if not isinstance(num_features, int) or in_dim != num_features:
            raise ValueError(
                f"the classifier takes {in_dim} features but the backbone gives {num_features!r} "
                "(backbone.num_features)"
            )
        self.method = method
        # Registered once: with a method the backbone lives inside it (method.encoder.backbone).
        self.standalone_backbone = backbone if method is None else None
        self.classifier = classifier
        self.ssl_weight = float(ssl_weight)
        self.label_smoothing = float(label_smoothing)

    @property
    def backbone(self) -> nn.Module:
        """The backbone the classifier reads (the method's student backbone when there is one)."""
        if self.method is not None:
            return self.method.backbone
        assert self.standalone_backbone is not None
        return self.standalone_backbone

    def backbones(self) -> list[nn.Module]:
        return self.method.backbones() if self.method is not None else [self.backbone]

    def on_optimizer_step(self, step: int, total_steps: int) -> None:
        if self.method is not None:
            self.method.on_optimizer_step(step, total_steps)

    def forward(
        self,
        views: list[Tensor],
        labels: Tensor,
        *,
        step: int,
        generator: torch.Generator | None = None,
    ) -> JointStepOutput:
        """views: the augmented batch, a list of (N, C, H, W) or (N, F) float tensors (views[0]
        is classified); labels: (N,) int64 classes. step, generator: as for the method."""
        if not isinstance(views, list | tuple) or not views:
            raise ValueError(
                f"views must be a non-empty list of tensors, got {type(views).__name__}"
            )
        if labels.ndim != 1 or labels.shape[0] != views[0].shape[0]:
            raise ValueError(
                f"labels must have shape ({views[0].shape[0]},) (one per sample of views[0]), "
                f"got {tuple(labels.shape)}"
            )
        ssl = None
        if self.method is not None:
            ssl = self.method(list(views), step=step, generator=generator).loss
        logits = self.classifier(self.backbone(views[0])).float()
        ce = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
        loss = ce if ssl is None else ce + self.ssl_weight * ssl
        correct = (logits.detach().argmax(dim=1) == labels).float().mean()
        return JointStepOutput(loss, ce, ssl, correct)


@torch.no_grad()
def evaluate_classifier(
    backbone: nn.Module,
    classifier: nn.Module,
    dataset: InMemoryDataset,
    transform: Any,
    *,
    batch_size: int = 512,
) -> dict[str, float]:
    """Cross-entropy and top-1/top-5 of backbone + classifier on a whole split (eval mode).

    dataset: inputs (uint8 images or float rows) and (N,) labels on the model's device;
    transform: input batch -> the normalized evaluation view. Returns {"val_loss": mean CE
    (no label smoothing), "val_top1": percent, "val_top5": percent}.
    """
    if len(dataset) == 0:
        raise ValueError("the validation split is empty")
    features = extract_features(
        backbone, dataset.inputs, transform=transform, batch_size=batch_size
    )
    was_training = classifier.training
    classifier.eval()
    logits = classifier(features.float()).float()
    classifier.train(was_training)
    labels = dataset.labels.to(logits.device)
    accuracy = topk_accuracy(logits, labels, (1, 5))
    return {
        "val_loss": F.cross_entropy(logits, labels).item(),
        "val_top1": accuracy["top1"],
        "val_top5": accuracy["top5"],
    }


def _number(value: Any) -> float:
    """A history cell (a float, or a string read back from history.csv) as a float; nan if empty."""
    if value is None or value == "":
        return math.nan
    return float(value)


def _input_size(config: PretrainConfig) -> tuple[int, ...]:
    if config.data.dataset == "tabular":
        return (1, int(config.model.backbone_kwargs["in_features"]))
    size = int(config.data.image_size or 32)
    return (1, 3, size, size)


def _summary_markdown(config: PretrainConfig, model: JointModel) -> str:
    """Layer tables of backbone + classifier and of the method's heads (zeros forward in eval mode:
    no RNG draw, no BatchNorm statistics touched)."""
    network = nn.Sequential(model.backbone, model.classifier)
    summary = model_summary(network, _input_size(config))
    summary.model_name = f"{config.model.backbone} + linear classifier"
    parts = [model_summary_markdown(summary)]
    method = model.method
    if method is not None:
        dim = config.model.projection_dim
        heads = [("projection head", method.encoder.projection, method.num_features)]
        predictor = getattr(method, "predictor", None)
        if isinstance(predictor, nn.Module):
            heads.append(("predictor", predictor, dim))
        for name, head, width in heads:
            head_summary = model_summary(head, (2, width))
            head_summary.model_name = f"{config.method.name} {name}"
            parts.append(model_summary_markdown(head_summary))
    return "\n".join(parts)


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

    # ------------------------------------------------------------ the model

    def build_model(
        self, config: PretrainConfig, backbone: nn.Module, num_classes: int
    ) -> nn.Module:
        joint = _joint_section(config)
        method = build_method(config, backbone) if joint.ssl_weight > 0 else None
        classifier = LinearClassifier(int(backbone.num_features), num_classes)
        model = JointModel(
            backbone,
            classifier,
            method,
            ssl_weight=joint.ssl_weight,
            label_smoothing=joint.label_smoothing,
        )
        self._summary = _summary_markdown(config, model)
        return model

    def decay_exclusions(self, model: nn.Module) -> list[nn.Module]:
        return []  # the classifier is part of the supervised model: decayed like its weights

    def needs_test_split(self, config: PretrainConfig) -> bool:
        return True

    def checkpoint_files(self, model: nn.Module) -> dict[str, Any]:
        return {CLASSIFIER_FILE: model.classifier.state_dict()}

    def checkpoint_meta(self, config: PretrainConfig) -> dict[str, Any]:
        joint = _joint_section(config)
        return {"ssl_weight": joint.ssl_weight, "label_smoothing": joint.label_smoothing}

    # ------------------------------------------------------------ epochs

    def start(self, config: PretrainConfig, run_dir: Path, resumed_epoch: int | None) -> None:
        history = run_dir / HISTORY_FILE
        if resumed_epoch is None:
            self._history = []
            # A new run: nothing of an older run in this folder may pass for this one's.
            for name in (
                HISTORY_FILE,
                RESULTS_FILE,
                REPORT_FILE,
                JOINT_CURVES_FILE,
                LOSS_TERMS_FILE,
            ):
                (run_dir / name).unlink(missing_ok=True)
        elif history.is_file():
            # Rows of epochs after the checkpoint are redone by this run (as metrics.csv's are).
            self._history = [
                dict(row) for row in read_metrics(history) if int(row["epoch"]) <= resumed_epoch
            ]

    def evaluate(self, end: EpochEnd) -> dict[str, Any]:
        config, means = end.config, end.train_means
        model: JointModel = end.model  # type: ignore[assignment]
        due = end.epoch % _joint_section(config).eval_every == 0 or end.epoch == config.train.epochs
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
        run_dir = end.run_dir
        write_history_csv(self._history, run_dir / HISTORY_FILE)
        self._draw(run_dir, end.model.method is not None)  # type: ignore[union-attr]
        if record["val_top1"] is not None:
            self._write_results(end, record)
        self._write_report(end)

    # ------------------------------------------------------------ outputs

    def _draw(self, run_dir: Path, has_ssl: bool) -> None:
        from contrastkit.pipelines.plots import plot_compare  # matplotlib: main process only

        epochs = [_number(r["epoch"]) for r in self._history]
        train = [
            {
                "epoch": e,
                _ACCURACY: _number(r["train_top1"]),
                _CROSS_ENTROPY: _number(r["train_ce"]),
            }
            for e, r in zip(epochs, self._history, strict=True)
        ]
        val = [
            {"epoch": e, _ACCURACY: _number(r["val_top1"]), _CROSS_ENTROPY: _number(r["val_loss"])}
            for e, r in zip(epochs, self._history, strict=True)
            if math.isfinite(_number(r["val_top1"]))
        ]
        if val:
            plot_compare(
                {"train (augmented views)": train, "validation (test split)": val},
                run_dir / JOINT_CURVES_FILE,
                metrics=(_ACCURACY, _CROSS_ENTROPY),
                title="Joint training: train and validation per epoch",
            )
        if has_ssl:
            terms = {
                "total = CE + ssl_weight x SSL": "train_loss",
                "cross-entropy (CE)": "train_ce",
                "SSL (unweighted)": "train_ssl",
            }
            plot_compare(
                {
                    label: [
                        {"epoch": e, _TRAIN_LOSS: _number(r[key])}
                        for e, r in zip(epochs, self._history, strict=True)
                    ]
                    for label, key in terms.items()
                },
                run_dir / LOSS_TERMS_FILE,
                metrics=(_TRAIN_LOSS,),
                title="Joint training: the loss terms per epoch",
            )

    def _write_results(self, end: EpochEnd, record: Mapping[str, Any]) -> None:
        config = end.config
        joint = _joint_section(config)
        supervised = joint.ssl_weight == 0
        results = end.run_dir / RESULTS_FILE
        results.unlink(missing_ok=True)  # one row: this run as of its latest evaluation
        append_results(
            results,
            {
                "method": "supervised" if supervised else config.method.name,
                "backbone": config.model.backbone,
                "epochs": end.epoch,
                "knn_top1": record.get("knn_top1"),
                "linear_top1": _number(record["val_top1"]),
                "wall_s": round(end.elapsed_s, 1),
                "run": end.run_dir.name,
                "dataset": config.data.dataset,
                "mode": "supervised" if supervised else "joint",
                "ssl_weight": joint.ssl_weight,
                "top5": _number(record["val_top5"]),
                "val_loss": _number(record["val_loss"]),
                "train_top1": _number(record["train_top1"]),
            },
        )

    def _write_report(self, end: EpochEnd) -> None:
        config, run_dir = end.config, end.run_dir
        joint = _joint_section(config)
        evaluated = [r for r in self._history if math.isfinite(_number(r["val_top1"]))]
        lines = [
            f"- objective: cross-entropy of a linear classifier on the backbone's features of "
            f"views[0] + {joint.ssl_weight:g} x {config.method.name} loss"
            if joint.ssl_weight > 0
            else "- objective: cross-entropy only (joint.ssl_weight = 0: the supervised baseline)",
            f"- backbone: `{config.model.backbone}`; data: {config.data.dataset} "
            f"(augmentation `{config.data.augment}`, views[0] classified), "
            f"image size {config.data.image_size}",
            f"- epochs: {end.epoch} of {config.train.epochs}; batch {config.train.batch_size} "
            f"per process; optimizer {config.optimizer.name}, lr {config.optimizer.lr:g} "
            f"(scaled: {str(config.optimizer.scale_lr).lower()}); label smoothing "
            f"{joint.label_smoothing:g}",
        ]
        if evaluated:
            best = max(evaluated, key=lambda r: _number(r["val_top1"]))
            last = evaluated[-1]
            lines.append(
                f"- validation (test split) top-1: {_number(last['val_top1']):.2f}% after epoch "
                f"{int(_number(last['epoch']))}; best {_number(best['val_top1']):.2f}% "
                f"(epoch {int(_number(best['epoch']))})"
            )
        sections = [
            ReportSection("Setting", "\n".join(lines)),
            ReportSection(
                "Curves",
                images=[
                    (
                        JOINT_CURVES_FILE,
                        "Train and validation accuracy and cross-entropy per epoch",
                    ),
                    (LOSS_TERMS_FILE, "The loss terms per epoch"),
                    (CURVES_FILE, "Per logged step: loss and learning rate"),
                ],
            ),
            ReportSection(
                "Per-epoch history",
                "Train values are means over the epoch's augmented batches; validation is the "
                "test split, centre view, without label smoothing.\n\n"
                + results_table_markdown(run_dir / HISTORY_FILE, digits=4),
            ),
            ReportSection("Model", self._summary),
        ]
        title = (
            f"Joint training: {config.method.name} + cross-entropy, {config.model.backbone} "
            f"on {config.data.dataset}"
            if joint.ssl_weight > 0
            else f"Supervised baseline: {config.model.backbone} on {config.data.dataset}"
        )
        write_report(run_dir, title=title, sections=sections)


def _joint_section(config: PretrainConfig) -> Any:
    if not isinstance(config, JointTrainingConfig):
        raise ValueError(
            f"joint training needs a JointTrainingConfig (the pretrain sections plus `joint:`), "
            f"got {type(config).__name__}"
        )
    return config.joint


def run_joint(
    config: JointTrainingConfig,
    *,
    resume: str | Path | None = None,
    train_data: InMemoryDataset | None = None,
    test_data: InMemoryDataset | None = None,
) -> PretrainResult:
    """Run (or resume) joint training as `config` says, on every process of the launch.

    Arguments, errors and result as `run_pretrain`; `test_data` is the validation split (by
    default the dataset's test split, subset by data.knn_test_subset).
    """
    _joint_section(config)
    return run_training(
        config, JointTask(), resume=resume, train_data=train_data, test_data=test_data
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; exit status as `contrastkit-pretrain` (0 done, 1 non-finite loss,
    2 bad input, 128 + signal number after SIGTERM/SIGINT)."""
    return run_command(JointTask(), argv)


if __name__ == "__main__":
    sys.exit(main())
