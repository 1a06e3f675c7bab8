"""The training monitor: kNN accuracy of the backbone's features and the online classifier's test
accuracy, measured at epoch ends on the main process (what metrics.csv's knn_* / online_test_top1
columns hold)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from accelerate import Accelerator
from torch import Tensor, nn

from contrastkit.pipelines.config import PretrainConfig
from contrastkit.pipelines.evaluation.features import extract_features
from contrastkit.pipelines.evaluation.knn import knn_accuracy
from contrastkit.pipelines.training.run_data import RunData


def monitor_metrics(
    model: nn.Module,
    data: RunData,
    config: PretrainConfig,
    accelerator: Accelerator,
    transform: Callable[[Tensor], Tensor],
) -> dict[str, float]:
    """kNN top-1/top-5 (train.knn_every > 0) and the online classifier's test top-1
    (train.online_linear) on data.knn_test, in percent; main process only.

    model: the unwrapped model (`backbone`, and `classifier` with train.online_linear).
    """
    assert data.knn_train is not None and data.knn_test is not None
    backbone = model.backbone
    with accelerator.autocast():
        train_features = extract_features(backbone, data.knn_train.inputs, transform=transform)
        test_features = extract_features(backbone, data.knn_test.inputs, transform=transform)
    result: dict[str, float] = {}
    if config.train.knn_every > 0:
        # train.knn_k <= the bank was checked at start (run_data.check_knn_bank).
        accuracy = knn_accuracy(
            train_features.float(),
            data.knn_train.labels,
            test_features.float(),
            data.knn_test.labels,
            data.num_classes,
            k=config.train.knn_k,
            temperature=config.train.knn_temperature,
        )
        result["knn_top1"], result["knn_top5"] = accuracy["top1"], accuracy["top5"]
    if config.train.online_linear:
        with torch.no_grad():
            predicted = model.classifier(test_features.float()).argmax(dim=1)
        result["online_test_top1"] = (
            100.0 * (predicted == data.knn_test.labels).float().mean().item()
        )
    return result
