"""The pretrain pipeline: self-supervised pretraining on the shared training loop.

`accelerate launch packages/pipelines/pretrain.py --config CONFIG.yaml` (or `contrastkit-pretrain`)
runs `main`; `run_pretrain(config)` is the same run from Python. `PretrainTask` says what is
trained (a method plus the optional online classifier); `training.loop.run_training` does the rest
(data, accelerate, checkpoints, exact resume, signals, metrics.csv, the kNN monitor).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch.nn.functional as F
from torch import Generator, Tensor, nn

from contrastkit.backbones import LinearClassifier
from contrastkit.pipelines.config import PretrainConfig
from contrastkit.pipelines.data import InMemoryDataset
from contrastkit.pipelines.methods import PretrainMethod, build_method
from contrastkit.pipelines.metrics import METRIC_COLUMNS
from contrastkit.pipelines.training.command import run_command
from contrastkit.pipelines.training.loop import run_training
from contrastkit.pipelines.training.task import TrainingResult, TrainingTask


@dataclass
class StepOutput:
    """One forward of PretrainModel: the loss to backpropagate and what the log needs."""

    loss: Tensor  # objective + online classifier cross-entropy
    ssl_loss: Tensor  # the method's objective alone (what metrics.csv logs as `loss`)
    online_correct: Tensor | None  # fraction of the batch the online classifier gets right
    method_metrics: dict[str, Tensor] = field(default_factory=dict)  # MethodOutput.metrics

    def logged(self) -> dict[str, Tensor]:
        """metrics.csv column -> scalar of this batch; the loop averages them over logged steps."""
        values = {"loss": self.ssl_loss}
        if self.online_correct is not None:
            values["online_top1"] = 100.0 * self.online_correct
        return values | self.method_metrics


class PretrainModel(nn.Module):
    """The module accelerate prepares (and DDP wraps): the method plus the online linear classifier.

    The classifier (solo-learn's "online linear evaluation") reads the method's detached backbone
    features, so its cross-entropy trains only itself; i-Mix rows get mixed soft labels.
    """

    def __init__(self, method: PretrainMethod, classifier: nn.Module | None) -> None:
        super().__init__()
        self.method = method
        self.classifier = classifier

    @property
    def backbone(self) -> nn.Module:
        """The student backbone: what `backbone.pt` saves."""
        return self.method.backbone

    def backbones(self) -> list[nn.Module]:
        """Every backbone the forward runs: what `model.compile` compiles."""
        return self.method.backbones()

    def on_optimizer_step(self, step: int, total_steps: int) -> None:
        self.method.on_optimizer_step(step, total_steps)

    def after_backward(self, epoch: int) -> None:
        self.method.after_backward(epoch)

    def forward(
        self,
        views: list[Tensor],
        labels: Tensor,
        *,
        step: int,
        epoch: int = 0,
        generator: Generator | None = None,
    ) -> StepOutput:
        """views: the augmented batch, a list of (N, C, H, W) or (N, F) float tensors; labels: (N,)
        int64 classes (read by the online classifier, and by a supervised method such as SupCon).
        step, epoch, generator: as for the method."""
        out = self.method(views, step=step, epoch=epoch, labels=labels, generator=generator)
        if self.classifier is None:
            return StepOutput(out.loss, out.loss, None, out.metrics)
        num_classes = self.classifier.num_classes
        one_hot = F.one_hot(labels, num_classes).float()
        if out.label_weights is None:
            soft = one_hot.repeat(out.features.shape[0] // labels.shape[0], 1)
        else:
            soft = out.label_weights.float() @ one_hot
        logits = self.classifier(out.features).float()
        online_loss = -(soft * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
        correct = (logits.argmax(dim=1) == soft.argmax(dim=1)).float().mean()
        return StepOutput(out.loss + online_loss, out.loss, correct, out.metrics)


class PretrainTask(TrainingTask):
    """Self-supervised pretraining for `run_training`: a PretrainModel (the configured method, plus
    the online linear classifier with train.online_linear), metrics.csv with METRIC_COLUMNS."""

    name = "pretrain"
    command = "contrastkit-pretrain"
    description = "Self-supervised pretraining (SimCLR, N-pair, MoCo v2, BYOL, ISD, with i-Mix) on accelerate."
    example = (
        "accelerate launch packages/pipelines/pretrain.py --config "
        "packages/pipelines/configs/simclr_cifar10.yaml optimizer.lr=0.3 data.train_subset=15000"
    )
    config_class = PretrainConfig
    metric_columns = METRIC_COLUMNS

    def build_model(
        self, config: PretrainConfig, backbone: nn.Module, num_classes: int
    ) -> nn.Module:
        method = build_method(config, backbone)
        classifier = (
            LinearClassifier(method.num_features, num_classes)
            if config.train.online_linear
            else None
        )
        return PretrainModel(method, classifier)

    def decay_exclusions(self, model: nn.Module) -> list[nn.Module]:
        # The online classifier is an evaluation probe, not part of what is learned.
        return [model.classifier] if model.classifier is not None else []


def run_pretrain(
    config: PretrainConfig,
    *,
    resume: str | Path | None = None,
    train_data: InMemoryDataset | None = None,
    test_data: InMemoryDataset | None = None,
) -> TrainingResult:
    """Run (or resume) self-supervised pretraining as `config` says, on every process of the launch.

    Arguments, errors and result as `training.loop.run_training`: resume None / "latest" / a
    checkpoint path; train_data, test_data in-memory splits instead of reading data.dataset
    (test_data feeds the kNN monitor).
    """
    return run_training(
        config, PretrainTask(), resume=resume, train_data=train_data, test_data=test_data
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point. Returns the exit status: 0 done, or stopped by a signal or the
    launcher's exit after saving a checkpoint; 1 non-finite loss; 2 bad input."""
    return run_command(PretrainTask(), argv)


if __name__ == "__main__":
    sys.exit(main())
