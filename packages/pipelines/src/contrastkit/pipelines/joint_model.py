"""The joint-training model: a backbone and a linear classifier trained on views[0] together with
a pretrain method on all views, and its validation pass (`evaluate_classifier`).

loss = CE(classifier(backbone(views[0])), labels) + ssl_weight * (the method's loss).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrastkit.pipelines.data import InMemoryDataset
from contrastkit.pipelines.evaluation.features import extract_features
from contrastkit.pipelines.evaluation.knn import topk_accuracy
from contrastkit.pipelines.methods import PretrainMethod


@dataclass
class JointStepOutput:
    """One forward of JointModel, on this process's batch.

    loss: float32 scalar to backpropagate, ce + ssl_weight * ssl (ce alone without a method).
    ce: the classifier's cross-entropy on views[0] (with label smoothing when configured).
    ssl: the method's loss, or None when ssl_weight is 0 (no method, no SSL forward).
    correct: fraction of the batch whose top logit is the label.
    method_metrics: the method's further logged scalars (MethodOutput.metrics), e.g. nn_top1.
    """

    loss: Tensor
    ce: Tensor
    ssl: Tensor | None
    correct: Tensor
    method_metrics: dict[str, Tensor] = field(default_factory=dict)

    def logged(self) -> dict[str, Tensor]:
        """metrics.csv column -> scalar; the loop averages them over logged steps and epochs."""
        values = {"loss": self.loss, "train_ce": self.ce}
        if self.ssl is not None:
            values["train_ssl"] = self.ssl
        values["train_top1"] = 100.0 * self.correct
        return values | self.method_metrics


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

    def after_backward(self, epoch: int) -> None:
        if self.method is not None:
            self.method.after_backward(epoch)

    def forward(
        self,
        views: list[Tensor],
        labels: Tensor,
        *,
        step: int,
        epoch: int = 0,
        generator: torch.Generator | None = None,
    ) -> JointStepOutput:
        """views: the augmented batch, a list of (N, C, H, W) or (N, F) float tensors (views[0]
        is classified); labels: (N,) int64 classes (also given to the method: SupCon reads them).
        step, epoch, generator: as for the method."""
        if not isinstance(views, list | tuple) or not views:
            raise ValueError(
                f"views must be a non-empty list of tensors, got {type(views).__name__}"
            )
        if labels.ndim != 1 or labels.shape[0] != views[0].shape[0]:
            raise ValueError(
                f"labels must have shape ({views[0].shape[0]},) (one per sample of views[0]), "
                f"got {tuple(labels.shape)}"
            )
        ssl, method_metrics = None, {}
        if self.method is not None:
            out = self.method(
                list(views), step=step, epoch=epoch, labels=labels, generator=generator
            )
            ssl, method_metrics = out.loss, out.metrics
        logits = self.classifier(self.backbone(views[0])).float()
        ce = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
        loss = ce if ssl is None else ce + self.ssl_weight * ssl
        correct = (logits.detach().argmax(dim=1) == labels).float().mean()
        return JointStepOutput(loss, ce, ssl, correct, method_metrics)


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
