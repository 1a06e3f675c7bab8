"""Training through the backbone: a linear head on features of freshly augmented views, with the
backbone frozen (the augmented linear probe) or trained too (fine-tuning), under accelerate.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from accelerate.utils import broadcast
from torch import Tensor, nn
from tqdm.auto import tqdm

from contrastkit.augment import make_views
from contrastkit.backbones import LinearClassifier
from contrastkit.pipelines.data import DeviceBatches, InMemoryDataset
from contrastkit.pipelines.evaluation.feature_cache import FEATURE_BATCH
from contrastkit.pipelines.evaluation.features import (
    extract_features,
    identity_transform,
    in_memory_format,
    view_size,
)
from contrastkit.pipelines.evaluation.knn import topk_accuracy
from contrastkit.pipelines.evaluation.linear_probe import init_classifier_, standardization

if TYPE_CHECKING:
    from accelerate import Accelerator


class StandardizedLinear(nn.Module):
    """Standardised features, then a linear layer: (N, D) float features -> (N, C) float32 logits.

    Fixed (default): (x - mean) / std with the train statistics of the pretrained features
    (`linear_probe.standardization`, as `train_linear_probe` does), so one learning rate suits
    every backbone. With `track_batches` (fine-tuning, where the features move as the backbone
    trains) the standardisation is a BatchNorm1d without affine parameters whose running
    statistics start at (mean, std^2): batch statistics in training, running ones in eval, as
    MAE's probe head.
    """

    def __init__(
        self, mean: Tensor, std: Tensor, num_classes: int, seed: int, *, track_batches: bool = False
    ) -> None:
        super().__init__()
        dim = mean.shape[0]
        self.norm: nn.BatchNorm1d | None = None
        if track_batches:
            self.norm = nn.BatchNorm1d(dim, affine=False, eps=1e-6)
            with torch.no_grad():
                self.norm.running_mean.copy_(mean.float())
                self.norm.running_var.copy_(std.float() ** 2)
        else:
            self.register_buffer("mean", mean.detach().float().clone())
            self.register_buffer("std", std.detach().float().clone())
        self.classifier = LinearClassifier(dim, num_classes)
        init_classifier_(self.classifier.linear, seed)

    def forward(self, features: Tensor) -> Tensor:
        features = features.float()
        if self.norm is not None:
            return self.classifier(self.norm(features))
        return self.classifier((features - self.mean) / self.std)


def shared_standardization(
    train_features: Tensor | None, dim: int, accelerator: Accelerator
) -> tuple[Tensor, Tensor]:
    """(D,) `standardization` of the main process's train features, on every process's device.

    Args:
        train_features: (N, D) features on the main process; None (unused) on the others.
        dim: D, which the other processes must know to receive the broadcast.
    """
    mean = torch.zeros(dim, device=accelerator.device)
    std = torch.ones(dim, device=accelerator.device)
    if accelerator.is_main_process:
        assert train_features is not None
        mean, std = (t.to(accelerator.device) for t in standardization(train_features))
    return broadcast(mean), broadcast(std)


class BackboneWithHead(nn.Module):
    """backbone, then head: inputs -> (N, D) features -> (N, C) logits (what fine-tuning trains)."""

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.backbone(x))


@dataclass
class ViewTrainingResult:
    """Outcome of `train_on_views`: the head (and backbone, trained in place when fine-tuning),
    per-epoch history (epoch, train_loss, val_loss, val_top1, val_top5, lr) and the final test top-1/top-5."""

    head: StandardizedLinear
    history: list[dict[str, float]]
    top1: float
    top5: float


def _sgd_with_cosine(
    backbone: nn.Module,
    head: nn.Module,
    *,
    finetune: bool,
    lr: float,
    backbone_lr_scale: float,
    weight_decay: float,
    total_steps: int,
) -> tuple[nn.Module, torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """The module to train, SGD (momentum 0.9) over it and a per-step cosine schedule to 0."""
    if finetune:
        model: nn.Module = BackboneWithHead(backbone, head)
        groups = [
            {"params": list(backbone.parameters()), "lr": lr * backbone_lr_scale},
            {"params": list(head.parameters()), "lr": lr},
        ]
    else:
        # Frozen: eval mode and no gradients, so neither weights nor BatchNorm statistics move.
        backbone.eval()
        backbone.requires_grad_(False)
        model = head
        groups = [{"params": list(head.parameters()), "lr": lr}]
    optimizer = torch.optim.SGD(groups, lr=lr, momentum=0.9, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps)),
    )
    return model, optimizer, scheduler


@torch.no_grad()
def _validate(
    backbone: nn.Module,
    head: nn.Module,
    test: InMemoryDataset,
    test_features: Tensor | None,
    eval_view: Callable[[Tensor], Tensor],
    accelerator: Accelerator,
) -> dict[str, float]:
    """Test loss / top-1 / top-5 of the head on the identity view (or on cached features)."""
    if test_features is None:
        with accelerator.autocast():
            test_features = extract_features(
                backbone, test.inputs, transform=eval_view, batch_size=FEATURE_BATCH
            )
    head.eval()
    logits = head(test_features.to(accelerator.device))
    labels = test.labels.to(logits.device)
    accuracy = topk_accuracy(logits, labels)
    return {
        "loss": F.cross_entropy(logits.float(), labels).item(),
        "top1": accuracy["top1"],
        "top5": accuracy["top5"],
    }


def train_on_views(
    backbone: nn.Module,
    head: StandardizedLinear,
    train: InMemoryDataset,
    test: InMemoryDataset,
    *,
    accelerator: Accelerator,
    finetune: bool,
    epochs: int,
    lr: float,
    batch_size: int,
    weight_decay: float,
    seed: int,
    view_dataset: str,
    backbone_lr_scale: float = 0.1,
    test_features: Tensor | None = None,
    channels_last: bool = False,
    progress: bool = True,
) -> ViewTrainingResult:
    """Train `head` on backbone features of augmented views, and the backbone too when `finetune`.

    Each step draws a fresh augmentation of the batch on the device (contrastkit.augment's
    `probe_views` recipe for images: crop with 4 px padding + flip; identity for tabular rows).
    Frozen (finetune=False): the backbone stays in eval mode under no_grad, so neither its weights
    nor its BatchNorm statistics move. Fine-tuning: the backbone trains at lr * backbone_lr_scale,
    the head at lr. SGD (momentum 0.9), per-step cosine LR to 0, batches from DeviceBatches sharded
    over the accelerate processes (per-process batch `batch_size`). After each epoch the main process
    evaluates on `test` with the identity view (or on `test_features` when frozen).

    Args:
        backbone, head: modules on the CPU or the accelerator's device.
        train, test: in-memory datasets (images uint8 (N, C, H, W) or tabular (N, F)).
        test_features: (Nt, D) features of `test`; used instead of a forward pass when frozen.
        channels_last: feed images in channels_last memory format (as the pretrain run did).
    """
    device = accelerator.device
    world, rank = accelerator.num_processes, accelerator.process_index
    batch_size = min(batch_size, len(train) // world)
    if batch_size < 1:
        raise ValueError(f"the train set has {len(train)} samples, too few for {world} processes")
    batches = DeviceBatches(
        train, batch_size, seed=seed, rank=rank, world_size=world, device=device
    )
    size = view_size(train)
    recipe = "probe_views" if train.kind == "image" else "identity_views"
    train_views = make_views(recipe, size, view_dataset, seed=seed * 1000 + rank)
    eval_view = identity_transform(view_dataset, size, channels_last)

    backbone.to(device, memory_format=torch.channels_last) if channels_last else backbone.to(device)
    head.to(device)
    model, optimizer, scheduler = _sgd_with_cosine(
        backbone, head, finetune=finetune, lr=lr, backbone_lr_scale=backbone_lr_scale,
        weight_decay=weight_decay, total_steps=epochs * batches.batches_per_epoch,
    )  # fmt: skip
    # The scheduler is not handed to accelerator.prepare: it would step once per process per step.
    model, optimizer = accelerator.prepare(model, optimizer)

    history: list[dict[str, float]] = []
    bar = tqdm(
        range(epochs),
        desc="fine-tune" if finetune else "linear probe (augmented)",
        disable=not progress,
    )
    for epoch in bar:
        model.train() if finetune else head.train()
        total = torch.zeros((), device=device)
        for inputs, labels in batches.epoch(epoch):
            view = in_memory_format(train_views(inputs)[0], channels_last)
            with accelerator.autocast():
                if finetune:
                    logits = model(view)
                else:
                    with torch.no_grad():
                        features = backbone(view)
                    logits = model(features.float())
                loss = F.cross_entropy(logits.float(), labels)
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            optimizer.step()
            scheduler.step()
            total += loss.detach()
        train_loss = accelerator.reduce(total, reduction="mean").item() / batches.batches_per_epoch
        if accelerator.is_main_process:
            unwrapped = accelerator.unwrap_model(model)
            val = _validate(
                backbone,
                unwrapped.head if finetune else unwrapped,
                test,
                None if finetune else test_features,
                eval_view,
                accelerator,
            )
            history.append(
                {
                    "epoch": epoch + 1,
                    "train_loss": train_loss,
                    "val_loss": val["loss"],
                    "val_top1": val["top1"],
                    "val_top5": val["top5"],
                    "lr": optimizer.param_groups[-1]["lr"],
                }
            )
            bar.set_postfix(loss=f"{train_loss:.3f}", val_top1=f"{val['top1']:.1f}")
    accelerator.wait_for_everyone()
    head = accelerator.unwrap_model(model).head if finetune else accelerator.unwrap_model(model)
    backbone.requires_grad_(True)
    final = history[-1] if history else {"val_top1": math.nan, "val_top5": math.nan}
    return ViewTrainingResult(
        head=head, history=history, top1=final["val_top1"], top5=final["val_top5"]
    )
