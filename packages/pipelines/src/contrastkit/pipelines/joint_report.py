"""What a joint run writes at every epoch end besides metrics.csv: history.csv, its pictures
(joint_curves.png, loss_terms.png), results.csv (one row: the run as of its latest evaluation)
and report.md with the model summary."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from contrastkit.backbones import model_summary
from contrastkit.pipelines.config import JointTrainingConfig, OptimizerConfig
from contrastkit.pipelines.config.sections import LR_REFERENCE_BATCH
from contrastkit.pipelines.evaluation.report import (
    ReportSection,
    model_summary_markdown,
    write_report,
)
from contrastkit.pipelines.evaluation.results import (
    append_results,
    results_table_markdown,
    write_history_csv,
)
from contrastkit.pipelines.joint_model import JointModel
from contrastkit.pipelines.optim import scaled_lr
from contrastkit.pipelines.run_files import (
    CURVES_FILE,
    HISTORY_FILE,
    JOINT_CURVES_FILE,
    LOSS_TERMS_FILE,
    REPORT_FILE,
    RESULTS_FILE,
)
from contrastkit.pipelines.training.task import EpochEnd

# What a new run removes first: nothing of an older run in its folder may pass for its own.
OUTPUT_FILES: tuple[str, ...] = (
    HISTORY_FILE,
    RESULTS_FILE,
    REPORT_FILE,
    JOINT_CURVES_FILE,
    LOSS_TERMS_FILE,
)

_ACCURACY = "top-1 accuracy (%)"
_CROSS_ENTROPY = "cross-entropy loss"
_TRAIN_LOSS = "train loss"


def _number(value: Any) -> float:
    """A history cell (a float, or a string read back from history.csv) as a float; nan if empty."""
    if value is None or value == "":
        return math.nan
    return float(value)


def _input_size(config: JointTrainingConfig) -> tuple[int, ...]:
    if config.data.dataset == "tabular":
        return (1, int(config.model.backbone_kwargs["in_features"]))
    size = int(config.data.image_size or 32)
    return (1, 3, size, size)


def summary_markdown(config: JointTrainingConfig, model: JointModel) -> str:
    """Layer tables of backbone + classifier and of the method's heads (zeros forward in eval mode:
    no RNG draw, no BatchNorm statistics touched)."""
    network = nn.Sequential(model.backbone, model.classifier)
    summary = model_summary(network, _input_size(config))
    summary.model_name = f"{config.model.backbone} + linear classifier"
    parts = [model_summary_markdown(summary)]
    method = model.method
    if method is not None:
        dim = method.embedding_dim
        heads = [("projection head", method.encoder.projection, method.num_features)]
        predictor = getattr(method, "predictor", None)
        if isinstance(predictor, nn.Module):
            heads.append(("predictor", predictor, dim))
        for name, head, width in heads:
            head_summary = model_summary(head, (2, width))
            head_summary.model_name = f"{config.method.name} {name}"
            parts.append(model_summary_markdown(head_summary))
    return "\n".join(parts)


def write_epoch_outputs(
    end: EpochEnd, history: Sequence[Mapping[str, Any]], summary: str, *, has_ssl: bool
) -> None:
    """history.csv, the pictures, results.csv (when this epoch was evaluated) and report.md.

    history: one record per epoch so far (epoch, train_loss, train_ce, [train_ssl], train_top1,
    val_loss, val_top1, val_top5 (None when not evaluated), lr, [knn_top1]). summary: the model
    summary's markdown. has_ssl: the run has a self-supervised term (ssl_weight > 0).
    """
    write_history_csv(history, end.run_dir / HISTORY_FILE)
    _draw(end, history, has_ssl)
    if history[-1]["val_top1"] is not None:
        _write_results(end, history[-1])
    _write_report(end, history, summary)


def _draw(end: EpochEnd, history: Sequence[Mapping[str, Any]], has_ssl: bool) -> None:
    from contrastkit.pipelines.plots import plot_compare  # matplotlib: main process only

    config: JointTrainingConfig = end.config  # type: ignore[assignment]
    what = "Supervised baseline" if config.joint.ssl_weight == 0 else "Joint training"
    classes = int(end.model.classifier.num_classes)  # type: ignore[union-attr]

    epochs = [_number(r["epoch"]) for r in history]
    train = [
        {"epoch": e, _ACCURACY: _number(r["train_top1"]), _CROSS_ENTROPY: _number(r["train_ce"])}
        for e, r in zip(epochs, history, strict=True)
    ]
    val = [
        {"epoch": e, _ACCURACY: _number(r["val_top1"]), _CROSS_ENTROPY: _number(r["val_loss"])}
        for e, r in zip(epochs, history, strict=True)
        if math.isfinite(_number(r["val_top1"]))
    ]
    if val:
        plot_compare(
            {"train (augmented views)": train, "validation (test split)": val},
            end.run_dir / JOINT_CURVES_FILE,
            metrics=(_ACCURACY, _CROSS_ENTROPY),
            title=f"{what}: train and validation per epoch",
            num_classes=classes if classes >= 2 else None,
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
                    for e, r in zip(epochs, history, strict=True)
                ]
                for label, key in terms.items()
            },
            end.run_dir / LOSS_TERMS_FILE,
            metrics=(_TRAIN_LOSS,),
            title="Joint training: the loss terms per epoch",
        )


def _write_results(end: EpochEnd, record: Mapping[str, Any]) -> None:
    config: JointTrainingConfig = end.config  # type: ignore[assignment]
    supervised = config.joint.ssl_weight == 0
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
            "ssl_weight": config.joint.ssl_weight,
            "top5": _number(record["val_top5"]),
            "val_loss": _number(record["val_loss"]),
            "train_top1": _number(record["train_top1"]),
        },
    )


def peak_lr_text(optimizer: OptimizerConfig, global_batch: int) -> str:
    """The learning rate as configured and as used at its peak (after warm-up), e.g.
    "lr 0.05 -> peak 0.1 (scaled by batch 512/256)", or "lr 0.05 (not scaled by the batch)".

    global_batch: samples per optimizer step over all processes and gradient-accumulation steps.
    """
    if not optimizer.scale_lr:
        return f"lr {optimizer.lr:g} (not scaled by the batch)"
    peak = scaled_lr(optimizer, global_batch)
    return (
        f"lr {optimizer.lr:g} -> peak {peak:g} "
        f"(scaled by batch {global_batch}/{LR_REFERENCE_BATCH})"
    )


def _setting_lines(end: EpochEnd, history: Sequence[Mapping[str, Any]]) -> list[str]:
    config: JointTrainingConfig = end.config  # type: ignore[assignment]
    joint = config.joint
    # As the training loop counts it: batch per process x processes x accumulated micro-batches.
    global_batch = config.train.batch_size * end.accelerator.num_processes * config.train.grad_accum
    lines = [
        f"- objective: cross-entropy of a linear classifier on the backbone's features of "
        f"views[0] + {joint.ssl_weight:g} x {config.method.name} loss"
        if joint.ssl_weight > 0
        else "- objective: cross-entropy only (joint.ssl_weight = 0: the supervised baseline)",
        f"- backbone: `{config.model.backbone}`; data: {config.data.dataset} "
        f"(augmentation `{config.data.augment}`, views[0] classified), "
        f"image size {config.data.image_size}",
        f"- epochs: {end.epoch} of {config.train.epochs}; batch {config.train.batch_size} "
        f"per process; optimizer {config.optimizer.name}, "
        f"{peak_lr_text(config.optimizer, global_batch)}; label smoothing "
        f"{joint.label_smoothing:g}",
    ]
    evaluated = [r for r in history if math.isfinite(_number(r["val_top1"]))]
    if evaluated:
        best = max(evaluated, key=lambda r: _number(r["val_top1"]))
        last = evaluated[-1]
        lines.append(
            f"- validation (test split) top-1: {_number(last['val_top1']):.2f}% after epoch "
            f"{int(_number(last['epoch']))}; best {_number(best['val_top1']):.2f}% "
            f"(epoch {int(_number(best['epoch']))})"
        )
    return lines


def _write_report(end: EpochEnd, history: Sequence[Mapping[str, Any]], summary: str) -> None:
    config: JointTrainingConfig = end.config  # type: ignore[assignment]
    sections = [
        ReportSection("Setting", "\n".join(_setting_lines(end, history))),
        ReportSection(
            "Curves",
            images=[
                (JOINT_CURVES_FILE, "Train and validation accuracy and cross-entropy per epoch"),
                (LOSS_TERMS_FILE, "The loss terms per epoch"),
                (CURVES_FILE, "Per logged step: loss and learning rate"),
            ],
        ),
        ReportSection(
            "Per-epoch history",
            "Train values are means over the epoch's augmented batches; validation is the "
            "test split, centre view, without label smoothing.\n\n"
            + results_table_markdown(end.run_dir / HISTORY_FILE, digits=4),
        ),
        ReportSection("Model", summary),
    ]
    title = (
        f"Joint training: {config.method.name} + cross-entropy, {config.model.backbone} "
        f"on {config.data.dataset}"
        if config.joint.ssl_weight > 0
        else f"Supervised baseline: {config.model.backbone} on {config.data.dataset}"
    )
    write_report(end.run_dir, title=title, sections=sections, written_by="contrastkit-joint")
